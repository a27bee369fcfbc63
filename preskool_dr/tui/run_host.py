"""What the checklist screen asks of the App that holds the run (tui/app.py's DrApp): the
run's settings and state, and the workers that do the engine's work. Each worker answers
later, with a report message posted to the screen (tui/messages.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from textual.notifications import SeverityLevel

from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.request import PitrRequest
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.restore.engine import Engine
from preskool_dr.core.storage.catalog import BackupRecord


class RunHost(Protocol):
    config: Config
    now: Callable[[], datetime]
    engine: Engine | None
    incident_at: datetime | None  # declared before the run exists
    cancel: threading.Event  # set to stop the running step
    backup_spec: str | None
    operator: str
    drill: bool
    sign_key: Path | None
    drill_log: Path | None
    server_python: str

    @property
    def target_db(self) -> str: ...

    def engine_busy(self) -> bool: ...

    def running_step(self) -> str | None: ...

    def target_label(self) -> str: ...

    def freeze_heap_soon(self) -> None: ...

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
        source: str = "",
    ) -> None: ...

    def show_waiting_toasts(self) -> None: ...

    async def action_quit(self) -> None: ...

    # The workers: each returns at once; its report comes as a message.
    def start_run(self, spec: str) -> object: ...

    def resume_run(self, run_id: str) -> object: ...

    def choose_backup(self, spec: str) -> object: ...

    def run_engine_step(self, step_id: str, confirmation: str | None = None) -> object: ...

    def drop_aside_copy(self, name: str) -> object: ...

    def rollback_run(self, name: str) -> object: ...

    def preview_destruction(self) -> object: ...

    def load_backups(self) -> object: ...

    def request_glacier_restore(self, record: BackupRecord) -> object: ...

    def start_pitr(self, request: PitrRequest) -> PitrRun: ...
