"""Snapshots of the main screens with fixed content: a frozen clock, fixed backups and a
hand-written journal (resuming needs no database). Review a diff before --snapshot-update."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import ProgressBar

from preskool_dr.core.base.database import Snapshot
from preskool_dr.core.base.events import LogLine, Progress, StepChanged, StepStatus
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.widgets.restore_panel import RestorePanel
from preskool_dr.tui.widgets.run_header import RunHeader
from preskool_dr.tui.widgets.step_info import StepInfo
from tests.support.tui import (
    FIXED_NOW,
    RUN_ID,
    TABLES,
    Frozen,
    log_text,
    screen_text,
    write_journal,
)

MIB = 1024 * 1024


async def resume_offered_run(pilot: Pilot[Any]) -> DrApp:
    app = pilot.app
    assert isinstance(app, DrApp)
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    app.clear_notifications()
    await pilot.pause()
    return app


def restoring(progress: bool = True) -> Callable[[Pilot[Any]], Any]:
    """Resume a run that is at step 6, then show step 6 loading the backup."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = await resume_offered_run(pilot)
        assert app.engine is not None
        record = app.engine.step("restore")
        record.status, record.detail = StepStatus.RUNNING, "running"
        record.started_at = FIXED_NOW - timedelta(minutes=4, seconds=51)
        app.post_engine_event(StepChanged("restore", 6, "Restore", StepStatus.RUNNING, "running"))
        for line in ("SET", "CREATE TABLE", "ALTER TABLE", "COPY 1200", "COPY 48211"):
            app.post_engine_event(LogLine("psql", line, "restore"))
        if progress:
            app.post_engine_event(
                Progress(
                    "restore",
                    "load",
                    118 * MIB,
                    194 * MIB,
                    rate=0.38 * MIB,
                    current="attendance",
                    items_done=3,
                )
            )
        await pilot.pause()
        app.query_one(RestorePanel).settle()
        app.clear_notifications()
        await pilot.pause()

    return run_before


DONE_TO_5 = ("app_offline", "identify", "download", "verify", "recreate_db")


def test_start_asks_the_incident_time(frozen: Frozen, snap_compare: Any) -> None:
    assert snap_compare(frozen.app(), terminal_size=(80, 24))


def test_backup_browser(frozen: Frozen, snap_compare: Any) -> None:
    assert snap_compare(frozen.app(), press=["enter"], terminal_size=(80, 24))


def test_backup_browser_wide(frozen: Frozen, snap_compare: Any) -> None:
    assert snap_compare(frozen.app(), press=["enter"], terminal_size=(120, 40))


def test_drill_banner(frozen: Frozen, snap_compare: Any) -> None:
    assert snap_compare(frozen.app(drill=True), press=["enter"], terminal_size=(80, 24))


def test_resume_offer(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, ("identify", "download", "verify"))
    assert snap_compare(frozen.app(), terminal_size=(80, 24))


def test_restore_running(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, DONE_TO_5)
    assert snap_compare(frozen.app(), run_before=restoring(), terminal_size=(80, 24))


def test_restore_running_wide(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, DONE_TO_5)
    assert snap_compare(frozen.app(), run_before=restoring(), terminal_size=(120, 40))


def test_checksum_panel(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, ("identify", "download", "verify"))

    async def run_before(pilot: Pilot[Any]) -> None:
        await resume_offered_run(pilot)
        await pilot.press("2")

    assert snap_compare(frozen.app(), run_before=run_before, terminal_size=(80, 24))


def test_destructive_confirmation(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, ("app_offline", "identify", "download", "verify"))

    async def run_before(pilot: Pilot[Any]) -> None:
        app = await resume_offered_run(pilot)
        # what destruction_preview() reports for a live server, fixed for the picture
        app.checklist_screen.commands.confirm_recreate(
            Snapshot("preskool_db", True, 14 * MIB + 123_456, TABLES)
        )
        await pilot.pause()
        await pilot.press(*"preskool", "enter")  # wrong: refused, says why

    assert snap_compare(frozen.app(), run_before=run_before, terminal_size=(80, 24))


def test_step_help(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, DONE_TO_5)

    async def run_before(pilot: Pilot[Any]) -> None:
        await resume_offered_run(pilot)
        await pilot.press("question_mark")

    assert snap_compare(frozen.app(), run_before=run_before, terminal_size=(80, 24))


# ---------------------------------------------------------------- live lines (no pictures)
# The same fixed site, read as text at both sizes: lines that must neither wrap nor be cut.

SIZES = [(80, 24), (120, 40)]
DONE_TO_8 = (*DONE_TO_5, "restore", "migrate", "app_online")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_health_tries_and_the_stopped_clock(frozen: Frozen, size: tuple[int, int]) -> None:
    write_journal(frozen, DONE_TO_8)
    asyncio.run(drive_health(frozen.app(), size))


async def drive_health(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await resume_offered_run(pilot)
        assert app.engine is not None
        record = app.engine.step("health")
        record.status, record.detail = StepStatus.RUNNING, "running"
        app.post_engine_event(
            StepChanged("health", 9, "Health check", StepStatus.RUNNING, "running")
        )
        # 12 tries made, 18 s (and so 18 tries) left before it gives up
        app.post_engine_event(
            Progress("health", "health", 12, 30, rate=1.0, current="503", unit="tries")
        )
        await pilot.pause()
        text = screen_text(pilot)
        info = str(app.checklist_screen.query_one(StepInfo).render())
        assert "try 12/30 · 503 · gives up in 18 s" in info  # wrapped at 80 columns
        assert "gives up" in text
        # the log (read from the panel: its newest line may not be drawn after one pause)
        log = log_text(app)
        assert "Health check: running" in log and "running: running" not in log
        assert "restoring" not in text  # not drawn as a load in the restore panel
        # the check passed: the clock stops, on one line at 80 columns too
        record.status, record.detail = StepStatus.DONE, "answered 200 ok"
        app.engine.state.app_accessible_at = FIXED_NOW
        app.post_engine_event(
            StepChanged("health", 9, "Health check", StepStatus.DONE, "answered 200 ok")
        )
        await pilot.pause()
        text = screen_text(pilot)
        assert "gives up" not in text
        (rto,) = [line for line in text.splitlines() if "RTO 00:" in line]
        assert "✔ stopped" in rto


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_drill_header_keeps_the_run_id(frozen: Frozen, size: tuple[int, int]) -> None:
    asyncio.run(drive_drill_header(frozen.app(drill=True), size))


async def drive_drill_header(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        header = app.checklist_screen.query_one(RunHeader)
        header.show(drill=True, target="preskool_drill@db1.example.org:5432", run_id=RUN_ID)
        await pilot.pause()
        await pilot.pause()
        (top,) = screen_text(pilot).splitlines()[:1]
        assert f"run {RUN_ID}" in top and "[DRILL]" in top and "DRILL preskool_drill" in top
        if size[0] >= 120:
            assert top.strip().startswith("preskool-dr · DRILL")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_drill_confirmation_for_a_new_database(frozen: Frozen, size: tuple[int, int]) -> None:
    write_journal(frozen, ("app_offline", "identify", "download", "verify"))
    asyncio.run(drive_new_database_confirmation(frozen.app(), size))


async def drive_new_database_confirmation(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await resume_offered_run(pilot)
        app.checklist_screen.commands.confirm_recreate(Snapshot("preskool_db", False, 0, {}))
        await pilot.pause()
        text = screen_text(pilot)
        assert "nothing will be destroyed" in text
        assert "moved aside" not in text and "DROPPED" not in text


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_restore_panel_ends_truthfully(frozen: Frozen, size: tuple[int, int]) -> None:
    write_journal(frozen, DONE_TO_5)
    asyncio.run(drive_restore_end(frozen.app(), size))


async def drive_restore_end(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await restoring(progress=False)(pilot)
        panel = app.query_one(RestorePanel)
        # the parallel loader names the tables it loads at once
        for current in ("public.attendance, public.grades", "public.users", "indexes (1 of 3)"):
            app.post_engine_event(
                Progress("restore", "load", 100 * MIB, 194 * MIB, 1.0, current, items_done=2)
            )
            await pilot.pause()
            panel.settle()
            if current == "public.users":
                assert panel.loaded == ["attendance", "grades"]  # ticked as their load ends
                assert panel.current == {"users"}
        assert panel.loaded == ["attendance", "grades", "users"]
        app.post_engine_event(Progress("restore", "load", 194 * MIB, 194 * MIB, 0.0))
        assert app.engine is not None
        record = app.engine.step("restore")
        record.status, record.detail = StepStatus.DONE, "5 tables loaded"
        record.finished_at = record.started_at + timedelta(seconds=9.3)  # type: ignore[operator]
        app.post_engine_event(StepChanged("restore", 6, "Restore", StepStatus.DONE, "done"))
        await pilot.pause()
        text = screen_text(pilot)
        assert "restored 5 tables, 194 MiB in 9.3 s" in text
        assert "ETA" not in text and "tables done" not in text and "restoring" not in text
        assert panel.loaded == sorted(TABLES)  # every table ticked
        assert panel.query_one(ProgressBar).percentage == 1  # a full bar
