"""The first steps at 80x24 and 120x40: `r` with no backup chosen opens the browser on the
newest backup that will pass its checks (one more Enter chooses it), and no text box shows
the answer it asks for as its grey placeholder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from textual.widgets import Input

from preskool_dr.core.base.database import Snapshot
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.storage import checksum
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from tests.support.site import Site
from tests.support.tui import screen_text, sizes_fast_one, status, wait_for

SIZES = [(80, 24), (120, 40)]
GOOD = "preskool-backup-20260219_010000.sql.gz"


async def r_opens_the_browser(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await pilot.press("enter")  # incident declared now
        await wait_for(pilot, lambda: app.browser.table.row_count == 2, "two backups listed")
        # the browser opens on the newest good backup, not on the newest one
        await wait_for(pilot, lambda: app.browser.highlighted() is not None, "a row highlighted")
        assert app.browser.highlighted().name == GOOD  # type: ignore[union-attr]
        for step in ("app_offline", "identify"):
            app.browser.table.move_cursor(row=0)  # the operator looked at the newest
            app.checklist.focus()
            app.checklist.select(step)
            await pilot.pause()
            await pilot.press("r")
            await wait_for(pilot, lambda: app.focused is app.browser.table, f"r on {step}")
            record = app.browser.highlighted()
            assert record is not None and record.name == GOOD, step
            assert "No run yet" not in screen_text(pilot)
        await pilot.press("enter")  # one more Enter chooses it
        await wait_for(
            pilot,
            lambda: app.engine is not None and status(app, "identify") is StepStatus.DONE,
            "backup identified",
        )
        assert app.engine is not None and app.engine.state.backup is not None
        assert app.engine.state.backup.name == GOOD


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (120, 40)))
def test_r_with_no_backup_opens_the_browser_on_the_newest_good_one(
    site: Site, size: tuple[int, int]
) -> None:
    site.backup(at=datetime(2026, 2, 19, 1, 0, tzinfo=UTC), kind="weekly")
    newest = site.backup(at=datetime(2026, 2, 20, 2, 0, tzinfo=UTC))
    checksum.sidecar_path(newest).unlink()  # no md5: step 4 would refuse it
    asyncio.run(r_opens_the_browser(DrApp(site.config()), size))


async def no_answer_as_placeholder(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.browser.table.row_count == 1, "backup listed")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.engine is not None, "run started")
        target = app.target_db
        app.checklist_screen.commands.confirm_recreate(Snapshot(target, True, 1024, {"t": 1}))
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmNameScreen), "confirmation")
        await pilot.pause()
        box = app.screen.query_one(Input)
        assert box.value == ""
        assert box.placeholder and target not in box.placeholder
        (line,) = [ln for ln in screen_text(pilot).splitlines() if box.placeholder in ln]
        assert target not in line  # the box does not look filled in


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_placeholder_is_the_answer(site: Site, size: tuple[int, int]) -> None:
    site.backup()
    asyncio.run(no_answer_as_placeholder(DrApp(site.config()), size))
