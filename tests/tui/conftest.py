"""TUI fixtures: a site with a real backup, stand-in app commands and a health URL, plus
helpers to drive the app with Pilot and read what is on screen."""

from __future__ import annotations

import asyncio
import http.server
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.settings import Config
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from tests.conftest import REPO, Database

# Appends its second argument (and the target database the engine passes) to a file.
RECORD = (
    "import os, sys; open(sys.argv[1], 'a').write("
    "sys.argv[2] + ' ' + os.environ.get('PRESKOOL_DR_TARGET_DB', '?') + '\\n')"
)
# Sleeps until stopped: a step that is still running when the operator quits or hangs up.
SLOW = "import time; time.sleep(120)"
WAIT_SECONDS = 180.0  # an upper bound for a hung test, never a performance assertion


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stable snapshots: the Input cursor stays drawn."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


class HealthServer:
    """A tiny health URL: 200 `ok` on every GET."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/api/v1/health"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server = HealthServer()
    yield server
    server.stop()


@dataclass
class Site:
    """What a TUI test drives: the config, the database, the app commands' record file."""

    config: Config
    database: Database
    calls: Path  # one line per app command run: "<name> <target db>"
    runbook: Path
    tmp: Path

    def calls_made(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def backup(
        self, at: datetime | None = None, kind: str = "daily", *, upload: bool = False
    ) -> Path:
        """A real backup of the site's database: pg_dump, gzip, md5 sidecar, meta."""
        return run_backup(self.config, kind, upload=upload, at=at).path


def write_runbook(
    tmp: Path, calls: Path, health_url: str, *, stop: list[str] | None = None
) -> Path:
    """The repository's runbook with app.* pointed at stand-in commands."""
    data = yaml.safe_load((REPO / "runbook.yaml").read_text())
    data["app"] = {
        "stop": stop or [sys.executable, "-c", RECORD, str(calls), "stop"],
        "start": [sys.executable, "-c", RECORD, str(calls), "start"],
        "migrate": [sys.executable, "-c", RECORD, str(calls), "migrate"],
        "cwd": str(tmp),
        "health_url": health_url,
        "timeout_seconds": 120,
        "health_wait_seconds": 30,
    }
    path = tmp / "runbook.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def site(
    dr_env: dict[str, str],
    database: Database,
    tmp_path: Path,
    health_server: HealthServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    calls = tmp_path / "app-calls.txt"
    runbook = write_runbook(tmp_path, calls, health_server.url)
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    return Site(load_config(runbook), database, calls, runbook, tmp_path)


@pytest.fixture
def slow_site(site: Site, monkeypatch: pytest.MonkeyPatch, health_server: HealthServer) -> Site:
    """The same site, but app.stop (step 1) runs until it is stopped."""
    runbook = write_runbook(
        site.tmp, site.calls, health_server.url, stop=[sys.executable, "-c", SLOW]
    )
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    site.config = load_config(runbook)
    return site


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


def log_text(app: DrApp) -> str:
    """What the log panel (panel 4) holds, drawn or still waiting to be drawn."""
    panel = app.log_panel
    drawn = [strip.text for strip in panel.lines]
    return "\n".join([*drawn, *(line.plain for line in panel.waiting)])
