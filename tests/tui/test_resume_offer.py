"""The resume offer at start: it lists only runs of this mode (drill or restore), target
database and server, so a drill never resumes a production run nor the other way round;
a run of another mode cannot be resumed from the TUI by any path. Each run says how and
where it stopped, when, what is next and its aside copy; Esc quits with nothing changed;
a new run is asked twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from textual.worker import Worker, WorkerState

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.resume_run import NewRunScreen, ResumeRunScreen
from tests.support.site import Site
from tests.support.tui import screen_text, wait_for


def leftover_run(site: Site, *, drill: bool) -> str:
    """An unfinished run of that mode: started, then its process gone."""
    engine = Engine.start(site.config(), RunOptions(operator="night", drill=drill))
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
        await pilot.press("escape")  # the offer: quit; the incident time: now
        if app.return_code is None:
            await app.action_quit()
    return offered, text


@pytest.mark.parametrize("drill", [True, False], ids=["drill-after-restore", "restore-after-drill"])
def test_the_offer_never_crosses_modes(site: Site, drill: bool) -> None:
    """A leftover run of the other mode is not offered (the incident time is asked at once);
    one of this mode is, alone."""
    other = leftover_run(site, drill=not drill)
    offered, text = asyncio.run(offered_at_start(DrApp(site.config(), drill=drill), (80, 24)))
    assert offered == [] and other not in text

    same = leftover_run(site, drill=drill)
    offered, text = asyncio.run(offered_at_start(DrApp(site.config(), drill=drill), (80, 24)))
    assert offered == [same] and same in text and other not in text


def test_the_offer_lists_only_runs_of_this_target(site: Site) -> None:
    other = leftover_run(site, drill=False)
    app = DrApp(site.config(), target_db="another_db")
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
    app = DrApp(site.config(), drill=True)
    error = asyncio.run(resume_directly(app, production))
    assert "is a restore run and this is a drill: not resumed" in error
    assert app.engine is None
    (state,) = Journal(site.config().state_dir).unfinished()
    assert state.run_id == production and state.mode == "restore"


# ---------------------------------------------------------------- what the offer says

STOPPED = datetime(2026, 2, 20, 4, 51, 17, tzinfo=UTC)
ASIDE = "preskool_db_before_20260220_041233_a1b2"
DONE_TO_5 = ("app_offline", "identify", "download", "verify", "recreate_db")


def interrupted_in_the_load(site: Site) -> str:
    """A run interrupted in step 6 after step 5 moved production aside (as the journal of a
    hang-up mid-load reads), its last step at STOPPED."""
    engine = Engine.start(site.config(), RunOptions(operator="night"))
    state = engine.state
    for record in state.steps:
        if record.id in DONE_TO_5:
            record.status = StepStatus.DONE
            record.started_at = record.finished_at = STOPPED - timedelta(minutes=5)
    restore = state.step("restore")
    restore.status, restore.started_at = StepStatus.FAILED, STOPPED - timedelta(minutes=1)
    restore.detail, restore.finished_at = "interrupted by SIGHUP", STOPPED
    state.aside_db, state.aside_state, state.result = ASIDE, "renamed", "interrupted"
    engine.save()
    engine.close()
    return state.run_id


def fixed_clock() -> datetime:
    return STOPPED + timedelta(minutes=3)


async def read_the_offer(app: DrApp, size: tuple[int, int]) -> str:
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeRunScreen), "resume offer")
        await pilot.pause()
        text = screen_text(pilot)
        await pilot.press("escape")
    return text


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_the_offer_says_where_when_what_next_and_the_aside_copy(
    site: Site, size: tuple[int, int]
) -> None:
    run_id = interrupted_in_the_load(site)
    text = asyncio.run(read_the_offer(DrApp(site.config(), now=fixed_clock), size))
    flat = " ".join(text.split())  # a narrow dialog wraps the line
    assert run_id in flat
    assert "interrupted 3 min ago at 6 Restore (partial load); next: 6" in flat
    assert f"aside copy {ASIDE}" in flat
    assert "Esc quits" in flat


def test_a_run_whose_process_died_reads_stopped_not_running(site: Site) -> None:
    """The journal says "running" (the process was killed): its lock is free, so the offer
    says "stopped"; while a process holds the lock it says so."""
    run_id = leftover_run(site, drill=False)  # started, never ended: result "running"
    text = asyncio.run(read_the_offer(DrApp(site.config()), (80, 24)))
    flat = " ".join(text.split())
    assert f"run {run_id}" in flat and "stopped" in flat and "running now" not in flat

    (state,) = Journal(site.config().state_dir).unfinished()
    assert state.result == "running"
    holder = Engine.resume(site.config(), run_id)  # another process would hold it like this
    try:
        text = asyncio.run(read_the_offer(DrApp(site.config()), (80, 24)))
    finally:
        holder.close()
    assert "running now (its process holds the lock)" in " ".join(text.split())


async def esc_then_new_run(app: DrApp) -> list[str]:
    """Esc on the second question goes back to the offer; y on it asks the incident time."""
    seen: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeRunScreen), "resume offer")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), "second question")
        await pilot.pause()
        seen.append(" ".join(screen_text(pilot).split()))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeRunScreen), "back")
        seen.append("back to the offer")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), "asked again")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, IncidentTimeScreen), "new run")
        seen.append("incident time asked")
        await app.action_quit()
    return seen


def test_esc_quits_and_a_new_run_is_asked_twice(site: Site) -> None:
    run_id = interrupted_in_the_load(site)
    before = Journal(site.config().state_dir).load(run_id)
    app = DrApp(site.config(), now=fixed_clock)
    asyncio.run(read_the_offer(app, (80, 24)))  # ends with Esc
    assert app.return_code == 0
    assert Journal(site.config().state_dir).runs() == [before]  # nothing started or changed

    question, back, new = asyncio.run(esc_then_new_run(DrApp(site.config(), now=fixed_clock)))
    assert f"run {run_id}" in question and f"its aside copy {ASIDE} is kept" in question
    assert "y starts a new run" in question
    assert (back, new) == ("back to the offer", "incident time asked")
    assert Journal(site.config().state_dir).runs() == [before]
