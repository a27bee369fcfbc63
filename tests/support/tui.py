"""Driving the Textual app with Pilot: what is on screen, waiting for a state, and the
moves of a restore run (start, run a step, the typed confirmation)."""

from __future__ import annotations

import asyncio
import gzip
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.journal import (
    BackupChoice,
    Journal,
    RunState,
    StepRecord,
    VerifyRecord,
)
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.backup_names import parse_backup_name
from preskool_dr.core.storage.meta import BackupMeta, write_meta
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from tests.support.db import Database
from tests.support.runbook import REPO


def sizes_fast_one(
    sizes: list[tuple[int, int]], fast: tuple[int, int], *, named: bool = True
) -> list[Any]:
    """Terminal sizes as parameters: the fast tier (`make check`) runs the case at `fast`
    only, `make test` at every size. Ids are `80x24` (named) or pytest's own `size0`."""
    return [
        pytest.param(
            size,
            id=f"{size[0]}x{size[1]}" if named else f"size{i}",
            marks=() if size == fast else pytest.mark.slow,
        )
        for i, size in enumerate(sizes)
    ]


WAIT_SECONDS = 180.0  # an upper bound for a hung test, never a performance assertion
FIXED_NOW = datetime(2026, 2, 20, 4, 54, 17, tzinfo=UTC)
# the checklist's titles in runbook.yaml, in the runbook's order
STEP_TITLES = (
    "App offline",
    "Identify backup",
    "Download from S3",
    "Verify checksum",
    "Recreate database",
    "Restore",
    "Run migrations",
    "App online",
    "Health check",
)


def screen_text(pilot: Pilot[Any]) -> str:
    """The screen as plain text, modal layers included: what the operator reads."""
    app = pilot.app
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system=None,
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(
            full=True, screen_stack=app._background_screens, simplify=True
        )
    )
    return console.export_text(styles=False)


async def wait_for(pilot: Pilot[Any], condition: Callable[[], bool], what: str) -> None:
    """Let the app work until `condition` holds; fail with `what` (and the screen) if it never
    does. The bound only catches a hung test: nothing here measures speed."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}\n{screen_text(pilot)}")
        await pilot.pause(0.05)


async def wait_for_exit(app: Any) -> None:
    """After a quit or a hang-up: the app stops its step, records it, then exits."""
    deadline = time.monotonic() + WAIT_SECONDS
    while app.return_code is None:
        if time.monotonic() > deadline:
            raise AssertionError("the app never exited")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- driving a run


def status(app: DrApp, step_id: str) -> StepStatus:
    assert app.engine is not None
    return app.engine.step(step_id).status


async def start_run(pilot: Pilot[Any]) -> DrApp:
    """Accept the incident time (Enter = now), wait for the catalog, choose the top backup."""
    app = pilot.app
    assert isinstance(app, DrApp)
    await wait_for(pilot, lambda: isinstance(app.screen, IncidentTimeScreen), "incident prompt")
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.browser.table.row_count > 0, "backups listed")
    assert app.focused is app.browser.table
    await pilot.press("enter")
    await wait_for(
        pilot,
        lambda: app.engine is not None and status(app, "identify") is StepStatus.DONE,
        "backup identified",
    )
    # the run is open once the start's worker is done and its RunOpened has selected the
    # next step and focused the checklist; keys pressed before that go to the browser, or
    # `r` meets a busy engine (seen in CI: `home r` lost, the test waited for nothing)
    await wait_for(
        pilot,
        lambda: not app.engine_busy() and app.focused is app.checklist,
        "run opened",
    )
    return app


async def run_selected(pilot: Pilot[Any], step_id: str) -> None:
    """`r` on the step the checklist moved to by itself, then wait for it to settle."""
    app = pilot.app
    assert isinstance(app, DrApp)
    await wait_for(pilot, lambda: app.checklist.selected_id == step_id, f"{step_id} selected")
    await pilot.press("r")
    await wait_for(
        pilot,
        lambda: (
            status(app, step_id) in (StepStatus.DONE, StepStatus.FAILED) and not app.engine_busy()
        ),
        f"{step_id} settled",
    )
    assert status(app, step_id) is StepStatus.DONE, app.engine and app.engine.step(step_id).detail


async def confirm_recreate(pilot: Pilot[Any], database: Database) -> None:
    """The typed confirmation: empty and wrong names change nothing, Esc cancels, the name runs."""
    app = pilot.app
    assert isinstance(app, DrApp)
    target = database.name
    rows_before = database.row_counts()
    await wait_for(pilot, lambda: app.checklist.selected_id == "recreate_db", "step 5 selected")
    await pilot.press("r")
    await wait_for(  # pushed is not yet drawn: on a busy machine the first frame can lag
        pilot,
        lambda: isinstance(app.screen, ConfirmNameScreen) and target in screen_text(pilot),
        "confirmation",
    )
    text = screen_text(pilot)
    assert "moved aside" in text and "rows" in text
    await pilot.press("enter")  # nothing typed
    assert isinstance(app.screen, ConfirmNameScreen)
    assert "Nothing typed" in screen_text(pilot)
    await pilot.press(*"preskool_db", "enter")  # a plausible but wrong name
    await pilot.pause()
    assert isinstance(app.screen, ConfirmNameScreen)
    assert "nothing was changed" in screen_text(pilot)
    assert app.screen.query_one("#confirm-input", Input).value == ""  # a retry starts clean
    await pilot.press("escape")
    await pilot.pause()
    assert not isinstance(app.screen, ConfirmNameScreen)
    assert status(app, "recreate_db") is StepStatus.PENDING
    assert database.row_counts() == rows_before  # nothing was dropped or renamed
    await pilot.press("r")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmNameScreen), "confirmation again")
    await pilot.press(*target, "enter")
    await wait_for(
        pilot,
        lambda: status(app, "recreate_db") is StepStatus.DONE and not app.engine_busy(),
        "database recreated",
    )


# ---------------------------------------------------------------- a site only on disk

TABLES = {"attendance": 48211, "grades": 20400, "students": 1200, "invoices": 3600, "users": 90}


@dataclass
class Frozen:
    """A site that exists only on disk: db1:5432, three backups, maybe a journal."""

    backup_dir: Path
    state_dir: Path

    def app(self, **options: Any) -> DrApp:
        return DrApp(load_config(REPO / "runbook.yaml"), now=lambda: FIXED_NOW, **options)

    def env(self) -> dict[str, str]:
        """The environment the app reads this site from (db1 is never reached)."""
        return {
            "DB_HOST": "db1",
            "DB_PORT": "5432",
            "DB_NAME": "preskool_db",
            "BACKUP_DIR": str(self.backup_dir),
            "PRESKOOL_DR_STATE_DIR": str(self.state_dir),
        }


def frozen_site(folder: Path) -> Frozen:
    """Three fixed backups with sidecars and meta (byte-identical on every run)."""
    site = Frozen(folder / "backups", folder / "state")
    site.backup_dir.mkdir()
    for stamp, kind, rows in (
        ("20260218_020000", "daily", 1000),
        ("20260219_010000", "weekly", 1100),
        ("20260220_020000", "daily", 1200),
    ):
        name = f"preskool-backup-{stamp}.sql.gz"
        data = gzip.compress(b"-- PostgreSQL database dump\n" * rows, mtime=0)
        path = site.backup_dir / name
        path.write_bytes(data)
        md5 = checksum.md5_hasher()
        md5.update(data)
        checksum.write_sidecar(path, md5.hexdigest())
        created = parse_backup_name(name)
        assert created is not None
        write_meta(
            path,
            BackupMeta(name, kind, created, "preskool_db", len(data), md5.hexdigest(), TABLES),
        )
    return site


# ---------------------------------------------------------------- a run only on disk

RUN_ID = "20260220-041233-a1b2"


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


def log_text(app: DrApp) -> str:
    """What the log panel (panel 4) holds, drawn or still waiting to be drawn."""
    panel = app.log_panel
    drawn = [strip.text for strip in panel.lines]
    return "\n".join([*drawn, *(line.plain for line in panel.waiting)])
