"""The custom-format companion: `pg_dump -Fc` beside the plain backup, `pg_restore -j N` in
step 6.

The plain `preskool-backup-<stamp>.sql.gz` stays the backup of record (the runbook's
`gunzip | psql` restores it). `backup --format custom` also writes
`preskool-backup-<stamp>.dump` from the same snapshot, with its own `.md5`; pg_restore can
load its tables and build its indexes in parallel, which plain SQL cannot offer psql.
The companion is only used after its MD5 matched the one the plain backup's .meta.json
recorded and pg_restore could read its table of contents; otherwise step 6 falls back to
the plain file.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

from preskool_dr.core.backup.companion import read_toc
from preskool_dr.core.base import procs
from preskool_dr.core.base.errors import Cancelled, DrError, NotFoundError
from preskool_dr.core.base.events import EventSink, LogLine, Notice, Progress, ignore_events
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.loaders.parallel import stop_backends
from preskool_dr.core.restore.loaders.stream import (
    PROGRESS_EVERY,
    RestoreError,
    StreamResult,
    server_gone,
)
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.meta import read_meta

# pg_restore writes `pg_restore:`, ` ` and its message in separate writes to unbuffered
# stderr, so the -j workers' lines interleave: `pg_restore: pg_restore: processing data for
# table "a"`, `pg_restore:pg_restore:  processing data for table "a"` or ` processing data
# for table "a"`, then `processing data for table "b"`. Every line is read without any
# number of prefixes and spaces before its message. The level of an error is one more such
# write: `error: error: could not ...` reads as one `error: could not ...`.
_PREFIXES = re.compile(r"^(?:pg_restore:|\s)+")
_ERROR_LEVEL = re.compile(r"^(?:error:\s*)+")
_ITEM = re.compile(r"^(?:processing|finished) item (\d+) ")
_LAUNCH = re.compile(r"^launching item (\d+) (.+)$")
_ACTION = re.compile(r"^(?:creating|executing|processing data for table) (?P<what>.+)$")
_DATA_TABLE = re.compile(r'^processing data for table "(?P<table>.+)"$')
_ERROR = re.compile(r"^error: (?P<msg>.*)$")
_FROM_ENTRY = re.compile(r"^from TOC entry (?P<entry>.*)$")


def _conninfo_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def usable_companion(
    backup: Path,
    backup_md5: str,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = StepId.RESTORE,
    cancel: threading.Event | None = None,
    hashed: checksum.VerifyResult | None = None,
) -> checksum.VerifyResult | None:
    """The check of the custom-format companion of `backup` (whose MD5 is `backup_md5`)
    when it may be loaded; None otherwise, with a Notice saying why not.

    It may be loaded when its MD5 is the one `backup`'s .meta.json recorded when both were
    written (the meta must describe `backup`: record `backup_md5`) and pg_restore can read
    it. Its own `.md5` sidecar is not enough: whoever can replace the companion can replace
    its sidecar. A backup whose meta records no companion MD5 (older versions) restores
    from the plain file. `hashed`: the companion's MD5 as another reader of this very file
    found it (a load started early), taken instead of reading it again."""
    path = companion_path(backup)
    if not path.is_file():
        return None
    meta = read_meta(backup)
    result = None
    if meta is None:
        problem = f"{backup.name} has no readable .meta.json that records its MD5"
    elif meta.md5 != backup_md5:
        problem = (
            f"the .meta.json beside {backup.name} describes another file (MD5 {meta.md5}, "
            f"the backup's is {backup_md5})"
        )
    elif meta.companion_md5 is None:
        problem = (
            f"{backup.name}'s .meta.json records no MD5 for it (a backup from an older "
            "version), and its own .md5 sidecar alone is not trusted"
        )
    else:
        result = hashed or checksum.verify_file(
            path,
            meta.companion_md5,
            on_event=on_event,
            step_id=step_id,
            cancel=cancel,
            check_gzip=False,
        )
        problem = None
        if result.actual_md5 != meta.companion_md5:
            problem = (
                f"its MD5 {result.actual_md5} is not the {meta.companion_md5} recorded in "
                f"{meta_path(backup).name}"
            )
        elif result.identity is None:
            problem = "it changed while it was read"
    if problem is None:
        try:
            read_toc(path)
        except DrError as exc:
            problem = str(exc)
    if problem is not None or result is None:
        on_event(
            Notice(
                "warn",
                f"custom-format companion {path.name} not used ({problem}); "
                "restoring the plain backup",
                step_id,
            )
        )
        return None
    on_event(Notice("info", f"using the custom-format companion {path.name}", step_id))
    return result


# ---------------------------------------------------------------- restore


class _Verbose:
    """Reads pg_restore's --verbose lines (stderr) in a thread; the calling thread turns
    them into progress: items done of the TOC's total, the table being loaded."""

    def __init__(self, proc: subprocess.Popen[bytes], parallel: bool) -> None:
        self.parallel = parallel
        self.done_ids: set[int] = set()
        self.actions = 0  # serial mode: one `creating`/`processing data` line per item
        self.running: dict[int, str] = {}
        self.current: str | None = None
        self.tables: list[str] = []
        self.lines: deque[str] = deque(maxlen=2000)  # for the log panel
        self.tail: deque[str] = deque(maxlen=200)  # for the error message
        self._lock = threading.Lock()
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Iterator[bytes]) -> None:
        for raw in stream:
            line = _PREFIXES.sub("", procs.redact(raw.decode("utf-8", "replace").rstrip("\r\n")))
            line = _ERROR_LEVEL.sub("error: ", line)
            with self._lock:
                self._take(line)

    def _take(self, line: str) -> None:
        self.tail.append(line)
        self.lines.append(line)
        if match := _ITEM.match(line):
            self.done_ids.add(int(match[1]))
            self.running.pop(int(match[1]), None)
        elif match := _LAUNCH.match(line):
            self.running[int(match[1])] = match[2]
        elif match := _ACTION.match(line):
            self.actions += 1
            self.current = match["what"].strip('"')
        if match := _DATA_TABLE.match(line):
            self.tables.append(match["table"])

    def snapshot(self) -> tuple[int, str | None, int]:
        with self._lock:
            done = len(self.done_ids) if self.parallel else self.actions
            current = self.current
            if self.parallel and self.running:
                current = ", ".join(desc.split(" ")[-1] for _, desc in sorted(self.running.items()))
            return done, current, len(self.tables)

    def join(self) -> None:
        self._thread.join(timeout=5)

    def failure(self, code: int, dump: Path) -> RestoreError:
        lines = list(self.tail)
        errors = [m["msg"] for t in lines if (m := _ERROR.match(t))]
        entry = next((m["entry"] for t in lines if (m := _FROM_ENTRY.match(t))), None)
        command = next(
            (t.removeprefix("Command was: ") for t in lines if t.startswith("Command was: ")),
            "",
        )
        first = errors[0] if errors else (lines[-1] if lines else f"exit status {code}")
        if "connection to server" in first and not entry:
            return RestoreError(
                f"pg_restore could not connect: {first} - check that the server is up, "
                "DB_HOST/DB_PORT, DB_USER and PGPASSWORD"
            )
        if gone := server_gone(lines):
            return gone
        where = f" at TOC entry {entry}" if entry else ""
        return RestoreError(
            f"pg_restore stopped{where} of {dump.name}: {' '.join(first.split())} - the "
            "database holds a partial load; fix the cause or restore the plain .sql.gz "
            "(restore.method: parallel or serial), then run the restore again",
            statement=" ".join(command.split())[:240],
            error=" ".join(first.split()),
        )


def custom_restore(
    dump: Path,
    env: Mapping[str, str],
    *,
    jobs: int,
    on_event: EventSink = ignore_events,
    step_id: str = StepId.RESTORE,
    cancel: threading.Event | None = None,
) -> StreamResult:
    """`pg_restore -j jobs --exit-on-error` of `dump` into the database `env` names, with
    Progress in TOC items (done of total) several times a second. RestoreError on the first
    error, Cancelled when `cancel` is set; pg_restore and its workers never outlive this."""
    try:
        size = dump.stat().st_size
    except FileNotFoundError:
        raise NotFoundError(f"backup {dump} does not exist: check the path") from None
    cancel = cancel or threading.Event()
    jobs = max(1, jobs)
    appname = f"preskool-dr-pg_restore-{os.getpid()}"
    argv = [
        "pg_restore",
        "--verbose",
        "--exit-on-error",
        "--no-password",
        f"--jobs={jobs}",
        # a conninfo, so a database named like `host=...` stays a name
        f"--dbname=dbname={_conninfo_value(env.get('PGDATABASE', ''))}",
        str(dump),
    ]
    started = time.monotonic()
    try:
        proc = procs.spawn(argv, env={**env, "PGAPPNAME": appname}, stdout=subprocess.DEVNULL)
    except OSError as exc:
        raise DrError(
            f"cannot start pg_restore: {exc.strerror}: install the PostgreSQL client tools "
            "(postgresql-client) so that pg_restore is on PATH"
        ) from None
    verbose = _Verbose(proc, parallel=jobs > 1)
    rate = 0.0
    last_at, last_done = started, 0
    try:
        try:
            total = len(read_toc(dump))  # the progress total, read while pg_restore starts
        except BaseException:
            procs.terminate(proc)
            stop_backends(env, appname)  # its sessions may have begun
            raise
        while True:
            done, current, tables = verbose.snapshot()
            now = time.monotonic()
            instant = (done - last_done) / (now - last_at) if now > last_at else 0.0
            rate = instant if not rate else 0.7 * rate + 0.3 * instant
            last_at, last_done = now, done
            _log(verbose, on_event, step_id)
            on_event(
                Progress(
                    step_id,
                    "load",
                    min(done, max(0, total - 1)),
                    total,
                    rate=rate,
                    current=current,
                    items_done=tables,
                    unit="items",
                )
            )
            if cancel.is_set():
                procs.terminate(proc)
                stop_backends(env, appname)
                raise Cancelled(
                    f"restore of {dump.name} cancelled: pg_restore was stopped and the "
                    "database holds a partial load; run the restore again to start it over"
                )
            try:
                code = proc.wait(PROGRESS_EVERY)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            procs.terminate(proc)
        verbose.join()
    _log(verbose, on_event, step_id)
    if code != 0:
        stop_backends(env, appname)
        raise verbose.failure(code, dump)
    _, _, tables = verbose.snapshot()
    on_event(Progress(step_id, "load", total, total, rate=rate, items_done=tables, unit="items"))
    return StreamResult(
        compressed_bytes=size,
        sql_bytes=0,
        tables_loaded=tuple(verbose.tables),
        seconds=time.monotonic() - started,
    )


def _log(verbose: _Verbose, on_event: EventSink, step_id: str) -> None:
    """Forward pg_restore's lines not shown yet (the CLI skips them, the TUI logs them);
    the event names its source, so the lines come without their `pg_restore: `."""
    while verbose.lines:
        on_event(LogLine("pg_restore", verbose.lines.popleft(), step_id))
