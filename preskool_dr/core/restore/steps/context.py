"""What a step action sees of its run: the Engine (core/restore/engine.py) as a protocol, so
the actions live apart from the state machine that runs them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import EventSink, StepChanged, StepStatus
from preskool_dr.core.base.settings import AppCommands, Config
from preskool_dr.core.restore.journal import BackupChoice, LoadRecord, RunState, StepRecord
from preskool_dr.core.restore.loaders.stream import StreamResult
from preskool_dr.core.restore.pinned import Pinned
from preskool_dr.core.storage.checksum import VerifyResult


class EarlyLoad(Protocol):
    """Step 6's load started before step 4 passed (early_load.py), as step 6 takes it."""

    closed_acl: list[str] | None  # what the loading database's ACL lost (step 6 restores it)

    @property
    def holds(self) -> Pinned | None:
        """The file it holds open, as it hashed it through its descriptor (None once it
        failed)."""

    def unusable_reason(self, choice: BackupChoice) -> str | None:
        """Why step 6 may not take it (None: it may): it failed already, it read another
        file than step 4 verified, or a companion step 4 did not accept."""

    def wait(self, cancel: threading.Event) -> tuple[StreamResult, LoadRecord]:
        """The load's result and loader once it ends (its error raised)."""

    def stop(self) -> None:
        """End it and drop its database."""

    def close(self) -> None:
        """Close its files (once step 6 took it)."""


class StepRun(Protocol):
    config: Config
    state: RunState  # the journal record: an action changes it, the engine saves it
    on_event: EventSink
    # step 3's findings from its download's one pass, by local path (this process only)
    fetched: dict[str, VerifyResult]
    # a headless run (Engine.run_all): steps 3 and 4 may start step 6's load (early_load.py)
    loads_early: bool
    # step 6's load, when steps 3 or 4 started it (step 6 takes it)
    early_load: EarlyLoad | None

    @property
    def drill(self) -> bool: ...

    @property
    def app(self) -> AppCommands:
        """The app commands this run may use (a drill only drill.app)."""

    def save(self) -> None:
        """Write the journal now (before something that cannot be undone)."""

    def step(self, step_id: str) -> StepRecord: ...

    def ensure_server_lock(self) -> None:
        """Hold the server's advisory lock on the target (taken back after a restart)
        before the server is changed; LockedError when another run holds it."""

    def log(self, record: StepRecord, source: str) -> Callable[[str], None]:
        """A line sink for a child's output: kept in the record's tail and shown."""


# A step's work: a one-line detail when it is done, or the status it settled on itself
# (SKIPPED, with record.detail saying why). A DrError fails the step; Cancelled
# interrupts it.
StepOutcome = str | StepStatus
StepAction = Callable[[StepRun, StepRecord, threading.Event], StepOutcome]


def local_backup(run: StepRun, downloading: tuple[Path, int] | None = None) -> Path | None:
    """The chosen backup's local path: the one step 3 is `downloading` into (with the bytes
    still to come), else the one steps 2-3 recorded; None when it is not local."""
    if downloading is not None:
        return downloading[0]
    choice = run.state.backup
    return Path(choice.local_path) if choice and choice.local_path else None


def chosen_backup(run: StepRun) -> BackupChoice:
    """Step 2's choice, which steps 3 to 6 work on."""
    if run.state.backup is None:
        raise DrError("no backup chosen yet: run step 2 (Identify backup) first")
    return run.state.backup


def due_again(run: StepRun, step_id: str, why: str) -> None:
    """Set an earlier step back to be run again (what it established no longer holds), and
    say so: the checklist shows it, and a resumed run redoes it first."""
    record = run.step(step_id)
    record.status, record.detail = StepStatus.PENDING, why
    run.on_event(StepChanged(record.id, record.number, record.title, record.status, why))
