"""The resume offer at start: it lists only runs of this mode (drill or restore), target
database and server, so a drill never resumes a production run nor the other way round;
a run of another mode cannot be resumed from the TUI by any path."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from textual.worker import Worker, WorkerState

from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.resume_run import ResumeRunScreen
from tests.tui.conftest import Site, screen_text, wait_for


def leftover_run(site: Site, *, drill: bool) -> str:
    """An unfinished run of that mode: started, then its process gone."""
    engine = Engine.start(site.config, RunOptions(operator="night", drill=drill))
    engine.close()
    return engine.state.run_id


async def offered_at_start(app: DrApp, size: tuple[int, int]) -> tuple[list[str], str]:
    """The run ids the app offers to resume (none: it asks the incident time at once)."""
    async with app.run_test(size=size) as pilot:
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, ResumeRunScreen | IncidentTimeScreen),
            "the first question",
        )
        await pilot.pause()
        text = screen_text(pilot)
        screen = app.screen
        offered = [s.run_id for s in screen.runs] if isinstance(screen, ResumeRunScreen) else []
        await pilot.press("escape")
        await app.action_quit()
    return offered, text


@pytest.mark.parametrize("drill", [True, False], ids=["drill-after-restore", "restore-after-drill"])
def test_the_offer_never_crosses_modes(site: Site, drill: bool) -> None:
    """A leftover run of the other mode is not offered (the incident time is asked at once);
    one of this mode is, alone."""
    other = leftover_run(site, drill=not drill)
    offered, text = asyncio.run(offered_at_start(DrApp(site.config, drill=drill), (80, 24)))
    assert offered == [] and other not in text

    same = leftover_run(site, drill=drill)
    offered, text = asyncio.run(offered_at_start(DrApp(site.config, drill=drill), (80, 24)))
    assert offered == [same] and same in text and other not in text


def test_the_offer_lists_only_runs_of_this_target(site: Site) -> None:
    other = leftover_run(site, drill=False)
    app = DrApp(site.config, target_db="another_db")
    offered, text = asyncio.run(offered_at_start(app, (80, 24)))
    assert offered == [] and other not in text


async def resume_directly(app: DrApp, run_id: str) -> str:
    """The resume worker called as the offer would (the offer does not list the run);
    returns what the worker failed with."""
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, IncidentTimeScreen), "no offer")
        worker = cast(Worker[object], app.resume_run(run_id))
        await wait_for(pilot, lambda: worker.state is WorkerState.ERROR, "the refusal")
        await app.action_quit()
    return str(worker.error)


def test_a_drill_refuses_to_resume_a_production_run_by_any_path(site: Site) -> None:
    production = leftover_run(site, drill=False)
    app = DrApp(site.config, drill=True)
    error = asyncio.run(resume_directly(app, production))
    assert "is a restore run and this is a drill: not resumed" in error
    assert app.engine is None
    (state,) = Journal(site.config.state_dir).unfinished()
    assert state.run_id == production and state.mode == "restore"
