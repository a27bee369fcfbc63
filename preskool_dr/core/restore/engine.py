"""The nine-step restore as a state machine: one engine for the headless CLI and the TUI.

Every step has a precondition (`blocked_reason`), an action, a check, and a status saved in
the journal before the screen hears about it. Safety rules that never bend:
- nothing destructive runs unless the typed confirmation equals the target database name;
- step 5 needs steps 2-4 *done* (not skipped): a backup that failed its checksum never
  reaches the database, and one that failed its gzip or content check never reaches the
  target (a headless run's load started early by step 3 or 4, steps/early_load.py, goes
  into the closed loading database and is dropped);
- by default step 5 renames the old database aside instead of dropping it, and the aside
  copy is only dropped on the operator's word after the health check passed;
- steps 5 and 6 use only the bytes step 4 verified, and a run is only resumed, rolled back
  or cleaned up on the server it ran against (the verify gate: core/restore/pinned.py).
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import Cancelled, DrError, UsageError
from preskool_dr.core.base.events import (
    EventSink,
    LogLine,
    Notice,
    StepChanged,
    StepStatus,
    ignore_events,
    utcnow,
)
from preskool_dr.core.base.procs import redact
from preskool_dr.core.base.settings import AppCommands, Config, DatabaseSettings
from preskool_dr.core.base.steps import STEP_ID_LIST, StepId
from preskool_dr.core.restore.journal import BackupChoice, Journal, RunState, StepRecord, new_run_id
from preskool_dr.core.restore.run_locks import RunLocks
from preskool_dr.core.restore.steps import ACTIONS, backup_checks, recreate_db
from preskool_dr.core.restore.steps.context import EarlyLoad, StepAction
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.checksum import VerifyResult

# Headless order: check the backup (2-4) before taking the app offline (1), so a bad
# backup costs no downtime. The checklist keeps the runbook's numbering.
HEADLESS_ORDER = (
    StepId.IDENTIFY,
    StepId.DOWNLOAD,
    StepId.VERIFY,
    StepId.APP_OFFLINE,
    StepId.RECREATE_DB,
    StepId.RESTORE,
    StepId.MIGRATE,
    StepId.APP_ONLINE,
    StepId.HEALTH,
)
BACKUP_CHECK_STEPS = (StepId.IDENTIFY, StepId.DOWNLOAD, StepId.VERIFY)
DESTRUCTIVE_STEPS = frozenset({StepId.RECREATE_DB})
SKIPPABLE_STEPS = frozenset({StepId.APP_OFFLINE, StepId.MIGRATE, StepId.APP_ONLINE, StepId.HEALTH})
# What each step needs settled before it runs (steps 5 and 6 also need 2-4 done)
NEEDS: dict[StepId, tuple[StepId, ...]] = {
    StepId.DOWNLOAD: (StepId.IDENTIFY,),
    StepId.VERIFY: (StepId.IDENTIFY, StepId.DOWNLOAD),
    StepId.RECREATE_DB: (StepId.APP_OFFLINE,),
    StepId.RESTORE: (StepId.RECREATE_DB,),
    StepId.MIGRATE: (StepId.RESTORE,),
    StepId.APP_ONLINE: (StepId.RESTORE, StepId.MIGRATE),
    StepId.HEALTH: (StepId.APP_ONLINE,),
}
OUTPUT_TAIL = 40


@dataclass(frozen=True)
class RunOptions:
    """What the operator decides when a run starts."""

    backup_spec: str | None = None  # None: chosen later (the TUI's backup browser)
    target_db: str | None = None  # default: DB_NAME, or drill.target_db in a drill
    operator: str = ""
    incident_declared_at: datetime | None = None  # default: now
    drill: bool = False
    recreate_mode: str = "aside"  # "aside" (rename the old database) or "drop" (the seed's way)


def default_operator() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def server_key(host: str, port: int) -> tuple[str, int]:
    """A server as --resume/--rollback/--drop-aside compare it. Only spellings that are
    clearly the same server compare equal: a host name's case and trailing dot, a socket
    folder's redundant slashes. `localhost`, `127.0.0.1` and `::1` stay different: they can
    reach different servers (localhost may resolve to ::1 where another cluster listens, a
    socket folder is yet another), and acting on the wrong one is worse than asking."""
    host = host.strip()
    if host.startswith("/"):
        return os.path.normpath(host), port
    return host.lower().rstrip("."), port


def same_server(db: DatabaseSettings, state: RunState) -> bool:
    """Whether DB_HOST/DB_PORT (or the runbook) point at the server `state`'s run ran on."""
    return server_key(db.host, db.port) == server_key(state.db_host, state.db_port)


def check_same_server(config: Config, state: RunState, action: str) -> None:
    """UsageError (exit 2) when today's DB_HOST/DB_PORT name another server than the run's:
    resuming, rolling back or dropping the aside copy there would act on a database this
    run never touched, maybe of the same name."""
    db = config.database
    if same_server(db, state):
        return
    raise UsageError(
        f"this run ({state.run_id}) restored {state.target_db} on "
        f"{state.db_host}:{state.db_port}; DB_HOST/DB_PORT now point at {db.host}:{db.port}: "
        f"set them back (DB_HOST={state.db_host} DB_PORT={state.db_port}, or the runbook's "
        f"database.host/port) to {action} this run; nothing was changed"
    )


def new_run_state(config: Config, options: RunOptions) -> RunState:
    """A new run's first journal record; UsageError for options that may not run."""
    if options.recreate_mode not in ("aside", "drop"):
        raise UsageError(f"recreate mode {options.recreate_mode!r}: use 'aside' or 'drop'")
    db = config.database
    target = options.target_db or (config.drill.target_db if options.drill else db.name)
    database.check_database_name(target)
    if options.drill and target == db.name:
        raise UsageError(
            f"a drill never restores into the production database {target!r} on "
            f"{db.host}:{db.port}: pass --target-db or set drill.target_db"
        )
    now = utcnow()
    return RunState(
        run_id=new_run_id(now),
        mode="drill" if options.drill else "restore",
        operator=options.operator or default_operator(),
        tool_host=socket.gethostname(),
        db_host=db.host,
        db_port=db.port,
        target_db=target,
        recreate_mode=options.recreate_mode,
        incident_declared_at=options.incident_declared_at or now,
        created_at=now,
        steps=[
            StepRecord(id=step_id, number=i, title=config.step(step_id).title)
            for i, step_id in enumerate(StepId, 1)
        ],
        pid=os.getpid(),
    )


def why_blocked(state: RunState, step_id: StepId) -> str | None:
    """Why step `step_id` may not run now, or None when it may: the state machine's gate."""
    record = state.step(step_id)
    if record.status is StepStatus.RUNNING:
        return "it is running"
    if record.status is StepStatus.DONE and step_id in (StepId.RECREATE_DB, StepId.RESTORE):
        return "it is done; start a new run to restore again"
    if state.finished:
        return f"the run is {state.result}"
    if step_id in (StepId.RECREATE_DB, StepId.RESTORE):
        # step 6 too: a step 4 run again after step 5 that failed stops the load
        for dep in map(state.step, BACKUP_CHECK_STEPS):
            if dep.status is not StepStatus.DONE:
                return f"step {dep.number} ({dep.title}) must pass first"
    for dep in map(state.step, NEEDS.get(step_id, ())):
        if not dep.settled:
            return f"step {dep.number} ({dep.title}) is not done yet"
    return None


def _known(step_id: str) -> StepId:
    """A front end's step id; a typo is a UsageError."""
    known = StepId.known(step_id)
    if known is None:
        raise UsageError(f"unknown step {step_id!r} (steps: {STEP_ID_LIST})")
    return known


class Engine:
    """Owns one run: its journal record, its locks, and when each step may run; the steps'
    actions are in core/restore/steps/. Its two locks (local and on the server) are held
    from the moment the run is opened until `close()`: core/restore/run_locks.py."""

    def __init__(
        self,
        config: Config,
        state: RunState,
        *,
        on_event: EventSink = ignore_events,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.on_event = on_event
        self.journal = journal or Journal(config.state_dir)
        self._locks = RunLocks(config, state)
        self._mutex = threading.Lock()  # one step at a time, whatever the front end does
        # step 3's checks made while downloading, by local path: step 4 of this process
        # uses them instead of reading the file again (backup_checks.verify)
        self.fetched: dict[str, VerifyResult] = {}
        # step 6's load, started in a headless run (`run_all`) by step 3 or 4
        # (core/restore/steps/early_load.py)
        self.loads_early = False
        self.early_load: EarlyLoad | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        config: Config,
        options: RunOptions,
        *,
        on_event: EventSink = ignore_events,
        found: BackupRecord | None = None,
    ) -> Engine:
        """Create a new run, take the target's lock and write the first journal record.
        `found`: the caller's lookup of `options.backup_spec`, made a moment before (step 2
        takes it instead of looking the backup up again)."""
        engine = cls(config, new_run_state(config, options), on_event=on_event)
        engine._locks.take()
        try:
            engine.save()
            if options.backup_spec:
                engine.choose_backup(options.backup_spec, found)
        except BaseException:
            engine.close()  # the caller gets no engine to close
            raise
        return engine

    @classmethod
    def resume(cls, config: Config, run_id: str, *, on_event: EventSink = ignore_events) -> Engine:
        """Reopen a run; a step that was running when its process died is redone."""
        journal = Journal(config.state_dir)
        state = journal.load(run_id)
        if state.finished:
            raise UsageError(f"run {run_id} already finished ({state.result}): nothing to resume")
        check_same_server(config, state, "resume")
        engine = cls(config, state, on_event=on_event, journal=journal)
        engine._locks.take()
        state.pid = os.getpid()
        for record in state.steps:
            if record.status is StepStatus.RUNNING:
                record.status = StepStatus.PENDING
                record.detail = (
                    "was running when the last process stopped; it is redone from its start"
                )
        state.result = "running"
        state.notes.append(f"{utcnow().isoformat(timespec='seconds')} resumed by pid {os.getpid()}")
        engine.save()
        return engine

    @classmethod
    def reopen(
        cls,
        config: Config,
        run_id: str,
        *,
        on_event: EventSink = ignore_events,
        action: str = "act on",
    ) -> Engine:
        """Open any run (also a finished one) for --rollback / --drop-aside, with its lock;
        `action` names what is done with it in a refusal (another server than the run's)."""
        journal = Journal(config.state_dir)
        state = journal.load(run_id)
        check_same_server(config, state, action)
        engine = cls(config, state, on_event=on_event, journal=journal)
        engine._locks.take()
        return engine

    def close(self) -> None:
        self._stop_early_load()
        self._locks.release()

    def _stop_early_load(self) -> None:
        """A load started early that step 6 did not take ends, and its database goes."""
        if self.early_load is not None:
            self.early_load.stop()
            self.early_load = None

    def save(self) -> None:
        self.journal.save(self.state)

    def ensure_server_lock(self) -> None:
        """Before the server is changed: its lock is held, or taken (back) now."""
        self._locks.ensure_server()

    # ------------------------------------------------------------ queries

    @property
    def drill(self) -> bool:
        return self.state.mode == "drill"

    @property
    def app(self) -> AppCommands:
        """The commands this run may use: a drill only ever uses drill.app."""
        return self.config.drill.app if self.drill else self.config.app

    def step(self, step_id: str) -> StepRecord:
        """The record of step `step_id`: a front end's typo is a UsageError, not a KeyError."""
        return self.state.step(_known(step_id))

    def blocked_reason(self, step_id: str) -> str | None:
        """Why `step_id` may not run now, or None when it may."""
        return why_blocked(self.state, _known(step_id))

    def next_step(self) -> StepId | None:
        """The first unsettled step in headless order (what `r` runs by default)."""
        for step_id in HEADLESS_ORDER:
            if not self.step(step_id).settled:
                return step_id
        return None

    def destruction_preview(self) -> database.Snapshot:
        """What step 5 would replace: shown in the confirmation before anything happens."""
        return database.snapshot(self.config.database, self.state.target_db)

    def production_state(self) -> str:
        """One honest sentence about where production is, for failures and summaries."""
        return recreate_db.production_state(self.state)

    # ------------------------------------------------------------ operator actions

    def set_incident_time(self, when: datetime) -> None:
        self.state.incident_declared_at = when
        self.save()

    def choose_backup(self, spec: str, found: BackupRecord | None = None) -> BackupChoice:
        """Step 2 with the operator's choice (the TUI's browser, or BACKUP on the CLI);
        `found`: its lookup, when the caller has just made it."""
        self._run(
            StepId.IDENTIFY,
            lambda run, record, cancel: backup_checks.identify(run, spec, found),
        )
        record = self.step(StepId.IDENTIFY)
        if record.status is not StepStatus.DONE or self.state.backup is None:
            raise DrError(record.detail)
        return self.state.backup

    def run_step(
        self,
        step_id: str,
        *,
        confirmation: str | None = None,
        cancel: threading.Event | None = None,
    ) -> StepRecord:
        """Run one step (also a retry of a failed one). Errors are recorded, not raised,
        except a wrong confirmation, which changes nothing and raises UsageError."""
        known = _known(step_id)
        if known in DESTRUCTIVE_STEPS:
            self.check_confirmation(confirmation)
        self._run(known, ACTIONS[known], cancel)
        return self.step(known)

    def check_confirmation(self, confirmation: str | None) -> None:
        if confirmation != self.state.target_db:
            typed = "nothing" if not confirmation else repr(confirmation)
            raise UsageError(
                f"confirmation {typed} does not match the target database "
                f"{self.state.target_db!r}: nothing was changed"
            )

    def skip_step(self, step_id: str, reason: str) -> StepRecord:
        record = self.step(step_id)
        if record.id not in SKIPPABLE_STEPS:
            raise UsageError(
                f"step {record.number} ({record.title}) cannot be skipped: it protects the data"
            )
        if not reason.strip():
            raise UsageError("a skip needs a reason; it goes into the journal and the drill log")
        if record.status in (StepStatus.RUNNING, StepStatus.DONE):
            raise UsageError(f"step {record.number} is {record.status.value}; it cannot be skipped")
        record.skip_reason = reason.strip()
        self._transition(record, StepStatus.SKIPPED, f"skipped: {reason.strip()}")
        self._maybe_finish()
        return record

    def run_all(self, confirmation: str | None, cancel: threading.Event | None = None) -> bool:
        """Headless: every unsettled step in order; stops at the first failure."""
        self.check_confirmation(confirmation)
        self.loads_early = True  # steps 3 and 4 may start step 6's load, which step 6 takes
        try:
            while (step_id := self.next_step()) is not None:
                if cancel is not None and cancel.is_set():
                    self._interrupted(None)
                    return False
                reason = self.blocked_reason(step_id)
                if reason:
                    self.on_event(Notice("error", f"cannot run {step_id}: {reason}", step_id))
                    return False
                record = self.run_step(step_id, confirmation=confirmation, cancel=cancel)
                if record.status is StepStatus.FAILED:
                    return False
            return self.state.result == "done"
        finally:
            self.loads_early = False
            self._stop_early_load()

    def rollback(self, confirmation: str | None) -> None:
        """Put the aside copy back as the target database (after a failed or bad restore)."""
        self.check_confirmation(confirmation)
        recreate_db.rollback(self)

    def drop_aside(self, confirmation: str | None) -> None:
        """Drop the aside copy once the operator is satisfied (needs its name typed)."""
        recreate_db.drop_aside(self, confirmation)

    # ------------------------------------------------------------ the machinery

    def _run(
        self, step_id: StepId, action: StepAction, cancel: threading.Event | None = None
    ) -> None:
        cancel = cancel or threading.Event()
        record = self.step(step_id)
        identify = step_id is StepId.IDENTIFY  # the operator may choose again until step 5
        with self._mutex:
            reason = None if identify else self.blocked_reason(step_id)
            if identify and record.status is StepStatus.RUNNING:
                reason = "it is running"
            if identify and self.step(StepId.RECREATE_DB).status is not StepStatus.PENDING:
                reason = "the database was already recreated from the chosen backup"
            if reason:
                raise UsageError(f"step {record.number} ({record.title}) cannot run: {reason}")
            record.started_at = utcnow()
            record.finished_at = None
            record.skip_reason = None
            record.output = []
            self._transition(record, StepStatus.RUNNING, "running")
            try:
                outcome = action(self, record, cancel)
            except Cancelled as exc:
                self._interrupted(record, str(exc))
            except DrError as exc:
                self._fail(record, str(exc))
            except Exception as exc:  # a bug or an unexpected library error: still recorded
                self._fail(record, f"unexpected error: {type(exc).__name__}: {redact(str(exc))}")
            else:
                if isinstance(outcome, StepStatus):  # a step that decided to skip itself
                    self._transition(record, outcome, record.detail)
                else:
                    self._transition(record, StepStatus.DONE, str(outcome or "done"))
                self._maybe_finish()

    def _transition(self, record: StepRecord, status: StepStatus, detail: str) -> None:
        record.status = status
        record.detail = detail
        if status is not StepStatus.RUNNING:
            record.finished_at = utcnow()
        self.save()  # the journal is never behind the screen
        self.on_event(StepChanged(record.id, record.number, record.title, status, detail))

    def _fail(self, record: StepRecord, message: str) -> None:
        self.state.result = "failed"
        self._transition(record, StepStatus.FAILED, message)
        self.on_event(Notice("error", f"{record.title} failed: {message}", record.id))
        self.on_event(Notice("warn", self.production_state(), record.id))

    def _interrupted(self, record: StepRecord | None, message: str = "interrupted") -> None:
        self.state.result = "interrupted"
        if record is not None:
            self._transition(
                record, StepStatus.FAILED, f"{message}; resume with --resume {self.state.run_id}"
            )
        else:
            self.save()

    def _maybe_finish(self) -> None:
        if all(r.settled for r in self.state.steps):
            self.state.result = "done"
            self.state.finished_at = utcnow()
            if self.state.app_accessible_at is None:
                self.state.app_accessible_at = self.state.finished_at
            self.save()
            if self.state.aside_state == "renamed":
                self.on_event(
                    Notice(
                        "info",
                        f"the old database is kept as {self.state.aside_db}; drop it when satisfied: "
                        f"preskool-dr restore --drop-aside {self.state.run_id} "
                        f"--confirm {self.state.aside_db}",
                    )
                )
        elif self.state.result in ("failed", "interrupted") and not any(
            r.status is StepStatus.FAILED for r in self.state.steps
        ):
            self.state.result = "running"
            self.save()

    def log(self, record: StepRecord, source: str) -> Callable[[str], None]:
        def emit(line: str) -> None:
            record.output.append(line)
            del record.output[:-OUTPUT_TAIL]
            self.on_event(LogLine(source, line, record.id))

        return emit
