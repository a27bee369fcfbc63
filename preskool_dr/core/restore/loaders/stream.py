"""Step 6: stream a plain-SQL gzip backup into psql, with progress, table tracking and
the first error reported as the operator needs it (line, statement, psql's message).

This is `gunzip -c F | psql -v ON_ERROR_STOP=1` done in one process: zlib-ng (base/deflate.py)
decompresses (it releases the GIL, as gunzip runs beside psql), psql reads a 1 MiB pipe.
Nothing here looks at data rows one by one: COPY blocks are found with `bytes.find` on
whole chunks, so the load costs what the pipe costs.

No psql meta-command from a backup runs (core/storage/dumptext.py): psql starts under a
`\\restrict` key of its own, which the backup cannot know, so it refuses every backslash
command; and a backslash line outside COPY data stops the load before it is written to
psql, naming its line. pg_dump's own `\\restrict`/`\\unrestrict` lines are blanked.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preskool_dr.core.base import age, deflate
from preskool_dr.core.base.errors import Cancelled, DrError, NotFoundError, VerificationError
from preskool_dr.core.base.events import EventSink, Progress, ignore_events
from preskool_dr.core.base.procs import close_child, spawn, terminate
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.loaders.psql import PsqlOutput, restrict_line
from preskool_dr.core.storage.dumptext import DumpText, Finding, MetaCommandError

# -X: no ~/.psqlrc (it could turn on \timing, pagers or AUTOCOMMIT off); `-f -` makes psql
# name the input line of an error (`psql:<stdin>:N:`). No -q: the command tags it prints
# ("COPY 48211", "ALTER TABLE") are the operator's view of what is happening.
PSQL_ARGV = ("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", "-")
READ_CHUNK = 1 << 20  # compressed bytes per read
PIECE = 1 << 20  # decompressed bytes per write: bounds memory even for a gzip bomb
PIPE_SIZE = 1 << 20  # the Linux maximum for unprivileged processes by default
RECENT_BYTES = 8 << 20  # SQL kept to quote the failing statement; psql lags < 2 pieces
PROGRESS_EVERY = 0.2  # seconds: >= 4 updates a second while data flows
MAX_STATEMENT_CHARS = 240

PSQL_ERROR = re.compile(
    r"^psql:(?P<src>.*?):(?P<line>\d+): (?P<level>ERROR|FATAL|PANIC|error):\s*(?P<msg>.*)$"
)
_COPY_CONTEXT = re.compile(r"^CONTEXT:\s+COPY .*?, line (\d+)")
# What psql says when the server ended its session (a crash, an immediate shutdown,
# pg_terminate_backend): the backup is not at fault, so "choose another backup" would mislead.
_SERVER_GONE = (
    "server closed the connection unexpectedly",
    "connection to server was lost",
    "terminating connection",
    "could not receive data from server",
    "no connection to the server",
)
_PSQL_PREFIX = re.compile(r"^psql:.*?:\d+: ")


@dataclass(frozen=True)
class StreamResult:
    compressed_bytes: int
    sql_bytes: int
    tables_loaded: tuple[str, ...]
    seconds: float
    # set when the parallel loader handed the whole file to the serial stream: why
    serial_reason: str | None = None


class RestoreError(DrError):
    """psql stopped the load: `line` is the input line psql names, `statement` the failing
    statement (trimmed to one line), `error` psql's ERROR text."""

    def __init__(
        self, message: str, *, statement: str = "", line: int | None = None, error: str = ""
    ) -> None:
        super().__init__(message)
        self.statement = statement
        self.line = line
        self.error = error


def server_gone(psql_stderr: list[str]) -> RestoreError | None:
    """The load stopped because the server went away (psql's stderr says so): the error
    says that, and that the way on is to resume the run once the server is back."""
    said = next((t for t in psql_stderr if any(m in t for m in _SERVER_GONE)), None)
    if said is None:
        return None
    reason = one_line(_PSQL_PREFIX.sub("", said))
    return RestoreError(
        f"the database server went away during the load ({reason}); the backup is not at "
        "fault: once the server is back, resume the run (`preskool-dr restore --resume "
        "RUN_ID`; in the TUI, R on step 6 or its resume offer) to load it again",
        error=reason,
    )


class _RecentSql:
    """The last few MiB of SQL written, to quote the statement psql stopped at."""

    def __init__(self) -> None:
        self._pieces: deque[tuple[int, bytes]] = deque()  # (newlines before it, bytes)
        self._size = 0

    def add(self, newlines_before: int, piece: bytes) -> None:
        self._pieces.append((newlines_before, piece))
        self._size += len(piece)
        while self._size - len(self._pieces[0][1]) >= RECENT_BYTES:
            self._size -= len(self._pieces.popleft()[1])

    def lines(self, first: int, last: int) -> dict[int, str]:
        """Complete lines numbered first..last that are still held."""
        if not self._pieces:
            return {}
        start_line = self._pieces[0][0] + 1
        parts = b"".join(p for _, p in self._pieces).split(b"\n")
        # parts[0] may be the tail of a line that began before the oldest piece
        return {
            start_line + k: _text(parts[k])
            for k in range(1, len(parts) - 1)
            if first <= start_line + k <= last
        }

    def statement_ending_at(self, line: int) -> str:
        """pg_dump separates statements with blank or `--` lines and ends them with `;`;
        COPY data ends with `\\.`."""
        held = self.lines(line - 50, line)
        if line not in held:
            return ""
        collected = [held[line]]
        k = line - 1
        while k in held and held[k].strip() and not held[k].startswith(("--", "\\.")):
            if held[k].rstrip().endswith(";"):
                break
            collected.append(held[k])
            k -= 1
        return one_line(" ".join(reversed(collected)))


class _PsqlGone(Exception):
    """psql closed its input (it stopped on an error, or was stopped)."""


class _Load:
    def __init__(
        self,
        backup: Path,
        total: int,
        proc: subprocess.Popen[bytes],
        on_event: EventSink,
        step_id: str,
        cancel: threading.Event,
        identities: list[Any] | None = None,
    ) -> None:
        self.backup = backup
        self.identities = identities
        self.total = total
        self.proc = proc
        self.on_event = on_event
        self.step_id = step_id
        self.cancel = cancel
        self.tracker = DumpText(rewrite=True)
        self.recent = _RecentSql()
        self.output = PsqlOutput(proc)
        self.prefix_lines = 0  # lines written before the backup's first (`\restrict KEY`)
        self.sql_bytes = 0
        self.done = 0
        self.rate = 0.0
        self._last_at = 0.0
        self._last_done = 0
        assert proc.stdin is not None
        self.stdin = proc.stdin
        with contextlib.suppress(OSError, AttributeError):  # a smaller pipe only costs syscalls
            fcntl.fcntl(self.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def progress(
        self, *, force: bool = False, current: str | None = None, final: bool = False
    ) -> None:
        """Throttled Progress; 100% only once psql has finished (indexes come after the data)."""
        now = time.monotonic()
        if not force and now - self._last_at < PROGRESS_EVERY:
            return
        if self._last_at and now > self._last_at:
            instant = (self.done - self._last_done) / (now - self._last_at)
            self.rate = instant if not self.rate else 0.7 * self.rate + 0.3 * instant
        self._last_at, self._last_done = now, self.done
        self.output.drain(self.on_event, self.step_id)
        self.on_event(
            Progress(
                self.step_id,
                "load",
                self.total if final else min(self.done, max(0, self.total - 1)),
                self.total,
                rate=self.rate,
                current=current or self.tracker.current,
                items_done=len(self.tracker.finished),
            )
        )

    def pour(self) -> None:
        """Decompress member after member (like gunzip) and write into psql; an encrypted
        backup is decrypted on the way (`age -d | gunzip | psql`, in memory)."""
        with contextlib.ExitStack() as stack:
            f: Any = stack.enter_context(self.backup.open("rb"))
            if self.identities:
                f = stack.enter_context(age.Decryptor(f, self.identities, self.backup.name))
            inflater = deflate.decompressor()
            in_member = False  # the current member has had input but not its trailer
            members = read = 0
            while chunk := f.read(READ_CHUNK):
                read += len(chunk)
                data = chunk
                while data:
                    in_member = True
                    try:
                        out = inflater.decompress(data, PIECE)
                    except deflate.error as exc:
                        raise self._corrupt(read - len(data), members, str(exc)) from None
                    if inflater.eof:
                        members += 1
                        in_member = False
                        data = inflater.unused_data
                        inflater = deflate.decompressor()
                    else:
                        data = inflater.unconsumed_tail
                    self.done = read - len(data)
                    if out:
                        self.write(out)
        if not read:
            raise VerificationError(
                f"{self.backup.name} is empty: pick another backup (`preskool-dr list`)"
            )
        if in_member:
            raise VerificationError(
                f"{self.backup.name} ends in the middle of its gzip data (truncated at "
                f"{read:,} bytes): the load was stopped; pick another backup "
                "(`preskool-dr list`) and run the restore again"
            )
        self.end_of_text()

    def _corrupt(self, offset: int, members: int, reason: str) -> VerificationError:
        what = "is not gzip data" if members == 0 and offset == 0 else "is corrupt"
        return VerificationError(
            f"{self.backup.name} {what} at compressed byte {offset:,} ({reason}): the load was "
            f"stopped; check it with `preskool-dr verify` and restore another backup"
        )

    def restrict(self, on_event: EventSink, step_id: str) -> None:
        """Start psql under a `\\restrict` key the backup cannot know (see restrict_line)."""
        line = restrict_line(on_event, step_id)
        if line:
            self.stdin.write(line)
            self.prefix_lines = 1

    def write(self, piece: bytes) -> None:
        if self.cancel.is_set():
            raise _PsqlGone
        newlines = self.tracker.newlines
        self._send(newlines, self.tracker.feed(piece))
        self.sql_bytes += len(piece)
        self.progress()

    def end_of_text(self) -> None:
        """The text is over: a last line without a newline is judged (and sent) too."""
        self._send(self.tracker.newlines, self.tracker.finish())

    def _send(self, newlines: int, text: bytes) -> None:
        """Write `text` (the tracker's output) unless the tracker found a meta-command."""
        if self.tracker.found is not None:
            raise refused(self.backup.name, self.tracker.found)
        self.recent.add(newlines, text)
        try:
            self.stdin.write(text)
        except (BrokenPipeError, ConnectionResetError):
            raise _PsqlGone from None

    def finish(self) -> int:
        """All SQL written: close psql's input and wait while it builds indexes and keys."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.stdin.close()
        while True:
            try:
                return self.wait(PROGRESS_EVERY)
            except subprocess.TimeoutExpired:
                self.progress(current="indexes and constraints")

    def wait(self, timeout: float | None) -> int:
        code = self.proc.wait(timeout)
        self.output.join()
        self.output.drain(self.on_event, self.step_id)
        return code

    def failure(self, code: int) -> RestoreError:
        lines = list(self.output.stderr_tail)
        if gone := server_gone(lines):
            return gone
        for k, text in enumerate(lines):
            match = PSQL_ERROR.match(text)
            if match:
                return self._error_at(
                    int(match["line"]) - self.prefix_lines,
                    match["level"],
                    match["msg"],
                    lines[k + 1 :],
                )
        last = next((t for t in reversed(lines) if t.strip()), f"psql exited with status {code}")
        if last.startswith("psql: error:"):  # it never got to read the backup
            return RestoreError(
                f"psql could not connect: {one_line(last.removeprefix('psql: error:'))} - "
                "check that the server is up, DB_HOST/DB_PORT, DB_USER and PGPASSWORD"
            )
        return RestoreError(
            f"psql stopped with status {code} before the end of {self.backup.name}: "
            f"{one_line(last)} - the database holds a partial load; run the restore again"
        )

    def _error_at(self, line: int, level: str, message: str, after: list[str]) -> RestoreError:
        extra = [t for t in after if t.startswith(("DETAIL:", "HINT:", "CONTEXT:"))][:2]
        copy = self.tracker.copy_at(line)
        row = ""
        if copy is not None:
            statement = copy.header
            context = next((m for t in extra if (m := _COPY_CONTEXT.match(t))), None)
            if context:
                row_line = copy.start_line + int(context.group(1))
                held = self.recent.lines(row_line, row_line).get(row_line)
                row = f"; data row at input line {row_line}" + (
                    f": {one_line(held)}" if held else ""
                )
        else:
            statement = self.recent.statement_ending_at(line)
        error = one_line(f"{level}: {message}")
        details = "".join(f" ({one_line(t)})" for t in extra)
        return RestoreError(
            f"restore stopped at input line {line:,} of {self.backup.name}: {error}{details} in "
            f"statement: {short(statement) or '(not held)'}{row} - the database holds a partial "
            "load; fix the cause or choose another backup, then run the restore again",
            statement=short(statement),
            line=line,
            error=error,
        )

    def close(self) -> None:
        """Never leave psql running: stop it first (closing its input would COMMIT)."""
        close_child(self.proc, self.output.join)


def stream_restore(
    backup: Path,
    env: Mapping[str, str],
    *,
    on_event: EventSink = ignore_events,
    step_id: str = StepId.RESTORE,
    cancel: threading.Event | None = None,
    identities: list[Any] | None = None,
) -> StreamResult:
    """Load `backup` (plain SQL, gzip) into the database `env` names (PGHOST, PGPORT,
    PGUSER, PGDATABASE; PGPASSWORD comes from this process's environment). With
    `identities` the backup is age-encrypted and decrypted in the stream.

    Raises RestoreError on psql's first error, VerificationError on corrupt or truncated
    gzip data, Cancelled when `cancel` is set. psql is never left running.
    """
    try:
        total = backup.stat().st_size
    except FileNotFoundError:
        raise NotFoundError(f"backup {backup} does not exist: check the path") from None
    cancel = cancel or threading.Event()
    started = time.monotonic()
    try:
        proc = spawn(PSQL_ARGV, stdin=subprocess.PIPE, env=env)
    except OSError as exc:
        raise DrError(
            f"cannot start psql: {exc.strerror}: install the PostgreSQL client tools "
            "(postgresql-client) so that psql is on PATH"
        ) from None
    try:
        load = _Load(backup, total, proc, on_event, step_id, cancel, identities)
        load.restrict(on_event, step_id)
    except BaseException:
        terminate(proc)
        raise
    finished = threading.Event()
    watcher = threading.Thread(target=_watch, args=(proc, cancel, finished), daemon=True)
    watcher.start()
    try:
        load.progress(force=True)
        try:
            load.pour()
            code, complete = load.finish(), True
        except _PsqlGone:
            code, complete = (load.wait(None) if not cancel.is_set() else -1), False
        if code != 0 and cancel.is_set():
            raise Cancelled(
                f"restore of {backup.name} cancelled: psql was stopped and the database holds "
                "a partial load; run the restore again to start it over"
            )
        if code != 0 or not complete:  # status 0 too: psql must not quit before the end
            raise load.failure(code)
        load.progress(force=True, final=True)
        return StreamResult(
            compressed_bytes=total,
            sql_bytes=load.sql_bytes,
            tables_loaded=tuple(load.tracker.finished),
            seconds=time.monotonic() - started,
        )
    finally:
        finished.set()
        load.close()
        watcher.join()


def refused(name: str, found: Finding, where: str = "") -> MetaCommandError:
    """The load's refusal of a backup that holds a meta-command (`where`: whose input)."""
    return MetaCommandError(
        f"restore stopped at line {found.line} of {name}{where}: {found.problem} - psql never "
        "read that line and the database holds a partial load; this backup would run "
        "commands on this host: restore another backup and find out who wrote this one",
        found,
    )


def _watch(
    proc: subprocess.Popen[bytes], cancel: threading.Event, finished: threading.Event
) -> None:
    """Stop psql as soon as `cancel` is set, even while a write to it blocks."""
    while not finished.wait(0.1):
        if cancel.is_set():
            terminate(proc)
            return


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def one_line(text: str) -> str:
    return " ".join(text.split())


def short(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= MAX_STATEMENT_CHARS else text[: MAX_STATEMENT_CHARS - 1] + "…"
