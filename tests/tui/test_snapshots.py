"""Snapshots of the main screens with fixed content: a frozen clock, fixed backups and a
hand-written journal (resuming needs no database). Review a diff before --snapshot-update."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from textual.pilot import Pilot

from preskool_dr.core.base.database import Snapshot
from preskool_dr.core.base.events import LogLine, Progress, StepChanged, StepStatus
from preskool_dr.core.restore.journal import (
    BackupChoice,
    Journal,
    RunState,
    StepRecord,
    VerifyRecord,
)
from preskool_dr.core.storage import checksum
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.widgets.restore_panel import RestorePanel
from tests.support.tui import FIXED_NOW, STEP_TITLES, TABLES, Frozen

RUN_ID = "20260220-041233-a1b2"
MIB = 1024 * 1024


NAME = "preskool-backup-20260220_020000.sql.gz"
DETAILS = {
    "verify": f"OK {NAME}: MD5 10cbbf6bb952845c267cebb76f9378c4 matches the sidecar; "
    "Gzip integrity check passed",
    "download": f"already local: /var/backups/preskool/{NAME}",
}


def write_journal(site: Frozen, done: tuple[str, ...]) -> None:
    """A run at step `done[-1]`, each done step two minutes long, incident 42 min ago."""
    started = FIXED_NOW - timedelta(minutes=42, seconds=17)
    ids = ("app_offline", "identify", "download", "verify", "recreate_db", "restore")
    steps = []
    clock = started
    for number, (step_id, title) in enumerate(
        zip(
            (*ids, "migrate", "app_online", "health"),
            STEP_TITLES,
            strict=True,
        ),
        start=1,
    ):
        record = StepRecord(step_id, number, title)
        if step_id in done:
            record.status = StepStatus.DONE
            record.started_at, record.finished_at = clock, clock + timedelta(seconds=95)
            record.detail = DETAILS.get(step_id, "done")
            clock += timedelta(minutes=2)
        steps.append(record)
    name = "preskool-backup-20260220_020000.sql.gz"
    backup = BackupChoice(
        spec="latest",
        name=name,
        time=FIXED_NOW.replace(hour=2, minute=0, second=0),
        local_path=str(site.backup_dir / name),
        size=(site.backup_dir / name).stat().st_size,
        md5=checksum.read_sidecar(checksum.sidecar_path(site.backup_dir / name)).md5,
    )
    state = RunState(
        run_id=RUN_ID,
        mode="restore",
        operator="oncall",
        tool_host="dr-host",
        db_host="db1",
        db_port=5432,
        target_db="preskool_db",
        recreate_mode="aside",
        incident_declared_at=started,
        created_at=started,
        steps=steps,
        backup=backup,
        aside_db="preskool_db_before_20260220_041233_a1b2" if "recreate_db" in done else None,
        aside_state="renamed" if "recreate_db" in done else None,
        verify=VerifyRecord(backup.md5, backup.md5 or "", True, True) if "verify" in done else None,
        result="interrupted",
    )
    Journal(site.state_dir).save(state)


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
        app._confirm_recreate(Snapshot("preskool_db", True, 14 * MIB + 123_456, TABLES))
        await pilot.pause()
        await pilot.press(*"preskool", "enter")  # wrong: refused, says why

    assert snap_compare(frozen.app(), run_before=run_before, terminal_size=(80, 24))


def test_step_help(frozen: Frozen, snap_compare: Any) -> None:
    write_journal(frozen, DONE_TO_5)

    async def run_before(pilot: Pilot[Any]) -> None:
        await resume_offered_run(pilot)
        await pilot.press("question_mark")

    assert snap_compare(frozen.app(), run_before=run_before, terminal_size=(80, 24))
