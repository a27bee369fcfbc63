"""The restore site every restore test drives: the test database, an app whose commands the
runbook runs (with a health URL), that runbook, and the test's environment.

Two apps: the stand-in app (`preskool_dr.demo.standin_app`: real stop/start/migrate commands
with fault options, a health URL that asks the database) and a recording app whose commands
only note their name and the target database (`stop t_1a2b`) behind an always-healthy URL:
what the TUI tests use, since its migrate adds no table to the restored database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.journal import Journal, RunState
from preskool_dr.demo import standin_app
from tests.support.child import Child
from tests.support.cli import cli_argv, run
from tests.support.db import Database
from tests.support.health import HealthServer
from tests.support.leaks import assert_no_secret_files, assert_no_secrets
from tests.support.runbook import write_runbook

STUDENTS_SUM = "SELECT md5(string_agg(s::text, '|' ORDER BY s.id)) FROM students s"
# The recording app's command: appends its name and the target database the engine passes.
RECORD = (
    "import os, sys; open(sys.argv[1], 'a').write("
    "sys.argv[2] + ' ' + os.environ.get('PRESKOOL_DR_TARGET_DB', '?') + '\\n')"
)
# Sleeps until stopped: a step that is still running when the operator quits or hangs up.
SLOW = "import time; time.sleep(120)"


def read_recorded(app_dir: Path) -> list[str]:
    """The recording app's calls: `<name> <target db>` per line."""
    calls = app_dir / "calls.log"
    return calls.read_text().splitlines() if calls.exists() else []


@dataclass
class Site:
    """A restore target: the test database, the app with its health URL, a runbook whose
    `app` section drives that app, and the environment of the `dr_env` fixture."""

    db: Database
    root: Path
    app_dir: Path
    runbook: Path
    app: dict[str, Any]  # the runbook's `app` section
    server: standin_app.StandinServer | None = None  # the stand-in app's health server
    read_calls: Callable[[Path], list[str]] = standin_app.read_calls
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def backup_dir(self) -> Path:
        return Path(os.environ["BACKUP_DIR"])

    @property
    def state_dir(self) -> Path:
        return Path(os.environ["PRESKOOL_DR_STATE_DIR"])

    def env(self, **over: str) -> dict[str, str]:
        return {**os.environ, **over}

    def set_app(self, **over: Any) -> None:
        """Rewrite runbook.yaml's `app` section (what a fixed runbook looks like)."""
        self.app = {**self.app, **over}
        write_runbook(self.root, app=self.app)

    def config(self) -> Config:
        """The runbook and environment as they are now (read again on every call)."""
        return load_config(self.runbook, env=os.environ)

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(cli_argv(*args, runbook=self.runbook), env or self.env())

    def start(self, *args: str, env: dict[str, str] | None = None) -> Child:
        child = Child(cli_argv(*args, runbook=self.runbook), env or self.env())
        self.cleanups.append(child.kill)
        return child

    def restore(self, spec: str = "latest", *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("restore", spec, "--confirm", self.db.name, *extra)

    def resume(self, run_id: str) -> subprocess.CompletedProcess[str]:
        return self.cli("restore", "--resume", run_id, "--confirm", self.db.name)

    def backup(
        self, at: datetime | None = None, kind: str = "daily", *, upload: bool = False
    ) -> Path:
        """A real backup of the site's database: pg_dump, gzip, md5 sidecar, meta."""
        return run_backup(self.config(), kind, upload=upload, at=at).path

    def checksum(self, dbname: str | None = None) -> str:
        with self.db.connect(dbname) as conn:
            row = conn.execute(STUDENTS_SUM).fetchone()
            assert row is not None
            return str(row[0])

    def change_data(self) -> None:
        """What happened after the backup: the restore must bring these rows back."""
        with self.db.connect() as conn:
            conn.execute("DELETE FROM payments WHERE id % 3 = 0")
            conn.execute("UPDATE students SET first_name = 'CHANGED' WHERE id % 5 = 0")

    def calls(self) -> list[str]:
        """The app commands run so far, oldest first."""
        return self.read_calls(self.app_dir)

    def the_run(self) -> RunState:
        (state,) = Journal(self.state_dir).runs()
        return state

    def loading_databases(self) -> list[str]:
        """The restore's loading databases (`<target>_loading_<run id>`) left on the server."""
        with self.db.connect("postgres") as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (self.db.name + "_loading_%",),
            ).fetchall()
        return [r[0] for r in rows]

    def assert_no_leak(self, *results: subprocess.CompletedProcess[str]) -> None:
        """No traceback, no secret in any output, journal, backup or app file."""
        texts = [t for r in results for t in (r.stdout, r.stderr)]
        for text in texts:
            assert "Traceback" not in text, text
        assert_no_secrets(*texts)
        for folder in (self.state_dir, self.backup_dir, self.app_dir):
            assert_no_secret_files(folder)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()


def standin_site(db: Database, root: Path, env: dict[str, str]) -> Site:
    """A site whose app is the stand-in app, serving its health URL from a child process."""
    app_dir = root / "app"
    server = standin_app.start_server(app_dir, env=env)
    app = {
        "stop": standin_app.command("stop", app_dir),
        "start": standin_app.command("start", app_dir),
        "migrate": standin_app.command("migrate", app_dir),
        "cwd": str(root),
        "health_url": server.health_url,
        "timeout_seconds": 60,
        "health_wait_seconds": 20,
    }
    runbook = write_runbook(root, app=app)
    return Site(db, root, app_dir, runbook, app, server=server, cleanups=[server.stop])


def recording_site(db: Database, root: Path) -> Site:
    """A site whose app commands only record their calls, behind an always-healthy URL."""
    health = HealthServer()
    app_dir = root / "app"
    app_dir.mkdir()
    calls = str(app_dir / "calls.log")
    app = {
        "stop": [sys.executable, "-c", RECORD, calls, "stop"],
        "start": [sys.executable, "-c", RECORD, calls, "start"],
        "migrate": [sys.executable, "-c", RECORD, calls, "migrate"],
        "cwd": str(root),
        "health_url": health.url,
        "timeout_seconds": 120,
        "health_wait_seconds": 30,
    }
    runbook = write_runbook(root, app=app)
    return Site(db, root, app_dir, runbook, app, read_calls=read_recorded, cleanups=[health.stop])
