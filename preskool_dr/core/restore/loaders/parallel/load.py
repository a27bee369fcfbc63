"""The parallel load itself: one `Restore` runs the scanner in a thread, one thread per
session, the watchdog's server check, and in the calling thread the scheduling loop, the
progress events and the failure handling (the package's docstring tells the whole story)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import psycopg

from preskool_dr.core.base import deflate
from preskool_dr.core.base.errors import Cancelled, NotFoundError
from preskool_dr.core.base.events import EventSink, LogLine, Notice, Progress, ignore_events
from preskool_dr.core.restore.loaders.parallel.feed import ScanFeed
from preskool_dr.core.restore.loaders.parallel.jobs import COPY, Job, Stopped
from preskool_dr.core.restore.loaders.parallel.scanner import Unsure
from preskool_dr.core.restore.loaders.parallel.scheduler import Scheduler
from preskool_dr.core.restore.loaders.parallel.sessions import (
    Copier,
    Psql,
    SessionGone,
    copy_error,
    stop_backends,
)
from preskool_dr.core.restore.loaders.parallel.watchdog import WATCHDOG_SECONDS, Watchdog
from preskool_dr.core.restore.loaders.stream import (
    PROGRESS_EVERY,
    READ_CHUNK,
    RestoreError,
    StreamResult,
    stream_restore,
)

PROBE_BYTES = 1 << 20  # decompressed bytes `unsupported_reason` looks at
# SQL bytes of one COPY part. Parts cost little each, but two sessions on one table load it
# no faster than one session on each of two tables: only a table that would hold up the load
# alone is worth cutting (measured in docs/PERFORMANCE.md's data: 8 MiB parts were slower).
SPLIT_BYTES = 128 << 20
JOIN_GRACE = 30.0  # seconds a thread may take to stop once everything was told to stop


def resolve_jobs(configured: int) -> int:
    """`restore.jobs`: 0 means one session per CPU core this process may use."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class SplitUnsure(RestoreError):
    """The scanner met text it cannot split with certainty after part of the file was
    loaded: the database holds a partial load (a fresh one can take the serial stream)."""


def unsupported_reason(backup: Path) -> str | None:
    """Why `backup` cannot be split (it is not pg_dump's plain output of one database), or
    None. Reads only the head of the file; the load itself still checks everything."""
    try:
        with backup.open("rb") as f:
            head = deflate.decompressor().decompress(f.read(READ_CHUNK), PROBE_BYTES)
    except (OSError, deflate.error) as exc:
        return f"cannot read its start ({exc})"
    if not head.startswith(b"--\n-- PostgreSQL database dump\n--\n"):
        return "it does not start like pg_dump's plain output"
    # No `\connect` (or other meta-command) reason: no loader runs one, so there is nothing
    # to fall back to; the sessions refuse it (sessions.Psql).
    return None


class Restore:
    """Shared state of one parallel load. The calling thread schedules jobs and is the only
    one that calls `on_event`; the scanner (feed.py) and one thread per session do the
    work."""

    def __init__(
        self,
        backup: Path,
        env: Mapping[str, str],
        jobs: int,
        on_event: EventSink,
        step_id: str,
        cancel: threading.Event,
        split_bytes: int,
        watchdog: float = WATCHDOG_SECONDS,
    ) -> None:
        self.backup = backup
        self.name = backup.name
        try:
            self.total = backup.stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"backup {backup} does not exist: check the path") from None
        self.token = secrets.token_hex(6)
        self.appname = f"preskool-dr-restore-{self.token}"
        self.env = {**env, "PGAPPNAME": self.appname}
        self.jobs = max(1, jobs)
        self.split_bytes = split_bytes if self.jobs > 1 else 0  # one session gains nothing
        self.on_event = on_event
        self.step_id = step_id
        self.cancel = cancel
        self.cond = threading.Condition()  # an RLock inside: helpers may nest
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.sessions: list[Psql] = []
        self.assigned: dict[Psql, Job | None] = {}
        self.copiers: dict[Psql, Copier] = {}  # each session's COPY connection
        self.threads: list[threading.Thread] = []
        self.plan = Scheduler()
        self.feed = ScanFeed(
            backup,
            self.env,
            self.token,
            self.appname,
            self.split_bytes,
            self.plan,
            self.cond,
            self.stop,
            self._start_workers,
        )
        self.log: deque[str] = deque(maxlen=2000)
        self._last_at = 0.0
        self._last_done = 0
        self.rate = 0.0
        self.watchdog = Watchdog(watchdog, self.env, self.appname)

    # ------------------------------------------------------------ the worker threads

    def _start_workers(self, preamble: bytes) -> None:
        """Connect the sessions while the schema loads; they get work once it has."""
        with self.cond:
            for number in range(1, self.jobs + 1):
                session = Psql(self.env, self.token, f"session {number}")
                session.write(preamble)
                self.sessions.append(session)
                self.assigned[session] = None
                thread = threading.Thread(
                    target=self._work, args=(session,), name=f"restore-{number}", daemon=True
                )
                self.threads.append(thread)
                thread.start()

    def _scan(self) -> None:
        try:
            self.feed.scan()
        except Stopped:
            pass
        except SessionGone as gone:
            self.fail(self.feed.session_error(gone.session, None))
        except BaseException as exc:
            self.fail(exc)

    def _work(self, session: Psql) -> None:
        while True:
            with self.cond:
                while self.assigned[session] is None and not self.stop.is_set():
                    self.cond.wait()
                job = self.assigned[session]
                if self.stop.is_set() or job is None:
                    return
            started = time.monotonic()
            try:
                if job.group == COPY:
                    copier = self._copier(session)
                    copier.load(job, self.backup, self.name, self.split_bytes, self.stop)
                else:
                    session.write(job.settings + b"".join(job.text))
                    session.sync(self.stop)
            except Stopped:
                return
            except SessionGone:
                self.fail(self.feed.session_error(session, job))
                return
            except psycopg.Error as exc:
                self.fail(copy_error(job, self.name, exc))
                return
            except BaseException as exc:
                self.fail(exc)
                return
            with self.cond:
                job.seconds = time.monotonic() - started
                self.plan.finished(job, session)
                self.log.append(_done_line(job))
                self.assigned[session] = None
                self.cond.notify_all()

    def _copier(self, session: Psql) -> Copier:
        copier = self.copiers.get(session)
        if copier is None:
            copier = Copier(self.env, self.appname, self.feed.preamble)
            with self.cond:
                self.copiers[session] = copier
        return copier

    def fail(self, exc: BaseException) -> None:
        """The first failure stops everything; later ones are its echoes."""
        with self.cond:
            if self.stop.is_set():
                return
            self.failure = exc
            self.stop.set()
            self.cond.notify_all()

    # ------------------------------------------------------------ the calling thread

    def run(self) -> StreamResult:
        started = time.monotonic()
        scanner = threading.Thread(target=self._scan, name="restore-scan", daemon=True)
        scanner.start()
        watcher = threading.Thread(
            target=self.watchdog.watch_server, args=(self.stop,), name="restore-watch", daemon=True
        )
        watcher.start()
        try:
            self._progress(force=True)
            while True:
                with self.cond:
                    if self.failure is not None or self.cancel.is_set():
                        break
                    self._check_serial()
                    self._assign()
                    if self._all_done():
                        break
                    self.cond.wait(0.05)
                    self._check_watchdog()
                self._progress()
            if self.failure is None and not self.cancel.is_set():
                self._close_sessions()
        finally:
            self.stop.set()
            with self.cond:
                self.cond.notify_all()
            for session in self._all_sessions():
                session.kill()
            if self.failure is not None or self.cancel.is_set():
                with self.cond:
                    copiers = list(self.copiers.values())
                for copier in copiers:  # a COPY waiting on the server ends: its thread stops
                    with contextlib.suppress(psycopg.Error):
                        copier.conn.cancel_safe(timeout=5)
            for thread in (scanner, watcher, *self.threads):
                thread.join(JOIN_GRACE)
                if thread.is_alive():  # a daemon: it cannot keep the process alive
                    self.log.append(f"thread {thread.name} did not stop in {JOIN_GRACE:.0f} s")
            for session in self._all_sessions():  # also one the scanner started meanwhile
                session.kill()
            for copier in self.copiers.values():
                copier.close()
            self._drain_log()
        if self.cancel.is_set():
            stop_backends(self.env, self.appname)
            raise Cancelled(
                f"restore of {self.name} cancelled: every psql was stopped and the database "
                "holds a partial load; run the restore again to start it over"
            )
        if self.failure is not None:
            stop_backends(self.env, self.appname)
            raise self.failure
        self._progress(force=True, final=True)
        return StreamResult(
            compressed_bytes=self.total,
            sql_bytes=self.feed.sql_bytes,
            tables_loaded=tuple(job.label for job in self.plan.copies if job.part == 1),
            seconds=time.monotonic() - started,
        )

    def _assign(self) -> None:
        """Under the lock: idle sessions get the jobs that may start now."""
        post_data = self.feed.data_scanned and self.feed.serial_done
        for session in self.sessions:
            if self.assigned[session] is not None:
                continue
            job = self.plan.start_next(session, post_data=post_data)
            if job is None:
                return
            self.assigned[session] = job
            self.cond.notify_all()

    def _check_serial(self) -> None:
        serial = self.feed.serial
        if serial is None or not self.feed.serial_closed or self.feed.serial_done:
            return
        if serial.proc.poll() is None:
            return
        serial.output.join()
        if serial.proc.returncode != 0:
            self.fail(self.feed.session_error(serial, None))
        else:
            self.feed.serial_done = True

    def _all_done(self) -> bool:
        return self.feed.scan_done and self.feed.serial_done and self.plan.idle

    def _close_sessions(self) -> None:
        for session in self.sessions:
            session.close()
        seconds = self.watchdog.seconds
        for session in self.sessions:
            code = session.wait(self.cancel, timeout=seconds)
            if code == -2:
                self.fail(
                    RestoreError(
                        f"restore of {self.name} stopped: psql {session.role} did not exit for "
                        f"{seconds:.0f} s after its last input ({self.watchdog.server_note}) - "
                        "every table is loaded; check the server, then run the restore again"
                    )
                )
                return
            if code not in (0, -1):
                self.fail(self.feed.session_error(session, None))

    def _check_watchdog(self) -> None:
        """Under the lock: fail the load when nothing has moved for the watchdog's seconds
        (what counts as moving: Watchdog.stalled). The failure stops every session, as any
        failure does."""
        failure = self.watchdog.stalled(self.name, self.feed, self.plan, self.assigned)
        if failure is not None and not self.stop.is_set():
            self.fail(failure)

    def _all_sessions(self) -> list[Psql]:
        return [s for s in (self.feed.schema, self.feed.serial, *self.sessions) if s is not None]

    def _drain_log(self) -> None:
        while self.log:
            self.on_event(LogLine("psql", self.log.popleft(), self.step_id))
        for session in self._all_sessions():
            while session.notes:
                self.on_event(LogLine("psql", session.notes.popleft(), self.step_id))

    def _progress(self, *, force: bool = False, final: bool = False) -> None:
        """Throttled Progress in compressed bytes; 100% only once every session is done."""
        now = time.monotonic()
        if not force and now - self._last_at < PROGRESS_EVERY:
            return
        with self.cond:
            scanned = self.feed.scan_offset
            done = self.plan.loaded(scanned)
            current = self.plan.doing(
                data_scanned=self.feed.data_scanned, sessions=bool(self.sessions)
            )
            items = self.plan.copies_done
        if self._last_at and now > self._last_at:
            instant = (done - self._last_done) / (now - self._last_at)
            self.rate = instant if not self.rate else 0.7 * self.rate + 0.3 * instant
        self._last_at, self._last_done = now, done
        self._drain_log()
        self.on_event(
            Progress(
                self.step_id,
                "load",
                self.total if final else min(done, max(0, self.total - 1)),
                self.total,
                rate=max(0.0, self.rate),
                current=current,
                items_done=items,
            )
        )


def _done_line(job: Job) -> str:
    """The log line of a finished job."""
    if job.group == COPY:
        part = f"part {job.part}, " if job.cut or job.part > 1 else ""
        return f"COPY {job.label}: {part}{job.size / 2**20:,.1f} MiB loaded in {job.seconds:.1f} s"
    return f"{job.label} done in {job.seconds:.1f} s"


def parallel_restore(
    backup: Path,
    env: Mapping[str, str],
    *,
    jobs: int,
    on_event: EventSink = ignore_events,
    step_id: str = "restore",
    cancel: threading.Event | None = None,
    split_bytes: int = SPLIT_BYTES,
    watchdog: float = WATCHDOG_SECONDS,
) -> StreamResult:
    """Load `backup` (pg_dump plain SQL, gzip) into the database `env` names (PGHOST, PGPORT,
    PGUSER, PGDATABASE; PGPASSWORD comes from this process's environment) over `jobs`
    sessions; with more than one, a table's rows beyond `split_bytes` (0: never) load in
    parts over several sessions. Same errors as `stream_restore`: RestoreError on the first
    psql error (every session is then stopped), VerificationError on corrupt or truncated
    gzip data, Cancelled when `cancel` is set. No psql is left running.

    Text the scanner cannot split with certainty (see core/storage/sql_lexer.py) sends the whole
    file through `stream_restore` instead when it shows before anything was loaded (in the
    pre-data, where it mostly would; the result's `serial_reason` says why); later it stops
    the load with a SplitUnsure (a RestoreError). A load in
    which nothing moves for `watchdog` seconds fails with a message naming what it waited
    for, instead of waiting forever."""
    cancel = cancel or threading.Event()
    restore = Restore(backup, env, jobs, on_event, step_id, cancel, split_bytes, watchdog)
    try:
        return restore.run()
    except Unsure as exc:
        unsure = exc
    where = f"line {unsure.line:,} of {backup.name}"
    if unsure.loaded:
        raise SplitUnsure(
            f"restore stopped at {where}: the parallel loader cannot split it with "
            f"certainty ({unsure.reason}) and part of it is already loaded - the database "
            "holds a partial load; restore it with restore.method: serial in runbook.yaml",
            line=unsure.line,
            error=unsure.reason,
        ) from None
    why = f"at {where} the parallel loader cannot split it with certainty ({unsure.reason})"
    on_event(
        Notice("warn", f"{backup.name} is loaded serially: {why}; nothing had been loaded", step_id)
    )
    result = stream_restore(backup, env, on_event=on_event, step_id=step_id, cancel=cancel)
    return dataclasses.replace(result, serial_reason=why)
