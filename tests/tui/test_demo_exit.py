"""What the demo leaves in the shell when its TUI ends (80x24 and 120x40): what ran and that
the sandbox is gone, not the "Press Enter to open the TUI" prompt. The real command in tmux:
tests/test_demo.py."""

from __future__ import annotations

import asyncio

import pytest

from preskool_dr.cli.demo_cmd import goodbye
from preskool_dr.cli.tui_cmd import exit_summary
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from tests.support.site import Site
from tests.support.tui import sizes_fast_one, start_run, wait_for, wait_for_exit

SIZES = [(80, 24), (120, 40)]


async def quit_after(app: DrApp, size: tuple[int, int], *, start: bool) -> None:
    async with app.run_test(size=size) as pilot:
        if start:
            await start_run(pilot)
        else:
            await wait_for(pilot, lambda: isinstance(app.screen, IncidentTimeScreen), "prompt")
            await pilot.press("escape")  # the time shown; then quit before choosing a backup
        await pilot.press("q")
        await wait_for_exit(app)


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (120, 40)))
def test_the_demo_says_what_ran_and_that_the_sandbox_is_gone(
    site: Site, size: tuple[int, int]
) -> None:
    nothing = DrApp(site.config())  # quit before choosing a backup
    asyncio.run(quit_after(nothing, size, start=False))
    assert goodbye(exit_summary(nothing), removed=False) == [
        "preskool-dr: no run was started.",
        "  sandbox stopped, but not all of it could be removed: see the WARN lines",
    ]

    site.backup()  # then a run that stopped before its first step
    app = DrApp(site.config())
    asyncio.run(quit_after(app, size, start=True))
    assert app.engine is not None
    run_id = app.engine.state.run_id
    lines = goodbye(exit_summary(app), removed=True)
    assert lines == [
        f"preskool-dr: run {run_id} is unfinished: stopped before step 3 Download from S3",
        "  sandbox stopped and removed: its PostgreSQL, S3, app and backups are gone",
        "  the run's journal went with it: nothing to resume (demo --keep keeps a sandbox)",
    ]
