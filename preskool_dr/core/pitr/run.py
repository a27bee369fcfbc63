"""`pitr`: point-in-time recovery from a base backup plus the archived WAL.

The runbook's `pg_restore --target-time` does not exist: pg_restore cannot replay WAL.
Here the PostgreSQL server itself replays it: the newest base backup that ended before
the target is extracted into a NEW data directory, recovery settings point its
restore_command at `preskool-dr wal-fetch`, and the server replays to
`recovery_target_time`, then promotes.

Safety, as for the logical restore: nothing starts unless --confirm repeats the data
directory, that directory is new or empty (a live one is never touched, so there is
nothing to roll back: delete the new directory), the target lies inside the range the
backups can reach (checked from the archive before anything is written), and every file
is verified (MD5 sidecars, then pg_verifybackup against the SHA-256 manifest). Each step
transition is saved to `<state dir>/pitr/<run_id>.json` (0600, atomic), from which a killed
or interrupted run resumes (`PitrRun.resume`, `pitr --resume RUN_ID`).

The recovered copy gets `archive_mode = off`: its new timeline must not land in the
production archive, where a later recovery following timeline 'latest' would take it.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pwd
import re
import shlex
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import psycopg

from preskool_dr.core.backup import basebackup, wal
from preskool_dr.core.backup.basebackup import BASE_TAR, MANIFEST, WAL_TAR, BaseBackupInfo
from preskool_dr.core.backup.wal import Segment, WalSettings
from preskool_dr.core.base import database, procs
from preskool_dr.core.base.config import Config
from preskool_dr.core.base.errors import (
    Cancelled,
    DrError,
    UsageError,
    VerificationError,
)
from preskool_dr.core.base.events import (
    EventSink,
    LogLine,
    Notice,
    Progress,
    StepChanged,
    StepStatus,
    ignore_events,
    utcnow,
)
from preskool_dr.core.base.pgbin import find_pg_bin
from preskool_dr.core.restore import restore_test
from preskool_dr.core.restore.engine import default_operator
from preskool_dr.core.restore.journal import PITR_FOLDER, RunJournal, from_json, new_run_id
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.checksum import ProgressMeter

SERVER_OS_USER = "postgres"  # who runs the server when pitr runs as root
LOG_NAME = "pitr-recovery.log"
STEPS = (
    ("plan", "Choose the base backup; check the target is recoverable"),
    ("fetch", "Fetch and verify the base backup"),
    ("extract", "Extract it into the new data directory and check the manifest"),
    ("configure", "Write the recovery settings"),
    ("start", "Start the recovered server"),
    ("replay", "Replay archived WAL up to the target"),
    ("verify", "Verify the target was reached and the server promoted"),
)
POLL_SECONDS = 1.0
START_WAIT_SECONDS = 120.0
MAX_COMMIT_PROBES = 64  # segments read backwards to find the archive's last transaction
# Transient options for this start: a log we can read, in English, at our path.
_SERVER_OPTIONS = (
    "-c logging_collector=off -c log_destination=stderr -c log_min_messages=warning "
    "-c lc_messages=C"
)
_WALDUMP_XACT = re.compile(
    r"desc: (?:COMMIT|ABORT)(?:_PREPARED \d+:)? "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_STOP_BEFORE = re.compile(
    r"recovery stopping before (?:commit|abort) of transaction (\d+), time (.+?)\s*$"
)
_LAST_XACT = re.compile(r"last completed transaction was at log time (.+?)\s*$")
_NEW_TIMELINE = re.compile(r"selected new timeline ID: (\d+)")
_FATAL = re.compile(r"\b(?:FATAL|PANIC):\s+(.*)$")
# FATALs a client connection gets (not the server's own): not a reason the server stopped.
_CLIENT_FATAL = re.compile(
    r"database system is (?:starting up|not yet accepting|shutting down)|authentication failed"
    r"|no pg_hba\.conf entry"
)
_ACCEPTS_CONNECTIONS = "ready to accept"  # read-only connections in recovery, then all
_RECOVERY_COMPLETE = "archive recovery complete"
_READY = "database system is ready to accept connections"
# When the server writes none of these files (Debian keeps them in /etc/postgresql).
_DEFAULT_FILES = {
    "postgresql.conf": "# written by preskool-dr pitr: the base backup had none; "
    "see postgresql.auto.conf\n",
    "pg_hba.conf": "# written by preskool-dr pitr: the base backup had none\n"
    "local   all   all                 peer\n"
    "host    all   all   127.0.0.1/32  scram-sha-256\n"
    "host    all   all   ::1/128       scram-sha-256\n",
    "pg_ident.conf": "",
}


def parse_target(text: str) -> datetime:
    """ISO-8601; a time without an offset is UTC, like every time this tool prints."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO-8601 time (e.g. 2026-02-20T03:55:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(at: datetime | None) -> str:
    return catalog.iso_utc(at) if at is not None else "-"


# ---------------------------------------------------------------- the recoverable range


@dataclass(frozen=True)
class RecoverableRange:
    """What one base backup plus the archive can reach: from `start` (the backup's end)
    up to, not including, `end` (the last transaction archived without a gap after it).
    PostgreSQL stops before the first transaction later than the target, so a target at
    or after `end` could never be reached."""

    base: BaseBackupInfo
    record: BackupRecord
    start: datetime
    end: datetime | None
    last_segment: str | None
    gap: str | None  # first missing segment when newer ones exist

    @property
    def usable(self) -> bool:
        return self.end is not None and self.end > self.start

    def contains(self, target: datetime) -> bool:
        return self.end is not None and self.start <= target < self.end

    def describe(self) -> str:
        source = f"base backup {self.base.name}"
        gap = f"; WAL gap: segment {self.gap} is missing" if self.gap else ""
        if not self.usable:
            return f"{iso(self.start)} only ({source}; no transaction archived after it{gap})"
        return (
            f"{iso(self.start)} .. {iso(self.end)} ({source} + archived WAL up to "
            f"{self.last_segment}{gap})"
        )


def recoverable_ranges(
    config: Config, *, on_event: EventSink = ignore_events
) -> list[RecoverableRange]:
    """Every base backup with a readable meta, newest first, with its recoverable range."""
    warnings: list[str] = []
    records = [r for r in catalog.list_backups(config, "all", warnings) if r.kind == "base"]
    for warning in warnings:
        on_event(Notice("warn", warning, "plan"))
    settings = WalSettings.from_config(config)
    archive = sorted(n for n in wal.list_archive(settings) if Segment.parse(n))
    probed: dict[str, datetime | None] = {}
    ranges = []
    for record in records:
        if record.bad is not None:  # e.g. a member key with `..`: never downloaded
            on_event(Notice("warn", f"{record.name} is refused: {record.bad}; not used", "plan"))
            continue
        info = basebackup.record_info(config, record)
        if info is None:
            on_event(
                Notice(
                    "warn",
                    f"{record.name} has no readable meta.json (an unfinished upload?): not used",
                    "plan",
                )
            )
            continue
        ranges.append(_range_for(info, record, archive, settings, probed))
    return ranges


def _range_for(
    info: BaseBackupInfo,
    record: BackupRecord,
    archive: list[str],
    settings: WalSettings,
    probed: dict[str, datetime | None],
) -> RecoverableRange:
    size = info.wal_segment_size
    present = {
        s.number(size)
        for s in (Segment.parse(n) for n in archive)
        if s is not None and s.timeline == info.timeline
    }
    first = info.end_segment.number(size)
    number = first
    while number in present:
        number += 1
    gap = Segment.at(info.timeline, number, size).name if any(n > number for n in present) else None
    if number == first:
        return RecoverableRange(info, record, info.end_time, None, None, gap)
    last = Segment.at(info.timeline, number - 1, size)
    if last.name not in probed:
        probed[last.name] = _last_transaction_time(settings, info.timeline, first, number - 1, size)
    return RecoverableRange(info, record, info.end_time, probed[last.name], last.name, gap)


def _last_transaction_time(
    settings: WalSettings, timeline: int, first: int, last: int, size: int
) -> datetime | None:
    """The newest commit/abort time in segments `last` down to `first` (pg_waldump)."""
    waldump = find_pg_bin("pg_waldump")
    with tempfile.TemporaryDirectory(prefix="preskool-pitr-") as folder:
        for number in range(last, max(first, last - MAX_COMMIT_PROBES + 1) - 1, -1):
            name = Segment.at(timeline, number, size).name
            wal.fetch(name, Path(folder) / name, settings)  # verified copy, local or S3
            # The tail of the output is enough: it ends with the segment's last records (and
            # an error about the next segment, which is not there).
            dump = procs.run_command(
                [waldump, f"--path={folder}", "--rmgr=Transaction", name],
                env={"TZ": "UTC"},
                timeout=300,
            )
            (Path(folder) / name).unlink()
            times = _WALDUMP_XACT.findall(dump.output)
            if times:
                return datetime.fromisoformat(times[-1]).replace(tzinfo=UTC)
    return None


def plan_recovery(
    config: Config, target: datetime, *, on_event: EventSink = ignore_events
) -> RecoverableRange:
    """The range of the newest base backup that ended before `target`; UsageError (exit 2)
    naming the recoverable range when `target` is outside it."""
    ranges = recoverable_ranges(config, on_event=on_event)
    if not ranges:
        raise UsageError(
            f"no usable base backup (one with a readable meta.json) in {config.backups.dir}"
            f"{' or S3' if config.backups.s3_bucket else ''}: take one with "
            "`preskool-dr backup --kind base` (point-in-time recovery starts from it)"
        )
    before = [r for r in ranges if r.start <= target]
    if not before:
        earliest = min(ranges, key=lambda r: r.start)
        raise UsageError(
            f"target {iso(target)} is before the earliest recoverable time: the oldest base "
            f"backup ended at {iso(earliest.start)}; recoverable: {earliest.describe()}"
        )
    chosen = max(before, key=lambda r: r.start)
    if not chosen.contains(target):
        raise UsageError(
            f"target {iso(target)} is outside the recoverable range {chosen.describe()}: "
            "choose a time inside it"
        )
    return chosen


# ---------------------------------------------------------------- the request


@dataclass(frozen=True)
class PitrRequest:
    target: datetime
    data_dir: Path
    port: int
    confirm: str
    incident: datetime | None = None  # for the RPO; default: the target
    server_python: str = sys.executable  # what the recovered server runs wal-fetch with
    operator: str = ""
    drill: bool = False  # a rehearsal: validate the recovered database for the drill log


def check_request(request: PitrRequest) -> Path:
    """Usage checks that need no backup: confirmation, an empty directory, a free port.
    Returns the absolute data directory."""
    data_dir = Path(os.path.abspath(request.data_dir.expanduser()))
    typed = Path(os.path.abspath(Path(request.confirm).expanduser())) if request.confirm else None
    if typed != data_dir:
        raise UsageError(
            f"--confirm {request.confirm or '(missing)'} does not repeat --data-dir "
            f"{data_dir}: nothing was done"
        )
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise UsageError(
            f"{data_dir} is not an empty directory: pitr only writes into a new or empty one "
            "(it never touches a live data directory); choose another --data-dir"
        )
    if not 1 <= request.port <= 65535:
        raise UsageError(f"--port {request.port} is not a TCP port (1-65535)")
    if _port_in_use(request.port):
        raise UsageError(f"port {request.port} is in use on this host: choose a free --port")
    if request.target.tzinfo is None:
        raise UsageError("the target time needs a timezone")
    return data_dir


def _port_in_use(port: int) -> bool:
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as sock:
                sock.settimeout(2)
                if sock.connect_ex((address, port)) == 0:
                    return True
        except OSError:
            continue  # no IPv6 on this host
    return False


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_server_user(argv: list[str]) -> list[str]:
    """As root the server (and what it runs) belongs to the postgres OS user."""
    return ["runuser", "-u", SERVER_OS_USER, "--", *argv] if running_as_root() else argv


def restore_command(python: str, settings: WalSettings) -> str:
    """The shell command the recovered server runs per segment; no secrets in it (AWS keys
    come from the environment the server was started with)."""
    env = [f"BACKUP_DIR={shlex.quote(str(settings.backup_dir))}"]
    if settings.bucket:
        env.append(f"S3_BUCKET={shlex.quote(settings.bucket)}")
    return f"env {' '.join(env)} {shlex.quote(python)} -m preskool_dr wal-fetch %f %p"


def stop_command(data_dir: Path) -> str:
    prefix = f"runuser -u {SERVER_OS_USER} -- " if running_as_root() else ""
    return f"{prefix}pg_ctl -D {shlex.quote(str(data_dir))} stop"


def _check_server_python(python: str) -> None:
    result = procs.run_command(
        as_server_user([python, "-m", "preskool_dr", "wal-fetch", "--help"]), cwd="/", timeout=120
    )
    if not result.ok:
        who = f"the {SERVER_OS_USER} OS user" if running_as_root() else "this user"
        raise UsageError(
            f"{who} cannot run `{python} -m preskool_dr` ({result.describe()}), which the "
            "recovered server needs as its restore_command: install preskool-dr where it can "
            "(e.g. a venv under /opt) and pass --server-python PATH"
        )


# ---------------------------------------------------------------- the journal


@dataclass
class PitrState:
    """`<state dir>/pitr/<run_id>.json`: what was asked, chosen and reached."""

    run_id: str
    created_at: datetime
    operator: str
    target: datetime
    incident: datetime
    data_dir: str
    port: int
    base_backup: str
    range_start: datetime
    range_end: datetime | None
    server_log: str
    steps: dict[str, str]  # step id -> pending/running/done/failed
    details: dict[str, str] = field(default_factory=dict)
    result: str = "running"  # running | done | failed | interrupted
    server_running: bool = False
    stop_point: datetime | None = None  # the first transaction after the target: not replayed
    recovery_end: datetime | None = None  # the last transaction replayed
    timeline: int | None = None
    rpo_seconds: float | None = None
    finished_at: datetime | None = None
    notes: list[str] = field(default_factory=list)
    mode: str = "pitr"
    version: int = 1
    backup_md5: str | None = None  # of the base backup's base.tar.gz (its meta.json's md5)
    tool_host: str = ""
    declared_at: datetime | None = None  # the run started (incident declared): RTO from here
    accepting_at: datetime | None = None  # the recovered server took read-write connections
    step_seconds: dict[str, float] = field(default_factory=dict)
    drill: bool = False
    validation: list[dict[str, Any]] = field(default_factory=list)  # drill: restore-test checks
    drill_log_entry: str | None = None  # sha256 of the drill-log line written for this run
    drill_log_line: int | None = None  # its line number, and the log it went to: so a log
    drill_log_path: str | None = None  # cut after it is caught (drill-log verify, check)
    server_python: str = ""  # what restore_command runs wal-fetch with
    pid: int | None = None  # the preskool-dr process running it, to refuse a second resume

    @property
    def rto_seconds(self) -> float:
        start = self.declared_at or self.created_at
        end = self.accepting_at or self.finished_at or utcnow()
        return max(0.0, (end - start).total_seconds())

    def failed_step(self) -> str | None:
        return next((s for s, status in self.steps.items() if status == "failed"), None)


class PitrJournal(RunJournal[PitrState]):
    """The point-in-time recoveries' journals, `<state dir>/pitr/`."""

    folder = PITR_FOLDER
    what = "pitr journal"
    not_a_run_id = "{run_id!r} is not a pitr run id (the journals are in {folder})"
    missing = "no pitr run {run_id!r} in {folder}"
    unreadable = (
        "pitr journal {path} is unreadable ({error}): it cannot be resumed; empty its data "
        "directory and start a new pitr"
    )

    def decode(self, data: Any) -> PitrState:
        if not isinstance(data, dict) or data.get("mode") != "pitr":
            raise ValueError("not a pitr journal")
        state = from_json(PitrState, data)
        if set(state.steps) != {sid for sid, _ in STEPS}:
            raise ValueError("its steps are not the seven this version runs")
        return state


def journal_path(state_dir: Path, run_id: str) -> Path:
    return PitrJournal(state_dir).path(run_id)


def resume_command(state: PitrState) -> str:
    return f"preskool-dr pitr --resume {state.run_id} --confirm {shlex.quote(state.data_dir)}"


# ---------------------------------------------------------------- the run


class _ServerLog:
    """Follows the recovered server's log file, line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.lines: list[str] = []
        self._fatal_from = 0  # lines before it are an earlier attempt's (see skip_history)

    def read_new(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        new = [procs.redact(line.decode("utf-8", "replace")) for line in complete]
        self.lines += new
        return new

    def skip_history(self) -> None:
        """A resumed run: what the log already holds (e.g. clients' FATALs when the server
        was stopped) is no reason to think the server we start or follow now has died."""
        self.read_new()
        self._fatal_from = len(self.lines)

    def fatal(self) -> list[str]:
        return [
            m.group(1)
            for line in self.lines[self._fatal_from :]
            if (m := _FATAL.search(line)) and not _CLIENT_FATAL.search(m.group(1))
        ]

    def find(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return next((m for line in self.lines if (m := pattern.search(line))), None)

    def promoted(self) -> bool:
        done = next((i for i, ln in enumerate(self.lines) if _RECOVERY_COMPLETE in ln), None)
        return done is not None and any(_READY in ln for ln in self.lines[done:])


def _is_preskool_process(pid: int) -> bool:
    """Alive and a preskool-dr process (a recycled pid is not the old run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    try:
        return b"preskool" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: assume the worst, the message says how to check


def _log_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class PitrRun:
    """One recovery; `run()` goes through STEPS and returns the final state. `resume()`
    picks up a run whose process was killed or interrupted, from its journal."""

    def __init__(
        self,
        config: Config,
        request: PitrRequest,
        *,
        on_event: EventSink = ignore_events,
        cancel: threading.Event | None = None,
        journal: PitrState | None = None,
    ) -> None:
        self.config = config
        self.request = request
        self.on_event = on_event
        self.cancel = cancel or threading.Event()
        self.settings = WalSettings.from_config(config)
        # A resumed run's directory holds its own partial work: only a new one must be empty.
        self.data_dir = check_request(request) if journal is None else Path(journal.data_dir)
        self.state: PitrState | None = journal
        self.plan: RecoverableRange | None = None
        self.backup_path: Path | None = None  # the verified local copy, once fetched
        self.log = _ServerLog(self.data_dir / LOG_NAME)
        self._conn: psycopg.Connection | None = None
        self._declared = utcnow()
        self._step_started: dict[str, float] = {}

    @classmethod
    def resume(
        cls,
        config: Config,
        run_id: str,
        confirm: str,
        *,
        on_event: EventSink = ignore_events,
        cancel: threading.Event | None = None,
    ) -> PitrRun:
        """Re-attach to run `run_id` (killed, or stopped with Ctrl-C/SIGTERM); UsageError
        saying what to do instead when it is done, failed, or still running elsewhere."""
        state = PitrJournal(config.state_dir).load(run_id)
        data_dir = Path(state.data_dir)
        typed = Path(os.path.abspath(Path(confirm).expanduser())) if confirm else None
        if typed != data_dir:
            raise UsageError(
                f"--confirm {confirm or '(missing)'} does not repeat run {run_id}'s data "
                f"directory {data_dir}: nothing was done"
            )
        if state.result == "done":
            raise UsageError(
                f"run {run_id} is done (recovered to {iso(state.recovery_end)}): nothing to "
                f"resume; its server: `{stop_command(data_dir)}` stops it"
            )
        if state.result == "failed":
            raise UsageError(
                f"run {run_id} failed at step {state.failed_step() or '?'} and is not resumed "
                f"(a failure repeats): read {state.server_log}, stop its server if one runs "
                f"(`{stop_command(data_dir)}`), remove {data_dir}, then start a new pitr"
            )
        if state.result == "running" and state.pid and _is_preskool_process(state.pid):
            raise UsageError(
                f"run {run_id} is still running (preskool-dr pid {state.pid}): wait for it, "
                f"or stop it (kill {state.pid}) and resume then"
            )
        request = PitrRequest(
            target=state.target,
            data_dir=data_dir,
            port=state.port,
            confirm=str(data_dir),
            incident=state.incident,
            server_python=state.server_python or sys.executable,
            operator=state.operator,
            drill=state.drill,
        )
        return cls(config, request, on_event=on_event, cancel=cancel, journal=state)

    # ------------------------------------------------------------ bookkeeping

    def _step(self, step_id: str, status: StepStatus, detail: str = "") -> None:
        number = next(i for i, (sid, _) in enumerate(STEPS, 1) if sid == step_id)
        title = STEPS[number - 1][1]
        if status is StepStatus.RUNNING:
            self._step_started[step_id] = time.monotonic()
        if self.state is not None:
            self.state.steps[step_id] = status.value
            if detail:
                self.state.details[step_id] = detail
            started = self._step_started.get(step_id)
            if status is not StepStatus.RUNNING and started is not None:
                self.state.step_seconds[step_id] = time.monotonic() - started
            self._save()
        self.on_event(StepChanged(step_id, number, title, status, detail))

    def _save(self) -> None:
        assert self.state is not None
        PitrJournal(self.config.state_dir).save(self.state)

    def remember_drill_entry(self, sha256: str, line: int, log: Path) -> None:
        """The drill log's line for this run (drill.record): kept in the journal."""
        assert self.state is not None
        self.state.drill_log_entry = sha256
        self.state.drill_log_line = line
        self.state.drill_log_path = str(log)
        self._save()

    def _notice(self, level: str, text: str, step_id: str) -> None:
        self.on_event(Notice(level, text, step_id))
        if self.state is not None and level in ("warn", "error"):
            self.state.notes.append(text)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("point-in-time recovery interrupted")

    # ------------------------------------------------------------ the steps

    def run(self) -> PitrState:
        first = self._plan_new() if self.state is None else self._plan_resume()
        assert self.state is not None
        actions = (
            ("fetch", self._fetch),
            ("extract", self._extract),
            ("configure", self._configure),
            ("start", self._start),
            ("replay", self._replay),
            ("verify", self._verify),
        )
        ids = [step_id for step_id, _ in actions]
        current = first
        try:
            for current, action in actions[ids.index(first) :]:
                self._check_cancel()
                self._step(current, StepStatus.RUNNING)
                detail = action()
                self._step(current, StepStatus.DONE, detail)
            self.state.result = "done"
        except Cancelled as exc:
            self.state.result = "interrupted"
            self._step(current, StepStatus.FAILED, str(exc))
            raise
        except DrError as exc:
            self.state.result = "failed"
            self._step(current, StepStatus.FAILED, str(exc))
            raise
        except OSError as exc:  # e.g. a full disk while extracting
            self.state.result = "failed"
            error = DrError(f"step {current} failed: {exc}")
            self._step(current, StepStatus.FAILED, str(error))
            raise error from None
        finally:
            if self._conn is not None:
                self._conn.close()
            self.state.server_running = self._server_pid() is not None
            self.state.finished_at = utcnow()
            self._save()
        return self.state

    def _choose(self, detail: str) -> RecoverableRange:
        """Step 1 (also on resume: the archive is read again): the plan, or the step fails."""
        self._step("plan", StepStatus.RUNNING, detail)
        try:
            plan = plan_recovery(self.config, self.request.target, on_event=self.on_event)
            if self.state is not None and plan.base.name != self.state.base_backup:
                raise DrError(
                    f"the archive now points to base backup {plan.base.name}, not this run's "
                    f"{self.state.base_backup}: remove {self.data_dir} and start a new pitr"
                )
            _check_server_python(self.request.server_python)
        except DrError as exc:
            self._step("plan", StepStatus.FAILED, str(exc))
            raise
        self.plan = plan
        return plan

    def _plan_new(self) -> str:
        request = self.request
        plan = self._choose(f"target {iso(request.target)}")
        now = utcnow()
        self.state = PitrState(
            run_id=new_run_id(now),
            created_at=now,
            operator=request.operator or default_operator(),
            target=request.target,
            incident=request.incident or request.target,
            data_dir=str(self.data_dir),
            port=request.port,
            base_backup=plan.base.name,
            range_start=plan.start,
            range_end=plan.end,
            server_log=str(self.data_dir / LOG_NAME),
            steps={sid: StepStatus.PENDING.value for sid, _ in STEPS},
            backup_md5=plan.base.members.get(BASE_TAR),
            tool_host=socket.gethostname(),
            declared_at=self._declared,
            drill=request.drill,
            server_python=request.server_python,
            pid=os.getpid(),
        )
        self._step("plan", StepStatus.DONE, f"{plan.base.name}; recoverable {plan.describe()}")
        self._notice(
            "info",
            f"run {self.state.run_id}; if it is interrupted: {resume_command(self.state)}",
            "plan",
        )
        return "fetch"

    def _plan_resume(self) -> str:
        """Where a killed or interrupted run goes on: a running server is followed (its
        recovery never stopped), a stopped one started again (recovery goes on from its last
        restartpoint), and a run stopped before its server started begins again from the
        fetch, in the emptied directory (all in it is this run's partial work)."""
        state = self.state
        assert state is not None
        interrupted_at = next(
            (sid for sid, _ in STEPS if state.steps[sid] in ("running", "failed")), "?"
        )
        state.result, state.pid, state.finished_at = "running", os.getpid(), None
        plan = self._choose(f"resuming run {state.run_id}, stopped in step {interrupted_at}")
        pid = self._server_pid()
        if pid is not None:
            first = "replay"
            how = f"its server (pid {pid}) is running: following its recovery"
            self.log.skip_history()
        elif state.steps["configure"] == "done" and (self.data_dir / "PG_VERSION").exists():
            first = "start"
            how = "its server is stopped: starting it again; recovery goes on where it was"
            self.log.skip_history()
        else:
            first = "fetch"
            self._empty_data_dir()
            how = (
                f"emptied {self.data_dir} (the partial work of step {interrupted_at}) and "
                "starting again from the fetch"
            )
        order = [sid for sid, _ in STEPS]
        for sid in order[1:]:
            before = order.index(sid) < order.index(first)
            state.steps[sid] = StepStatus.DONE.value if before else StepStatus.PENDING.value
        state.notes.append(f"resumed at {iso(utcnow())}: {how}")
        self._step("plan", StepStatus.DONE, f"{plan.base.name}; resumed: {how}")
        return first

    def _empty_data_dir(self) -> None:
        for child in self.data_dir.iterdir() if self.data_dir.is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _fetch(self) -> str:
        assert self.plan is not None
        base = self.plan.base
        extra = [m for m in base.members if m not in (BASE_TAR, WAL_TAR, MANIFEST)]
        if extra:
            raise DrError(
                f"{base.name} holds tablespaces ({', '.join(extra)}): pitr restores only the "
                "main data directory; extract those by hand (see docs/PITR.md)"
            )
        path = catalog.fetch_backup(
            self.config,
            self.plan.record,
            on_event=self.on_event,
            step_id="fetch",
            cancel=self.cancel,
        )
        results = checksum.verify_backup(
            path, on_event=self.on_event, step_id="fetch", cancel=self.cancel
        )
        for result in results:
            expected = base.members.get(result.path.name)
            if not result.ok or expected != result.actual_md5:
                raise VerificationError(
                    f"{result.describe()} (meta.json says {expected}): the base backup is "
                    "damaged; choose another target so an older base backup is used"
                )
        missing = set(base.members) - {r.path.name for r in results}
        if missing:
            raise VerificationError(f"{base.name} lacks {', '.join(sorted(missing))}")
        self.backup_path = path
        return f"{path}: {len(results)} files match their MD5"

    def _extract(self) -> str:
        assert self.backup_path is not None
        data_dir = self.data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        _extract_tar(self.backup_path / BASE_TAR, data_dir, self.on_event, self.cancel)
        wal_tar = self.backup_path / WAL_TAR
        if wal_tar.exists():
            (data_dir / "pg_wal").mkdir(mode=0o700, exist_ok=True)
            _extract_tar(wal_tar, data_dir / "pg_wal", self.on_event, self.cancel)
        result = procs.run_command(
            [
                find_pg_bin("pg_verifybackup"),
                f"--manifest-path={self.backup_path / MANIFEST}",
                "--quiet",
                str(data_dir),
            ],
            timeout=None,
            cancel=self.cancel,
        )
        self._check_cancel()
        if not result.ok:
            raise VerificationError(
                f"pg_verifybackup found the extracted files differ from the manifest: "
                f"{result.output.strip().splitlines()[0] if result.output.strip() else result.describe()}"
            )
        return f"extracted into {data_dir}; pg_verifybackup: every file matches the manifest"

    def _configure(self) -> str:
        assert self.state is not None
        data_dir = self.data_dir
        for name, text in _DEFAULT_FILES.items():
            path = data_dir / name
            if not path.exists():
                path.write_text(text)
                self._notice(
                    "warn",
                    f"the base backup has no {name} (kept outside the data directory, as on "
                    f"Debian): wrote a minimal one; copy the production one in before cut-over",
                    "configure",
                )
        (data_dir / "standby.signal").unlink(missing_ok=True)
        (data_dir / "recovery.signal").write_text("")
        target = self.request.target.astimezone(UTC)
        settings = {
            "port": str(self.request.port),
            "restore_command": restore_command(self.request.server_python, self.settings),
            "recovery_target_time": f"{target:%Y-%m-%d %H:%M:%S.%f}+00",
            "recovery_target_action": "promote",
            "recovery_target_inclusive": "on",
            # The base backup's timeline: the range above was computed along it.
            "recovery_target_timeline": "current",
            "hot_standby": "on",  # replay progress is read over SQL while recovering
            "archive_mode": "off",  # see the module docstring
        }
        auto = data_dir / "postgresql.auto.conf"
        lines = [
            "",
            f"# preskool-dr pitr run {self.state.run_id} at {iso(self.state.created_at)}: "
            f"recover {self.state.base_backup} to {iso(target)}",
            *(
                f"{key} = '{value.replace(chr(39), chr(39) * 2)}'"
                for key, value in settings.items()
            ),
        ]
        with auto.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        if running_as_root():
            _chown_tree(data_dir, SERVER_OS_USER)
        return f"recovery.signal + postgresql.auto.conf: target {iso(target)}, port {self.request.port}"

    def _start(self) -> str:
        log = self.data_dir / LOG_NAME
        result = procs.run_command(
            as_server_user(
                [
                    find_pg_bin("pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(log),
                    "-W",
                    "-o",
                    _SERVER_OPTIONS,
                    "start",
                ]
            ),
            timeout=120,
        )
        if not result.ok:
            raise DrError(f"pg_ctl could not start the server: {result.describe()}")
        deadline = time.monotonic() + START_WAIT_SECONDS
        while self._server_pid() is None:
            self._forward_log()
            self._fail_if_dead(started=False)
            if time.monotonic() > deadline:
                raise DrError(
                    f"the server did not start within {START_WAIT_SECONDS:.0f} s: see {log}"
                )
            self._check_cancel()
            time.sleep(0.2)
        assert self.state is not None
        self.state.server_running = True
        return f"postmaster pid {self._server_pid()}, port {self.request.port}, log {log}"

    def _replay(self) -> str:
        assert self.plan is not None
        start_lsn = wal.parse_lsn(self.plan.base.start_lsn)
        target = self.request.target
        while True:
            self._forward_log()
            status = self._poll_sql()
            if status is not None:
                in_recovery, lsn, replayed = status
                if lsn is not None:
                    self.on_event(
                        Progress(
                            "replay",
                            "replay",
                            max(0, wal.parse_lsn(lsn) - start_lsn),
                            None,
                            current=f"replayed to {iso(replayed)} (target {iso(target)})",
                        )
                    )
                if not in_recovery:
                    break
            if self.log.promoted():
                break
            self._fail_if_dead(started=True)
            self._check_cancel()
            time.sleep(POLL_SECONDS)
        assert self.state is not None
        # Seen within a poll of the promotion: the end of the RTO (read-write connections).
        self.state.accepting_at = self.state.accepting_at or utcnow()
        self._forward_log()
        stop = self.log.find(_STOP_BEFORE)
        return (
            f"stopped before transaction {stop.group(1)} of {iso(_log_time(stop.group(2)))}"
            if stop
            else "recovery ended"
        )

    def _verify(self) -> str:
        assert self.state is not None and self.plan is not None
        target = self.request.target
        stop = self.log.find(_STOP_BEFORE)
        if stop is None:
            raise VerificationError(
                "the server log has no 'recovery stopping before' line: the server did not "
                f"stop at the target; inspect {self.log.path} before using this copy"
            )
        self.state.stop_point = _log_time(stop.group(2))
        last = self.log.find(_LAST_XACT)
        self.state.recovery_end = _log_time(last.group(1)) if last else None
        timeline = self.log.find(_NEW_TIMELINE)
        self.state.timeline = int(timeline.group(1)) if timeline else None
        status = self._poll_sql()
        if status is not None:
            in_recovery, _, replayed = status
            if in_recovery:
                raise VerificationError("the server is still in recovery: it did not promote")
            self.state.recovery_end = replayed or self.state.recovery_end
        else:
            self._notice(
                "warn",
                f"could not connect to port {self.request.port} to double-check over SQL; "
                "the server log confirms the recovery",
                "verify",
            )
            if not self.log.promoted():
                raise VerificationError(
                    f"the server log does not show the promotion: see {self.log.path}"
                )
        if self.state.stop_point <= target:
            raise VerificationError(
                f"recovery stopped at a transaction of {iso(self.state.stop_point)}, not after the "
                f"target {iso(target)}"
            )
        end = self.state.recovery_end
        if end is not None and end > target:
            raise VerificationError(
                f"the last replayed transaction is from {iso(end)}, after the target {iso(target)}"
            )
        recovered_to = end or self.plan.start
        self.state.rpo_seconds = max(0.0, (self.state.incident - recovered_to).total_seconds())
        reached = (
            f"promoted on timeline {self.state.timeline or '?'}: last transaction {iso(end)}, "
            f"first one not replayed {iso(self.state.stop_point)}"
        )
        if not self.request.drill:
            return reached
        checks = self._validate()
        failed = [c for c in checks if not c["ok"]]
        if failed:
            raise VerificationError(
                f"{reached}; but the recovered {self.config.database.name} fails validation: "
                f"{failed[0]['name']}: {failed[0]['detail']}"
            )
        return f"{reached}; {len(checks)} validation checks passed"

    def _validate(self) -> list[dict[str, Any]]:
        """A drill's restore-test checks (runbook.yaml restore_test: required tables, smoke
        queries) on the recovered copy of the production database. No row counts to compare:
        a base backup records none, and the copy is of another moment anyway."""
        assert self.state is not None
        rt = self.config.restore_test
        db = dataclasses.replace(self.config.database, host="localhost", port=self.request.port)
        # as the app role, never the admin: the checks run inside what the backup made
        with database.connect(db, db.name) as conn:
            checks, _ = restore_test.validate_restored(
                conn, rt.required_tables, None, rt.smoke_queries
            )
        self.state.validation = [c.to_json() for c in checks]
        return self.state.validation

    # ------------------------------------------------------------ the server

    def _server_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def _forward_log(self) -> None:
        for line in self.log.read_new():
            if line.strip():
                self.on_event(LogLine("postgres", line, "replay"))

    def _fail_if_dead(self, *, started: bool) -> None:
        if started and self._server_pid() is not None:
            return
        self._forward_log()
        fatal = self.log.fatal()
        if started or fatal:
            assert self.state is not None
            self.state.server_running = False
            # wal-fetch's own error line says why a segment could not be restored.
            ours = [ln for ln in self.log.lines if ln.startswith("preskool-dr: error: ")]
            reason = "; ".join([*fatal, *ours[:1]]) or "no FATAL line in its log"
            hint = ""
            if any("before configured recovery target" in f for f in fatal):
                hint = " - the archive ends before the target (a missing WAL segment?)"
            elif any("could not restore file" in f for f in fatal):
                hint = " - an archived WAL segment is damaged or unreadable"
            raise DrError(
                f"the server stopped during recovery: {reason}{hint}; nothing is running; "
                f"log: {self.log.path}; remove {self.data_dir} before trying again"
            )

    def _poll_sql(self) -> tuple[bool, str | None, datetime | None] | None:
        """(in recovery, replay LSN, last replayed transaction time), or None when the
        server does not accept connections (yet: before consistency; or pg_hba)."""
        if not any(_ACCEPTS_CONNECTIONS in line for line in self.log.lines):
            return None
        try:
            if self._conn is None or self._conn.closed:
                db = dataclasses.replace(
                    self.config.database, host="localhost", port=self.request.port
                )
                self._conn = database.connect(db, admin=True, connect_timeout=5)
            row = self._conn.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                "pg_last_xact_replay_timestamp()"
            ).fetchone()
        except (DrError, psycopg.Error):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None
        assert row is not None
        return bool(row[0]), row[1], row[2]


def run_pitr(
    config: Config,
    request: PitrRequest,
    *,
    on_event: EventSink = ignore_events,
    cancel: threading.Event | None = None,
) -> PitrState:
    """Recover into request.data_dir and leave that server running, promoted."""
    return PitrRun(config, request, on_event=on_event, cancel=cancel).run()


# ---------------------------------------------------------------- files


class _CountingReader:
    """A file wrapper that reports bytes read and honours cancel, for tarfile's stream mode."""

    def __init__(self, raw: IO[bytes], meter: ProgressMeter, cancel: threading.Event) -> None:
        self._raw = raw
        self._meter = meter
        self._cancel = cancel

    def read(self, size: int = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled("extraction cancelled")
        data = self._raw.read(size)
        self._meter.add(len(data))
        return data


def _extract_tar(path: Path, dest: Path, on_event: EventSink, cancel: threading.Event) -> None:
    meter = ProgressMeter(on_event, "extract", f"extract {path.name}", path.stat().st_size)
    # The "data" filter (Python 3.11.4+) refuses members that would land outside `dest`.
    options: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with path.open("rb") as raw:
            reader = cast(IO[bytes], _CountingReader(raw, meter, cancel))
            # gzip.GzipFile, not tarfile's "r|gz": pg_basebackup's pg_wal.tar.gz is several
            # gzip members, and tarfile's stream mode reads only the first (an empty one).
            with (
                gzip.GzipFile(fileobj=reader, mode="rb") as unzipped,
                tarfile.open(fileobj=unzipped, mode="r|") as archive,
            ):
                # Members are MD5-verified pg_basebackup output.
                archive.extractall(dest, **options)  # noqa: S202
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DrError(f"cannot extract {path} into {dest}: {exc}") from None
    meter.finish()


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(root):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
