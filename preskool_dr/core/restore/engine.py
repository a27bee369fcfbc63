"""The nine-step restore as a state machine: one engine for the headless CLI and the TUI.

Every step has a precondition (`blocked_reason`), an action, a check, and a status saved in
the journal before the screen hears about it. Safety rules that never bend:
- nothing destructive runs unless the typed confirmation equals the target database name;
- step 5 needs steps 2-4 *done* (not skipped): a backup that failed its checksum or gzip
  check never reaches the database;
- by default step 5 renames the old database aside instead of dropping it, and the aside
  copy is only dropped on the operator's word after the health check passed;
- steps 5 and 6 use only the bytes step 4 verified, and a run is only resumed, rolled back
  or cleaned up on the server it ran against (the verify gate: core/restore/pinned.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import humanize
import psycopg

from preskool_dr.core.base import database
from preskool_dr.core.base.config import AppCommands, Config, DatabaseSettings
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
from preskool_dr.core.base.lock import ServerLock, TargetLock, lock_path
from preskool_dr.core.base.procs import redact
from preskool_dr.core.base.steps import STEP_ID_LIST, StepId
from preskool_dr.core.restore import pinned, restore_test
from preskool_dr.core.restore.appctl import check_health, run_app_command
from preskool_dr.core.restore.journal import (
    BackupChoice,
    Journal,
    RunState,
    StepRecord,
    VerifyRecord,
    new_run_id,
)
from preskool_dr.core.restore.loaders import parallel as parallel_restore
from preskool_dr.core.restore.loaders import pg_restore
from preskool_dr.core.restore.loaders.stream import StreamResult, stream_restore
from preskool_dr.core.storage import catalog, checksum

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


def aside_name(target: str, run_id: str) -> str:
    """`<target>_before_<run id>` trimmed to PostgreSQL's 63-byte identifier limit."""
    return _run_db_name(target, run_id, "before")


def loading_name(target: str, run_id: str) -> str:
    """`<target>_loading_<run id>`: where step 6 loads, under a name no application uses."""
    return _run_db_name(target, run_id, "loading")


def _run_db_name(target: str, run_id: str, tag: str) -> str:
    suffix = f"_{tag}_" + run_id.replace("-", "_")
    room = database.MAX_IDENTIFIER_BYTES - len(suffix.encode())
    head = target.encode()[:room].decode("utf-8", "ignore")
    return head + suffix


class Engine:
    """Owns one run: its journal record, its locks, and the steps' actions.

    Locks: the local flock (state folder) and the server's advisory lock on the target's
    name (core/base/lock.py), both held from the moment the run is opened until `close()`: a
    second restore of the same database is refused before it runs anything (whatever host
    spelling, user or machine), and `backup` of the target is refused while the old
    database is replaced and the new one loaded. The server's lock is taken at open when
    the server answers, and checked again (taken, or taken back after a server restart)
    before step 1 stops the app, before steps 5 and 6, and before a rollback or drop."""

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
        self._lock = TargetLock(
            lock_path(config.state_dir, state.db_host, state.db_port, state.target_db),
            run_id=state.run_id,
            operator=state.operator,
        )
        self._server_lock = ServerLock(
            config.database, state.target_db, run_id=state.run_id, operator=state.operator
        )
        self._mutex = threading.Lock()  # one step at a time, whatever the front end does

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls, config: Config, options: RunOptions, *, on_event: EventSink = ignore_events
    ) -> Engine:
        """Create a new run, take the target's lock and write the first journal record."""
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
        run_id = new_run_id(now)
        state = RunState(
            run_id=run_id,
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
        engine = cls(config, state, on_event=on_event)
        engine._take_locks()
        try:
            engine.save()
            if options.backup_spec:
                engine.choose_backup(options.backup_spec)
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
        engine._take_locks()
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
        engine._take_locks()
        return engine

    def _take_locks(self) -> None:
        """The local flock, then the server's lock; a server that does not answer now is
        only needed (and its lock then required) by the steps that change it."""
        self._lock.acquire()
        try:
            self._server_lock.try_acquire()
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        self._server_lock.release()
        self._lock.release()

    def save(self) -> None:
        self.journal.save(self.state)

    # ------------------------------------------------------------ queries

    @property
    def drill(self) -> bool:
        return self.state.mode == "drill"

    @property
    def app(self) -> AppCommands:
        """The commands this run may use: a drill only ever uses drill.app."""
        return self.config.drill.app if self.drill else self.config.app

    def step(self, step_id: str) -> StepRecord:
        if StepId.known(step_id) is None:  # a front end's typo is a usage error, not a KeyError
            raise UsageError(f"unknown step {step_id!r} (steps: {STEP_ID_LIST})")
        return self.state.step(step_id)

    def blocked_reason(self, step_id: str) -> str | None:
        """Why `step_id` may not run now, or None when it may."""
        record = self.step(step_id)
        if record.status is StepStatus.RUNNING:
            return "it is running"
        if record.status is StepStatus.DONE and step_id in (StepId.RECREATE_DB, StepId.RESTORE):
            return "it is done; start a new run to restore again"
        if self.state.finished:
            return f"the run is {self.state.result}"
        need: tuple[StepId, ...] = ()
        if step_id == StepId.DOWNLOAD:
            need = (StepId.IDENTIFY,)
        elif step_id == StepId.VERIFY:
            need = (StepId.IDENTIFY, StepId.DOWNLOAD)
        elif step_id in (StepId.RECREATE_DB, StepId.RESTORE):
            # step 6 too: a step 4 run again after step 5 that failed stops the load
            for dep in BACKUP_CHECK_STEPS:
                if self.step(dep).status is not StepStatus.DONE:
                    return f"step {self.step(dep).number} ({self.step(dep).title}) must pass first"
            need = (StepId.APP_OFFLINE,) if step_id == StepId.RECREATE_DB else (StepId.RECREATE_DB,)
        elif step_id == StepId.MIGRATE:
            need = (StepId.RESTORE,)
        elif step_id == StepId.APP_ONLINE:
            need = (StepId.RESTORE, StepId.MIGRATE)
        elif step_id == StepId.HEALTH:
            need = (StepId.APP_ONLINE,)
        for dep in need:
            dep_record = self.step(dep)
            if not dep_record.settled:
                return f"step {dep_record.number} ({dep_record.title}) is not done yet"
        return None

    def next_step(self) -> str | None:
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
        s = self.state
        recreate = self.step(StepId.RECREATE_DB)
        if recreate.status is StepStatus.PENDING and s.aside_state is None:
            return f"production database {s.target_db} has not been touched"
        if s.aside_state == "rolled-back":
            return f"production database {s.target_db} was rolled back to its state before this run"
        if s.aside_db and s.aside_state == "renamed":
            return (
                f"the old database is kept as {s.aside_db}; {s.target_db} holds this run's restore "
                f"(roll back: preskool-dr restore --rollback {s.run_id} --confirm {s.target_db})"
            )
        if s.recreate_mode == "drop" and recreate.status is not StepStatus.PENDING:
            return (
                f"the old {s.target_db} was dropped (drop mode); only the backup can bring it back"
            )
        return f"production database {s.target_db} has not been touched"

    # ------------------------------------------------------------ operator actions

    def set_incident_time(self, when: datetime) -> None:
        self.state.incident_declared_at = when
        self.save()

    def choose_backup(self, spec: str) -> BackupChoice:
        """Step 2 with the operator's choice (the TUI's browser, or BACKUP on the CLI)."""
        self._run(StepId.IDENTIFY, lambda record, cancel: self._identify(spec))
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
        if StepId.known(step_id) is None:
            raise UsageError(f"unknown step {step_id!r} (steps: {STEP_ID_LIST})")
        if step_id in DESTRUCTIVE_STEPS:
            self.check_confirmation(confirmation)
        actions: dict[str, Callable[[StepRecord, threading.Event], str | StepStatus | None]] = {
            StepId.APP_OFFLINE: lambda r, c: self._app_command("stop", r, c),
            StepId.IDENTIFY: lambda r, c: self._identify(self._pending_spec()),
            StepId.DOWNLOAD: self._download,
            StepId.VERIFY: self._verify,
            StepId.RECREATE_DB: self._recreate,
            StepId.RESTORE: self._restore,
            StepId.MIGRATE: lambda r, c: self._app_command("migrate", r, c),
            StepId.APP_ONLINE: lambda r, c: self._app_command("start", r, c),
            StepId.HEALTH: self._health,
        }
        self._run(step_id, actions[step_id], cancel)
        return self.step(step_id)

    def check_confirmation(self, confirmation: str | None) -> None:
        if confirmation != self.state.target_db:
            typed = "nothing" if not confirmation else repr(confirmation)
            raise UsageError(
                f"confirmation {typed} does not match the target database "
                f"{self.state.target_db!r}: nothing was changed"
            )

    def skip_step(self, step_id: str, reason: str) -> StepRecord:
        record = self.step(step_id)
        if step_id not in SKIPPABLE_STEPS:
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

    def rollback(self, confirmation: str | None) -> None:
        """Put the aside copy back as the target database (after a failed or bad restore)."""
        self.check_confirmation(confirmation)
        s = self.state
        if s.aside_state != "renamed" or not s.aside_db:
            raise UsageError(
                f"run {s.run_id} has no aside copy to roll back to ({self.production_state()})"
            )
        self._server_lock.ensure()
        with database.connect(self.config.database, admin=True) as conn:
            if not database.database_exists(conn, s.aside_db):
                raise DrError(
                    f"the aside copy {s.aside_db} no longer exists: nothing to roll back to"
                )
            # the target, and a half load step 6 left under its loading name
            for name in (s.target_db, loading_name(s.target_db, s.run_id)):
                if database.database_exists(conn, name):
                    database.block_and_terminate(conn, name)
                    database.drop_database(conn, name)
            database.rename_database(conn, s.aside_db, s.target_db)
            database.allow_connections(conn, s.target_db)
        s.aside_state = "rolled-back"
        s.result = "rolled-back"
        s.finished_at = utcnow()
        s.notes.append(f"{utcnow().isoformat(timespec='seconds')} rolled back to {s.aside_db}")
        self.save()
        self.on_event(
            Notice("ok", f"rolled back: {s.target_db} is the database from before run {s.run_id}")
        )

    def drop_aside(self, confirmation: str | None) -> None:
        """Drop the aside copy once the operator is satisfied (needs its name typed)."""
        s = self.state
        if s.aside_state != "renamed" or not s.aside_db:
            raise UsageError(f"run {s.run_id} has no aside copy to drop")
        if self.step(StepId.HEALTH).status is not StepStatus.DONE:
            raise UsageError("the aside copy is kept until the health check (step 9) has passed")
        if confirmation != s.aside_db:
            raise UsageError(
                f"type the aside copy's name {s.aside_db!r} to drop it: nothing was changed"
            )
        self._server_lock.ensure()
        with database.connect(self.config.database, admin=True) as conn:
            database.drop_database(conn, s.aside_db)
        s.aside_state = "dropped"
        self.save()
        self.on_event(Notice("ok", f"dropped the aside copy {s.aside_db}"))

    # ------------------------------------------------------------ the machinery

    def _run(
        self,
        step_id: str,
        action: Callable[[StepRecord, threading.Event], object],
        cancel: threading.Event | None = None,
    ) -> None:
        cancel = cancel or threading.Event()
        record = self.step(step_id)
        with self._mutex:
            reason = None if step_id == StepId.IDENTIFY else self.blocked_reason(step_id)
            if step_id == StepId.IDENTIFY and record.status is StepStatus.RUNNING:
                reason = "it is running"
            if (
                step_id == StepId.IDENTIFY
                and self.step(StepId.RECREATE_DB).status is not StepStatus.PENDING
            ):
                reason = "the database was already recreated from the chosen backup"
            if reason:
                raise UsageError(f"step {record.number} ({record.title}) cannot run: {reason}")
            record.started_at = utcnow()
            record.finished_at = None
            record.skip_reason = None
            record.output = []
            self._transition(record, StepStatus.RUNNING, "running")
            try:
                outcome = action(record, cancel)
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

    def _log(self, record: StepRecord, source: str) -> Callable[[str], None]:
        def emit(line: str) -> None:
            record.output.append(line)
            del record.output[:-OUTPUT_TAIL]
            self.on_event(LogLine(source, line, record.id))

        return emit

    # ------------------------------------------------------------ step actions

    def _pending_spec(self) -> str:
        return self.state.backup.spec if self.state.backup else "latest"

    def _identify(self, spec: str) -> str:
        record = catalog.resolve_backup(self.config, spec)
        local_path = str(record.local_path) if record.local_path else None
        choice = BackupChoice(
            spec=spec,
            name=record.name,
            time=record.time,
            local_path=local_path,
            s3_url=record.s3_url,
            size=record.size,
            # its identity: the full location, never the base name (another folder's file of
            # the same name is another backup)
            location=os.path.abspath(local_path) if local_path else record.s3_url,
        )
        before = self.state.backup
        if before is None or before.location != choice.location or local_path is None:
            # Another backup, or one only in S3 (chosen again, the bucket may hold other
            # bytes by now): whatever was downloaded or verified before no longer counts.
            for step_id in (StepId.DOWNLOAD, StepId.VERIFY):
                dep = self.step(step_id)
                if dep.status is not StepStatus.PENDING:
                    dep.status, dep.detail = StepStatus.PENDING, "backup changed: redo"
            self.state.verify = None
        if before is not None and before.downloaded and before.local_path == choice.local_path:
            choice = dataclasses.replace(choice, downloaded=True)  # still our S3 download
        self.state.backup = choice
        rpo = self.state.rpo_seconds or 0.0
        where = " + ".join(record.locations) or "?"
        size = humanize.naturalsize(record.size, binary=True) if record.size else "size unknown"
        return (
            f"{record.name} ({record.kind}, {size}, {where}); RPO "
            f"{humanize.precisedelta(rpo, minimum_unit='minutes', format='%0.0f')}"
        )

    def _backup_choice(self) -> BackupChoice:
        if self.state.backup is None:
            raise DrError("no backup chosen yet: run step 2 (Identify backup) first")
        return self.state.backup

    def _download(self, record: StepRecord, cancel: threading.Event) -> str:
        choice = self._backup_choice()
        if choice.local_path and Path(choice.local_path).exists():
            return f"already local: {choice.local_path}"
        if choice.s3_url is None:
            # Resolving the spec again ("latest") could pick another backup than step 2 chose.
            raise DrError(
                f"{choice.name}, chosen in step 2, is no longer at {choice.local_path} and has "
                "no S3 copy: put it back, or choose another backup in step 2"
            )
        backup = catalog.resolve_backup(self.config, choice.s3_url)
        path = catalog.fetch_backup(
            self.config,
            backup,
            on_event=self.on_event,
            step_id=record.id,
            cancel=cancel,
            with_companion=self.config.restore.method != "serial",
        )
        self.state.backup = dataclasses.replace(choice, local_path=str(path), downloaded=True)
        return f"downloaded to {path}"

    def _verify(self, record: StepRecord, cancel: threading.Event) -> str:
        choice = self._backup_choice()
        if not choice.local_path:
            raise DrError("the backup is not local yet: run step 3 (Download) first")
        result = checksum.verify_with_sidecar(
            Path(choice.local_path),
            on_event=self.on_event,
            step_id=record.id,
            cancel=cancel,
            check_dump=True,
        )
        self.state.verify = VerifyRecord(
            expected_md5=result.expected_md5,
            actual_md5=result.actual_md5,
            md5_ok=result.md5_ok,
            gzip_ok=result.gzip_ok,
            gzip_error=result.gzip_error,
            sidecar_error=result.sidecar_error,
            dump_error=result.dump_error if result.gzip_ok else None,
        )
        downloaded = choice.downloaded
        if not result.ok:
            if downloaded:
                raise DrError(f"{result.describe()}; {self._discard_download(record)}")
            raise DrError(result.describe() + "; choose another backup in step 2")
        if result.identity is None:
            if not Path(choice.local_path).is_file():
                raise DrError(
                    f"{choice.local_path} is not a regular file (a pipe or device gives step 6 "
                    "other bytes than step 4 read): copy it into BACKUP_DIR and choose the "
                    "copy in step 2"
                )
            raise DrError(
                f"{choice.name} changed while step 4 read it: stop whatever writes to it, "
                "then run step 4 again"
            )
        if self.step(StepId.RECREATE_DB).status is not StepStatus.PENDING and choice.md5 not in (
            None,
            result.actual_md5,
        ):
            # Step 5 replaced the database on the word of the backup verified before: step 6
            # loads that backup or nothing.
            raise DrError(
                f"{choice.local_path} now has MD5 {result.actual_md5}, but step 5 replaced "
                f"the database on the strength of the backup with MD5 {choice.md5}: put that "
                f"file back and run step 4 again ({self.production_state()})"
            )
        # What the verify gate holds steps 5 and 6 to: this MD5, in this file (core/restore/pinned.py).
        self.state.backup = dataclasses.replace(
            choice,
            md5=result.actual_md5,
            identity=result.identity,
            companion_md5=None,
            companion_identity=None,
        )
        if self.config.restore.method != "serial":
            self._check_companion(Path(choice.local_path), downloaded, record, cancel)
        return result.describe()

    def _discard_download(self, record: StepRecord) -> str:
        """A downloaded copy that failed step 4 is removed (catalog.discard_download says why)
        and step 3 is due again, so a retry fetches the S3 original afresh."""
        choice = self._backup_choice()
        catalog.discard_download(Path(choice.local_path or ""))
        self.state.backup = dataclasses.replace(choice, local_path=None, downloaded=False)
        download = self.step(StepId.DOWNLOAD)
        download.status = StepStatus.PENDING
        download.detail = "the downloaded copy failed step 4 and was removed: download it again"
        self.on_event(
            StepChanged(
                download.id, download.number, download.title, download.status, download.detail
            )
        )
        self.on_event(Notice("warn", f"removed the downloaded copy of {choice.name}", record.id))
        return (
            "the downloaded copy was removed: run step 3 to download it again from S3, "
            "or choose another backup in step 2"
        )

    def _check_companion(
        self, backup: Path, downloaded: bool, record: StepRecord, cancel: threading.Event
    ) -> None:
        """Verify a custom-format companion before any downtime against the MD5 the backup's
        .meta.json recorded (pg_restore.usable_companion); an accepted one is recorded for
        the verify gate, a bad one is reported and, when step 3 downloaded it, removed, so
        step 6 restores the plain file."""
        choice = self._backup_choice()
        companion = catalog.companion_path(backup)
        if not companion.is_file() or choice.md5 is None:
            return
        usable = pg_restore.usable_companion(
            backup, choice.md5, on_event=self.on_event, step_id=record.id, cancel=cancel
        )
        if usable is None:
            if downloaded:
                for path in (companion, checksum.sidecar_path(companion)):
                    path.unlink(missing_ok=True)
            return
        self.state.backup = dataclasses.replace(
            choice, companion_md5=usable.actual_md5, companion_identity=usable.identity
        )

    def _recreate(self, record: StepRecord, cancel: threading.Event) -> str:
        s = self.state
        db = self.config.database
        self._server_lock.ensure()
        # The verify gate, before anything is destroyed: the backup (and the companion step 6
        # would load) is read again in full and must have the MD5 step 4 recorded.
        with self._verified_files(record, cancel, rehash=True):
            pass
        snap = database.snapshot(db, s.target_db)
        if s.destroyed is None:
            s.destroyed = {
                "database": snap.database,
                "existed": snap.exists,
                "size_bytes": snap.size_bytes,
                "row_estimates": snap.row_estimates,
                "recorded_at": utcnow().isoformat(timespec="seconds"),
            }
        s.confirmed_at = utcnow()
        use_aside = s.recreate_mode == "aside"
        if use_aside and s.aside_db is None:
            s.aside_db = aside_name(s.target_db, s.run_id)
            s.aside_state = "planned"
        self.save()  # what is about to be destroyed is on disk before anything is
        with database.connect(db, admin=True) as conn:
            database.require_role(conn, db.user)  # before anything is renamed or dropped
            aside_exists = bool(s.aside_db) and database.database_exists(conn, s.aside_db or "")
            target_exists = database.database_exists(conn, s.target_db)
            if use_aside and aside_exists:
                s.aside_state = "renamed"  # a resumed run: the rename already happened
            if target_exists:
                ended = database.block_and_terminate(conn, s.target_db)
                self.on_event(
                    Notice("info", f"ended {ended} session(s) on {s.target_db}", record.id)
                )
                if use_aside and not aside_exists:
                    database.rename_database(conn, s.target_db, s.aside_db or "")
                    # open again under its new name: rows written after the backup can be
                    # salvaged from it; the app only ever connects to the target's name
                    database.allow_connections(conn, s.aside_db or "")
                    s.aside_state = "renamed"
                    self.save()
                else:
                    # drop mode, or our own half-made database from an interrupted attempt
                    database.drop_database(conn, s.target_db)
            # closed (and owned by the admin role, so the app role cannot open it) until
            # step 6 has loaded and checked the backup: nothing reads or backs up a half load
            database.create_database(conn, s.target_db, None, allow_connections=False)
        closed = "closed to connections until step 6's checks pass"
        if use_aside and s.aside_state == "renamed":
            return f"old database kept as {s.aside_db}; empty {s.target_db} created, {closed}"
        if snap.exists:
            return f"dropped {s.target_db} ({humanize.naturalsize(snap.size_bytes, binary=True)}); created it empty, {closed}"
        return f"created {s.target_db}, {closed}; there was no database to replace"

    def _restore(self, record: StepRecord, cancel: threading.Event) -> str:
        s = self.state
        db = self.config.database
        self._server_lock.ensure()
        # The loaders connect as the app role (the backup's SQL never runs as superuser), and
        # PostgreSQL cannot admit one session of a role and refuse another: so the load goes
        # into a database under a name no application uses, other roles may not connect to
        # it, and the target stays a closed, empty placeholder until the checks pass.
        loading = loading_name(s.target_db, s.run_id)
        try:
            # The verify gate: the files are opened (and checked against step 4's record)
            # before the target is touched, and the loaders read those open files
            # (core/restore/pinned.py); leaving the block checks that nothing wrote to them meanwhile.
            with self._verified_files(record, cancel, rehash=False) as (backup, companion):
                # Redo from a clean database every time: a retry or a resumed run may find a
                # half load.
                with database.connect(db, admin=True) as conn:
                    for name in (s.target_db, loading):
                        if database.database_exists(conn, name):
                            database.block_and_terminate(conn, name)
                            database.drop_database(conn, name)
                    database.create_database(conn, s.target_db, None, allow_connections=False)
                    database.create_database(conn, loading, db.user)
                    closed_acl = database.revoke_public_connect(conn, loading)
                env = database.libpq_env(db, loading)
                result, how = self._load(backup, companion, env, record, cancel)
                checks = self._validate(loading)
                failed = [c for c in checks if not c["ok"]]
                if failed:
                    raise DrError(
                        f"restore loaded but validation failed: {failed[0]['name']}: {failed[0]['detail']}"
                    )
        except BaseException:
            # a half or failed load stays closed to everyone (the next attempt drops it)
            with (
                contextlib.suppress(DrError, psycopg.Error),
                database.connect(db, admin=True) as conn,
            ):
                database.block_and_terminate(conn, loading)
            raise
        self._open_loaded(loading, closed_acl)
        return (
            f"loaded {len(result.tables_loaded)} tables, "
            f"{humanize.naturalsize(result.compressed_bytes, binary=True)} compressed in "
            f"{result.seconds:.1f} s ({how}); {len(checks)} checks passed"
        )

    @contextlib.contextmanager
    def _verified_files(
        self, record: StepRecord, cancel: threading.Event, *, rehash: bool
    ) -> Iterator[tuple[Path, Path | None]]:
        """The backup, and the companion step 4 accepted (unless the method is serial), each
        opened once and checked against what step 4 recorded; yields the paths the loaders
        open (they resolve to those open files). GateError when the backup is not the one
        step 4 verified; a companion that is not is dropped with a warning (the plain file
        is then loaded)."""
        choice = self._backup_choice()
        if not choice.local_path or choice.md5 is None:
            raise DrError("step 4 has not verified the chosen backup: run step 4 (Verify) first")
        folder = self.config.state_dir / "load" / self.state.run_id

        def pin(
            path: Path, md5: str, identity: checksum.FileIdentity | None
        ) -> contextlib.AbstractContextManager[pinned.Pinned]:
            return pinned.open_verified(
                path,
                md5,
                identity,
                folder,
                rehash=rehash,
                on_event=self.on_event,
                step_id=record.id,
                cancel=cancel,
            )

        backup = Path(choice.local_path)
        with contextlib.ExitStack() as stack:
            plain = stack.enter_context(pin(backup, choice.md5, choice.identity))
            self.state.backup = choice = dataclasses.replace(choice, identity=plain.identity)
            companion = None
            if choice.companion_md5 is not None and self.config.restore.method != "serial":
                try:
                    companion = stack.enter_context(
                        pin(
                            catalog.companion_path(backup),
                            choice.companion_md5,
                            choice.companion_identity,
                        )
                    )
                except pinned.GateError as exc:
                    self.on_event(
                        Notice(
                            "warn",
                            f"custom-format companion not used ({exc}); restoring the plain backup",
                            record.id,
                        )
                    )
                    self.state.backup = choice = dataclasses.replace(
                        choice, companion_md5=None, companion_identity=None
                    )
                else:
                    self.state.backup = dataclasses.replace(
                        choice, companion_identity=companion.identity
                    )
            self.save()
            yield plain.load_path, companion.load_path if companion else None

    def _load(
        self,
        backup: Path,
        companion: Path | None,
        env: dict[str, str],
        record: StepRecord,
        cancel: threading.Event,
    ) -> tuple[StreamResult, str]:
        """Step 6's loader (restore.method): the custom-format companion step 4 accepted
        goes to pg_restore -j (never with method serial: `_verified_files` offers none);
        without one, parallel splits the plain file over `jobs` sessions and auto/serial
        stream it like the runbook."""
        method = self.config.restore.method
        jobs = parallel_restore.resolve_jobs(self.config.restore.jobs)
        sink, step = self.on_event, record.id
        if companion is not None:
            sink(Notice("info", f"using the custom-format companion {companion.name}", step))
            result = pg_restore.custom_restore(
                companion, env, jobs=jobs, on_event=sink, step_id=step, cancel=cancel
            )
            return result, f"pg_restore -j {jobs} of {companion.name}"
        if method == "parallel":
            reason = parallel_restore.unsupported_reason(backup)
            if reason is None:
                result = parallel_restore.parallel_restore(
                    backup, env, jobs=jobs, on_event=sink, step_id=step, cancel=cancel
                )
                return result, f"{jobs} parallel sessions"
            sink(Notice("warn", f"{backup.name} is loaded serially: {reason}", step))
        result = stream_restore(backup, env, on_event=sink, step_id=step, cancel=cancel)
        return result, "serial"

    def _open_loaded(self, loading: str, closed_acl: list[str] | None) -> None:
        """Step 6's checks passed: the loaded database takes the target's name and opens,
        with the privileges a fresh database has (or those the backup's SQL set itself)."""
        s = self.state
        with database.connect(self.config.database, admin=True) as conn:
            database.block_and_terminate(conn, loading)  # closed for the rename
            if database.database_exists(conn, s.target_db):
                database.block_and_terminate(conn, s.target_db)
                database.drop_database(conn, s.target_db)  # the empty placeholder
            database.rename_database(conn, loading, s.target_db)
            database.restore_public_connect(conn, s.target_db, closed_acl)
            database.allow_connections(conn, s.target_db)

    def _validate(self, dbname: str) -> list[dict[str, object]]:
        """The restore-test's checks on the restored database (`dbname`, the loading name):
        required tables, row counts equal to those recorded at backup time, smoke queries."""
        s = self.state
        local = Path(s.backup.local_path) if s.backup and s.backup.local_path else None
        meta = catalog.read_meta(local) if local else None
        rt = self.config.restore_test
        # as the app role, never the admin: the checks run inside what the backup made
        with database.connect(self.config.database, dbname) as conn:
            checks, _ = restore_test.validate_restored(
                conn, rt.required_tables, meta.row_counts if meta else None, rt.smoke_queries
            )
        s.validation = [c.to_json() for c in checks]
        return s.validation

    def _app_command(
        self, which: str, record: StepRecord, cancel: threading.Event
    ) -> str | StepStatus:
        if self.drill and which in ("stop", "start") and not getattr(self.app, which):
            record.detail = f"drill: app.{which} is never run against production"
            record.skip_reason = record.detail
            return StepStatus.SKIPPED
        argv = getattr(self.app, which)
        if not argv:
            key = f"{'drill.app' if self.drill else 'app'}.{which}"
            record.detail = f"no {key} command in runbook.yaml"
            record.skip_reason = record.detail
            return StepStatus.SKIPPED
        if which == "stop":
            self._check_server()
        env = {
            "PRESKOOL_DR_TARGET_DB": self.state.target_db,
            "PRESKOOL_DR_RUN_ID": self.state.run_id,
        }
        result = run_app_command(
            argv,
            cwd=self.app.cwd,
            timeout=self.app.timeout_seconds,
            env=env,
            on_line=self._log(record, Path(argv[0]).name),
            cancel=cancel,
        )
        if not result.ok:
            key = f"{'drill.app' if self.drill else 'app'}.{which}"
            hint = (
                f" (or raise {key.rsplit('.', 1)[0]}.timeout_seconds)" if result.timed_out else ""
            )
            raise DrError(
                f"{key}: {result.describe()} - fix the command{hint}, then resume this run"
            )
        return result.describe()

    def _check_server(self) -> None:
        """Before step 1 takes the app down: step 5 needs the admin connection and the app
        role, or the downtime buys nothing (server down, wrong password, no role)."""
        db = self.config.database
        try:
            with database.connect(db, admin=True) as conn:
                database.require_role(conn, db.user)
            self._server_lock.ensure()  # no downtime for a run another one would refuse
        except DrError as exc:
            raise DrError(f"{exc} (the application was left running)") from None

    def _health(self, record: StepRecord, cancel: threading.Event) -> str | StepStatus:
        url = self.app.health_url
        if not url:
            record.detail = "no health_url configured: the RTO ends when the last step settles"
            record.skip_reason = record.detail
            return StepStatus.SKIPPED
        result = check_health(
            url,
            wait_seconds=self.app.health_wait_seconds,
            cancel=cancel,
            on_attempt=self._log(record, "health"),
        )
        if not result.ok:
            raise DrError(
                f"{result.detail} - check that the application is up and healthy, then "
                "resume this run"
            )
        self.state.app_accessible_at = utcnow()
        return result.detail
