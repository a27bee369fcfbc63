"""Step 6 over N sessions: a plain `.sql.gz` restored in parallel, to the same end state as
`gunzip -c F | psql -v ON_ERROR_STOP=1`.

pg_dump's plain output is a list of TOC entries, each introduced by a comment block
(`--` / `-- Name: x; Type: INDEX; Schema: public; Owner: preskool` / `--`), in three
sections: pre-data (the schema), data (one COPY block per table, sequence values) and
post-data (keys, indexes, triggers, foreign keys), then ACLs. The load:

1. pre-data: everything before the first data entry goes, byte for byte, into one psql,
   which must finish before any table is loaded (its error lines are the file's lines);
2. data: a scanner inflates the file once, ahead of the loaders, and notes where every
   COPY block starts (the compressed offset and a copy of the zlib state there); each of
   N sessions inflates its blocks from that point and hands the rows to the server over
   its own connection (psycopg's COPY: no psql reading them from a pipe). A block longer
   than `split_bytes` is cut at row ends into parts, each its own COPY of the same table,
   so that sessions left idle can help with a table that would hold up the load alone (its
   rows then sit in the table's pages in another order than the serial load leaves them:
   the same rows, as `SELECT` without ORDER BY promises nothing about order). Other data
   entries (sequence values, large objects) go in file order into one more psql;
3. post-data: an entry starts once the tables it names are loaded, when no running entry
   holds a conflicting lock on the same table tree (index builds share; no lock waits, no
   deadlocks) and the entries of earlier groups on those tables are done (keys and indexes,
   then triggers, then foreign keys: the file's order where it matters). Entries this
   module does not recognise run alone, in file order, after all before them.
   The biggest tables load first, each on its own session (as pg_restore -j orders them),
   and a table's index builds start as soon as its rows are in, beside the other loads.

Cuts are made only where psql itself stands between two statements: core/storage/sql_lexer.py
follows the SQL between COPY blocks (strings, E-strings, dollar quotes, quoted names, nested
comments) as psql does, so TOC-shaped lines inside a string are the string's; COPY headers
are parsed exactly (a quoted table name may hold a newline) and COPY rows are never lexed,
only their terminator line found. Text the lexer cannot classify with certainty sends the whole
file through the serial stream when it shows in the pre-data (which is held back until the
lexer has seen it all, so nothing is loaded yet), and stops the load with a message later.

Every psql runs with ON_ERROR_STOP and a failed COPY raises; the first failure stops every
session and their server backends, as the serial load stops at its first error. A watchdog
fails the load when nothing moves for WATCHDOG_SECONDS (no bytes scanned or loaded, no job
done, no server session of the load working), naming what it waited for, instead of
waiting forever on a lock nobody releases or a sync marker that never comes back.
Memory stays flat: the scanner holds at most MAX_LOOKAHEAD block starts (~40 KiB of zlib
state each), post-data DDL text, and up to PRE_DATA_HOLD bytes of pre-data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import subprocess
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg

from preskool_dr.core.base.database import PINNED_SEARCH_PATH
from preskool_dr.core.base.errors import Cancelled, DrError, NotFoundError, VerificationError
from preskool_dr.core.base.events import EventSink, LogLine, Notice, Progress, ignore_events
from preskool_dr.core.base.procs import spawn, terminate
from preskool_dr.core.restore.loaders.stream import (
    PIECE,
    PIPE_SIZE,
    PROGRESS_EVERY,
    PSQL_ERROR,
    READ_CHUNK,
    PsqlOutput,
    RestoreError,
    StreamResult,
    one_line,
    refused,
    restrict_line,
    server_gone,
    short,
    stream_restore,
)
from preskool_dr.core.storage.checksum import GZIP_WBITS
from preskool_dr.core.storage.dumptext import DumpText
from preskool_dr.core.storage.sql_lexer import NEED_MORE, SqlLexer, copy_statement

# -q -A -t: no command tags; query output is only our sync markers (and setval results).
SESSION_ARGV = ("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-")
MAX_LOOKAHEAD = 256  # COPY block starts the scanner may hold before a session takes them
MAX_CANDIDATE = 65536  # bytes a header may span across pieces
MAX_COPY_HEADER = 1 << 20  # bytes a COPY header may span (1,600 quoted column names fit)
PRE_DATA_HOLD = 64 << 20  # pre-data bytes held back until the lexer has seen them all
PROBE_BYTES = 1 << 20  # decompressed bytes `unsupported_reason` looks at
TERMINATOR = b"\n\\.\n"  # ends a COPY block; its first newline may be the header's own
DATA_TYPES = frozenset({"TABLE DATA", "SEQUENCE SET", "BLOBS", "LARGE OBJECTS"})
ATTACHED_TYPES = frozenset({"COMMENT", "SECURITY LABEL"})  # belong to the entry before
GROUPS = {"CONSTRAINT": "build", "INDEX": "build", "TRIGGER": "trigger", "FK CONSTRAINT": "fk"}
SERIAL = "serial"
# SQL bytes of one COPY part. Parts cost little each, but two sessions on one table load it
# no faster than one session on each of two tables: only a table that would hold up the load
# alone is worth cutting (measured in docs/PERFORMANCE.md's data: 8 MiB parts were slower).
SPLIT_BYTES = 128 << 20
WAKE_EVERY = 0.1  # seconds: how often a waiting session looks at psql's and the run's state
# Seconds without progress (no bytes scanned or loaded, no job finished, no server session
# of the load running) after which a wait is given up: a CREATE INDEX that runs for an hour
# is progress (its server session is active); one that waits for a lock nobody releases,
# or a psql that never answers its sync marker, is not.
WATCHDOG_SECONDS = 300.0
JOIN_GRACE = 30.0  # seconds a thread may take to stop once everything was told to stop
# what a server session of the load waits for when it is not working
_STALLED_WAITS = frozenset({"Lock", "Client", "Timeout", "BufferPin", "Extension"})

_HEADER = re.compile(
    rb"-- (?:Data for )?Name: (?P<name>.*); Type: (?P<type>[A-Z][A-Z ]*); "
    rb"Schema: [^;]*; Owner: [^;]*(?:; Tablespace: .*)?"
)
_TRAILER = b"-- PostgreSQL database dump complete"
# one statement each: a value holds no `;` outside quotes (settings are replayed per job)
_VALUE = rb"""(?:[^;'"\\]|'(?:[^'\\]|'')*'|"(?:[^"]|"")*")*"""
_SETTING = re.compile(
    rb"SET (?P<set>SESSION AUTHORIZATION|ROLE|[a-z_.]+)(?: = | )" + _VALUE + rb";"
    rb"|RESET (?P<reset>SESSION AUTHORIZATION|ROLE);"
    rb"|SELECT pg_catalog\.set_config\('(?P<fn>search_path)', '(?:[^'\\]|'')*', false\);"
)
# what pg_dump writes before its first entry: settings every session replays
_PREAMBLE_LINE = re.compile(
    rb"SET [a-z_]+ = (?:[A-Za-z0-9_]+|'[A-Za-z0-9_ -]*');"
    rb"|SELECT pg_catalog\.set_config\('search_path', '', false\);"
)
_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s."(),;]+)'
_QUALIFIED = rb"(" + _IDENT + rb"(?:\." + _IDENT + rb")?)"
_TABLES = {
    "INDEX": re.compile(rb"CREATE (?:UNIQUE )?INDEX " + _IDENT + rb" ON (?:ONLY )?" + _QUALIFIED),
    "CONSTRAINT": re.compile(rb"ALTER TABLE (?:ONLY )?" + _QUALIFIED),
    "FK CONSTRAINT": re.compile(rb"ALTER TABLE (?:ONLY )?" + _QUALIFIED),
    "TRIGGER": re.compile(
        rb"CREATE (?:CONSTRAINT )?TRIGGER " + _IDENT + rb"\s.*?\sON " + _QUALIFIED, re.S
    ),
}
_ALSO = {
    "FK CONSTRAINT": re.compile(rb"\sREFERENCES " + _QUALIFIED),
    "TRIGGER": re.compile(rb"\sFROM " + _QUALIFIED),
}
_NAME_PART = re.compile(r'"((?:[^"]|"")*)"|([^".]+)')


def resolve_jobs(configured: int) -> int:
    """`restore.jobs`: 0 means one session per CPU core this process may use."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def unsupported_reason(backup: Path) -> str | None:
    """Why `backup` cannot be split (it is not pg_dump's plain output of one database), or
    None. Reads only the head of the file; the load itself still checks everything."""
    try:
        with backup.open("rb") as f:
            inflater = zlib.decompressobj(GZIP_WBITS)
            head = inflater.decompress(f.read(READ_CHUNK), PROBE_BYTES)
    except (OSError, zlib.error) as exc:
        return f"cannot read its start ({exc})"
    if not head.startswith(b"--\n-- PostgreSQL database dump\n--\n"):
        return "it does not start like pg_dump's plain output"
    # No `\connect` (or other meta-command) reason: no loader runs one, so there is nothing
    # to fall back to; the sessions refuse it (_Psql).
    return None


# ---------------------------------------------------------------- gzip pieces


@dataclass(frozen=True)
class _Checkpoint:
    """Where a session starts inflating a COPY part on its own."""

    offset: int  # compressed byte to read from
    inflater: zlib._Decompress  # the zlib state before that byte (a private copy)
    skip: int  # decompressed bytes to drop before the part's first row


@dataclass(frozen=True)
class _Piece:
    data: bytes
    start: int  # compressed offset of the input this piece came from
    end: int  # compressed offset after it
    before: zlib._Decompress | None  # the zlib state at `start` (scanner only)


def _inflate(
    f: IO[bytes], inflater: zlib._Decompress, offset: int, name: str, *, snapshots: bool
) -> Iterator[_Piece]:
    """Decompressed pieces of at most PIECE bytes from compressed `offset` on, member after
    member (like gunzip). VerificationError on corrupt or truncated data."""
    in_member = False
    while chunk := f.read(READ_CHUNK):
        chunk_end = offset + len(chunk)
        data = chunk
        while data:
            if inflater.eof:
                inflater = zlib.decompressobj(GZIP_WBITS)
            in_member = True
            start = chunk_end - len(data)
            before = inflater.copy() if snapshots else None
            try:
                out = inflater.decompress(data, PIECE)
            except zlib.error as exc:
                raise VerificationError(
                    f"{name} is corrupt at compressed byte {start:,} ({exc}): the load was "
                    "stopped; check it with `preskool-dr verify` and restore another backup"
                ) from None
            if inflater.eof:
                in_member = False
                data = inflater.unused_data
            else:
                data = inflater.unconsumed_tail
            yield _Piece(out, start, chunk_end - len(data), before)
        offset = chunk_end
    if in_member:
        raise VerificationError(
            f"{name} ends in the middle of its gzip data (truncated at {offset:,} bytes): the "
            "load was stopped; pick another backup (`preskool-dr list`) and run the restore again"
        )


class _BlockEnd:
    """Finds the COPY terminator, also when it is split between pieces. `after_newline`:
    the first byte searched starts a line (a part's first row), so `\\.` there ends it."""

    def __init__(self, *, after_newline: bool = False) -> None:
        self._tail = b"\n" if after_newline else b""  # the last bytes searched

    def find(self, data: bytes, start: int = 0) -> int:
        """The index in `data` just after the terminator (searching from `start`), or -1."""
        if self._tail:
            joined = self._tail + data[start : start + len(TERMINATOR) - 1]
            i = joined.find(TERMINATOR)
            if i >= 0:
                end = start + i + len(TERMINATOR) - len(self._tail)
                self._tail = b""
                return end
        i = data.find(TERMINATOR, start)
        if i >= 0:
            self._tail = b""
            return i + len(TERMINATOR)
        keep = len(TERMINATOR) - 1
        self._tail = (self._tail + data[max(start, len(data) - keep) :])[-keep:]
        return -1


# ---------------------------------------------------------------- psql sessions


class _SessionGone(Exception):
    """psql closed its input: it stopped on an error, or was stopped."""

    def __init__(self, session: _Psql) -> None:
        super().__init__(session.role)
        self.session = session


class _Psql:
    """One psql (ON_ERROR_STOP) fed through a pipe; `sync` waits until it has run all
    that was written, by asking it to echo a marker.

    No meta-command from the backup runs: psql starts under a `\\restrict` key of its own
    (restore_stream.restrict_line), and what is written passes a DumpText first, which
    blanks pg_dump's own `\\restrict`/`\\unrestrict` lines and refuses any other backslash
    line outside COPY data before psql reads it."""

    def __init__(self, env: Mapping[str, str], token: str, role: str) -> None:
        self.role = role  # what the operator reads about it: "session 2", "schema"
        self.token = token
        self._syncs = 0
        self.guard = DumpText(strict=False, rewrite=True)
        try:
            self.proc = spawn(SESSION_ARGV, stdin=subprocess.PIPE, env=env)
        except OSError as exc:
            raise DrError(
                f"cannot start psql: {exc.strerror}: install the PostgreSQL client tools "
                "(postgresql-client) so that psql is on PATH"
            ) from None
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin
        with contextlib.suppress(OSError):  # a smaller pipe only costs syscalls
            fcntl.fcntl(self.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.output = PsqlOutput(self.proc)
        self.notes: deque[str] = deque(maxlen=200)  # warnings and notices, for the log
        prefix = restrict_line()
        self.prefix_lines = prefix.count(b"\n")  # psql counts them before the backup's
        self._send(prefix)

    def write(self, data: bytes) -> None:
        self._send(self.guard.feed(data))

    def _send(self, data: bytes) -> None:
        if self.guard.found is not None:
            # the schema session reads the file's first lines as they are: its numbers hold
            where = "" if self.role == "schema" else f" of what the {self.role} session reads"
            raise refused("the backup", self.guard.found, where)
        try:
            self.stdin.write(data)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise _SessionGone(self) from None

    def sync(self, stop: threading.Event) -> None:
        """Return once psql has executed everything written so far."""
        self._syncs += 1
        marker = f"preskool-dr:{self.token}:{self._syncs}"
        self.write(f"SELECT '{marker}';\n".encode())
        try:
            self.stdin.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise _SessionGone(self) from None
        pending, arrived = self.output.pending, self.output.arrived
        while True:
            arrived.clear()  # before looking: a line that comes after this wakes the wait
            while pending:
                line = pending.popleft()
                if line == marker:
                    return
                if line.strip() and not line.startswith("preskool-dr:"):
                    self.notes.append(line)
            if self.proc.poll() is not None or stop.is_set():
                # psql may have printed the marker just before exiting
                if any(line == marker for line in list(pending)):
                    return
                raise _SessionGone(self)
            arrived.wait(WAKE_EVERY)

    def close(self) -> None:
        """No more input: psql runs what is left and exits."""
        with contextlib.suppress(OSError, ValueError, _SessionGone):
            self._send(self.guard.finish())
        with contextlib.suppress(OSError, ValueError):
            self.stdin.close()

    def wait(self, stop: threading.Event, timeout: float | None = None) -> int:
        """psql's exit status once it ends; -1 when `stop` is set first, -2 when it has
        not ended after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                code = self.proc.wait(0.1)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    return -1
                if deadline is not None and time.monotonic() > deadline:
                    return -2
                continue
            self.output.join()
            return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            terminate(self.proc)
        with contextlib.suppress(OSError, ValueError):
            self.stdin.close()
        self.output.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def error(self) -> tuple[int | None, str, str]:
        """(input line, `ERROR: message (DETAIL) (CONTEXT)`, raw last line) from stderr."""
        lines = list(self.output.stderr_tail)
        for k, text in enumerate(lines):
            match = PSQL_ERROR.match(text)
            if match:
                extra = [
                    t for t in lines[k + 1 :] if t.startswith(("DETAIL:", "HINT:", "CONTEXT:"))
                ]
                details = "".join(f" ({one_line(t)})" for t in extra[:2])
                message = one_line(f"{match['level']}: {match['msg']}") + details
                return int(match["line"]) - self.prefix_lines, message, text
        last = next((t for t in reversed(lines) if t.strip()), "")
        return None, one_line(last), last


class _Copier:
    """A session's connection for COPY parts: psycopg hands the rows to libpq as they are,
    where psql would first read them from a pipe line by line (a quarter of the client's CPU
    in a parallel load, on a machine whose cores the server needs)."""

    def __init__(self, env: Mapping[str, str], appname: str, preamble: bytes) -> None:
        self.conn = connect_env(env, appname)
        # the dump's session settings, without psql's own commands (`\restrict KEY`)
        lines = preamble.split(b"\n")
        self.conn.execute(b"\n".join(line for line in lines if not line.startswith(b"\\")))

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


# ---------------------------------------------------------------- the plan


@dataclass(eq=False)
class _Job:
    """A unit of work for one session: a COPY part, or post-data entries."""

    seq: int
    label: str  # what the operator reads: the table, or the entry's name
    group: str  # "copy", "build", "trigger", "fk" or SERIAL
    stage: int  # post-data: entries of a lower stage finish first
    settings: bytes  # session settings in force where the entry starts (tablespace, ...)
    keys: frozenset[int] = frozenset()  # table trees it touches
    shared: bool = False  # its lock lets others of its kind run on the same tables
    text: list[bytes] = field(default_factory=list)  # post-data SQL
    header: bytes = b""  # COPY: the block's `COPY ... FROM stdin;` line
    block: int = 0  # COPY: the seq of the block's first part
    part: int = 1  # COPY: which part of the block, from 1
    cut: bool = False  # COPY: it ends where the next part starts, not at the block's end
    checkpoint: _Checkpoint | None = None  # COPY: where its rows start
    start: int = 0  # COPY: compressed offsets of the part, for progress
    end: int | None = None
    pos: int = 0
    size: int = 0  # COPY: decompressed bytes of the part known so far
    state: str = "pending"  # pending | running | done
    seconds: float = 0.0


@dataclass
class _Entry:
    """A post-data TOC entry the scanner is still reading."""

    type: str
    name: str
    settings: bytes
    text: list[bytes] = field(default_factory=list)


def _name_key(raw: bytes) -> tuple[str, ...]:
    """A qualified name as pg_dump quotes it -> its parts unquoted, as the catalog holds them:
    public."Odd Name" -> ("public", "Odd Name"), doubled quotes undone."""
    text = raw.decode("utf-8", "replace")
    return tuple(q.replace('""', '"') if q else plain for q, plain in _NAME_PART.findall(text))


def connect_env(
    env: Mapping[str, str], appname: str, *, pinned: bool = False
) -> psycopg.Connection:
    """A psycopg connection to where `env` points psql (PGHOST, PGPORT, PGUSER, PGDATABASE);
    the password comes from this process's environment, as for psql. `pinned`: for the
    tool's own queries, search_path is pg_catalog only (see database.PINNED_SEARCH_PATH);
    the loading sessions keep the server's default, as psql does."""
    return psycopg.connect(
        options=f"-c search_path={PINNED_SEARCH_PATH}" if pinned else None,
        host=env.get("PGHOST"),
        port=env.get("PGPORT"),
        user=env.get("PGUSER"),
        dbname=env.get("PGDATABASE"),
        autocommit=True,
        connect_timeout=10,
        application_name=appname,
    )


def stop_backends(env: Mapping[str, str], appname: str) -> None:
    """End the server sessions of a stopped load: a killed psql or pg_restore does not stop
    a CREATE INDEX its backend is running (best effort: the server may be the problem)."""
    with (
        contextlib.suppress(psycopg.Error),
        connect_env(env, f"{appname}-stop", pinned=True) as conn,
    ):
        conn.execute(
            """SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
               WHERE application_name = %s AND pid <> pg_catalog.pg_backend_pid()""",
            (appname,),
        )


def _table_trees(env: Mapping[str, str], appname: str) -> dict[tuple[str, ...], int]:
    """(schema, relation) -> one id per inheritance/partition tree: entries on the same
    tree never run at once, since DDL on a partition can lock its parent and siblings."""
    try:
        with connect_env(env, appname, pinned=True) as conn:
            relations = conn.execute(
                """SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind IN ('r', 'p', 'm', 'f', 'v')"""
            ).fetchall()
            edges = conn.execute(
                "SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits"
            ).fetchall()
    except psycopg.Error as exc:
        raise DrError(
            f"cannot read the restored schema's tables: {one_line(str(exc))} - check the "
            "server, DB_HOST/DB_PORT and PGPASSWORD, then run the restore again"
        ) from None
    parent: dict[int, int] = {}

    def root(oid: int) -> int:
        while parent.get(oid, oid) != oid:
            oid = parent[oid]
        return oid

    for child, above in edges:
        a, b = root(int(child)), root(int(above))
        if a != b:
            parent[a] = b
    return {(str(nsp), str(rel)): root(int(oid)) for oid, nsp, rel in relations}


# ---------------------------------------------------------------- the scanner


class _Stopped(Exception):
    """Another thread failed or the operator cancelled: stop quietly."""


class _Unsure(Exception):
    """The scanner met text it cannot split with certainty (sql_lexer's doubt). `loaded`:
    some of the file already went to the server (else the whole load can go serially)."""

    def __init__(self, reason: str, line: int, *, loaded: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.loaded = loaded


@dataclass(frozen=True)
class _Snap:
    sql_pos: int  # decompressed offset where the piece starts
    offset: int  # compressed offset of its input
    state: zlib._Decompress


class _Scanner:
    """Reads the file once, in the scanner thread: pre-data into the schema session, the
    start of every COPY block into the plan, other data into the data session, post-data
    entries into the plan."""

    def __init__(self, restore: _Restore) -> None:
        self.r = restore
        self.section = "pre"  # pre | data | post
        self.target = "pre"  # where text goes: pre | serial | copy | post
        self.buf = b""  # bytes not routed yet; buf[0] starts a line unless mid_line
        self.buf_pos = 0  # decompressed offset of buf[0]
        self.mid_line = False
        self.snaps: deque[_Snap] = deque()
        self.in_block = False  # inside a parallel COPY block (the scanner skips its rows)
        self.block: _Job | None = None  # the part of it being skipped; None: none follows
        self.label = ""  # the block's table
        self.block_seq = 0  # the seq of its first part
        self.block_at = 0  # decompressed offset of its first row
        self.part_at = 0  # decompressed offset of that part's first row
        self.pending = False  # the part is cut off but its first bytes may be the terminator
        self.block_end = _BlockEnd()
        self.serial_copy = False  # inside a COPY block that goes to the current target
        self.expect_copy = False  # a TABLE DATA entry whose COPY line has not come yet
        self.entry: _Entry | None = None  # the post-data entry being read
        self.held: _Job | None = None  # the last post-data job, until the next is known
        self.tail = bytearray()  # the end of the current entry's text: settings live there
        self.settings: dict[bytes, bytes] = {}
        self.preamble: bytearray | None = bytearray()  # text before the first entry
        self.stage = 0
        self.last_group = ""
        # psql's view of the SQL between COPY blocks: a cut is made only where it stands
        # between statements, never inside a string, dollar quote, quoted name or comment
        self.lexer = SqlLexer()
        # pre-data waits here until the lexer has seen it all (or PRE_DATA_HOLD bytes):
        # when in doubt, nothing has been loaded and the whole file can go serially
        self.pre_held: list[bytes] | None = []
        self.pre_held_bytes = 0
        self.unlexed = 0  # bytes of COPY headers and rows, which the lexer never sees

    def run(self) -> None:
        r = self.r
        r.schema = _Psql(r.env, r.token, "schema")
        with r.backup.open("rb") as f:
            pieces = _inflate(f, zlib.decompressobj(GZIP_WBITS), 0, r.name, snapshots=True)
            for piece in pieces:
                if r.stop.is_set():
                    raise _Stopped
                assert piece.before is not None
                self.snaps.append(_Snap(self.buf_pos + len(self.buf), piece.start, piece.before))
                while len(self.snaps) > 1 and self.snaps[1].sql_pos <= self.buf_pos:
                    self.snaps.popleft()
                self.buf += piece.data
                self._route(final=False)
                r.scan_offset = piece.end
                r.sql_bytes += len(piece.data)
        if r.sql_bytes == 0:
            raise VerificationError(f"{r.name} is empty: pick another backup (`preskool-dr list`)")
        self._route(final=True)
        if not self.in_block and not self.serial_copy:
            self.lexer.finish()
            self._check_lexer()
        if self.in_block or self.serial_copy:
            table = self.label if self.in_block else "a table"
            raise DrError(
                f"{r.name} ends inside the data of {table}: the backup is incomplete; "
                "pick another backup (`preskool-dr list`)"
            )
        self._finish_entry()
        if self.held is not None:
            self._register(self.held)
        if self.section == "pre":  # a schema-only dump: all of it went to one session
            self._end_pre_data(data_follows=False)
        elif self.section == "data":
            self._end_data()
        r.scan_finished()

    # ------------------------------------------------------------ routing bytes

    def _route(self, *, final: bool) -> None:
        buf, pos, n = self.buf, 0, len(self.buf)
        next_dash = next_copy = -2  # cached search results (-2: not searched yet)
        while pos < n:
            if self.in_block or self.serial_copy:
                end = self.block_end.find(buf, pos)
                if end < 0:
                    if self.serial_copy:
                        self._emit(buf[pos:])
                    else:
                        self._skip_rows(buf, pos, n, None)
                    self.unlexed += n - pos
                    pos = n
                    break
                if self.serial_copy:
                    self._emit(buf[pos:end])
                    self.serial_copy = False
                else:
                    self._skip_rows(buf, pos, end, end)
                self.unlexed += end - pos
                pos = end
                self.mid_line = False
                continue
            # Text: find the next line that may be an entry header or a COPY line.
            if not self.mid_line and buf.startswith((b"--\n", b"COPY "), pos):
                i = pos
            else:
                if next_dash != -1 and next_dash < pos:
                    next_dash = buf.find(b"\n--\n", pos)
                if next_copy != -1 and next_copy < pos:
                    next_copy = buf.find(b"\nCOPY ", pos)
                found = [k + 1 for k in (next_dash, next_copy) if k >= 0]
                i = min(found) if found else -1
            if i < 0:
                cut = buf.rfind(b"\n", pos) + 1
                if cut <= pos and (final or n - pos > MAX_CANDIDATE):
                    cut = n  # a very long line (or the last one): route it whole
                if cut > pos:
                    self._sql(buf[pos:cut])
                    self.mid_line = buf[cut - 1 : cut] != b"\n"
                    pos = cut
                break
            if i > pos:
                self._sql(buf[pos:i])
                pos = i
            self.mid_line = False
            if not self.lexer.at_boundary:
                # inside a string, a dollar quote, a quoted name, a comment or a statement:
                # psql reads this line as part of it, and so does the load
                self._sql(buf[i : i + 1])
                pos = i + 1
                self.mid_line = True
                continue
            if buf.startswith(b"--\n", i):
                j = buf.find(b"\n", i + 3)
                k = buf.find(b"\n", j + 1) if j >= 0 else -1
                if k < 0 and not final and n - i < MAX_CANDIDATE:
                    break  # maybe a header: wait for the rest of it
                line = buf[i + 3 : j] if j >= 0 else b""
                header = _HEADER.fullmatch(line) if k >= 0 else None
                if k >= 0 and buf[j + 1 : k] == b"--" and (header or line == _TRAILER):
                    self.lexer.feed(buf[i : k + 1])
                    self._check_lexer()
                    self._header(header, buf[i : k + 1])
                    pos = k + 1
                else:
                    self._sql(buf[i : i + 3])
                    pos = i + 3
                continue
            header_end = copy_statement(buf, i)
            if header_end == NEED_MORE and not final and n - i < MAX_COPY_HEADER:
                break  # maybe a COPY header: wait for its end
            if isinstance(header_end, tuple):  # pg_dump's `COPY name (cols) FROM stdin;`
                j, table = header_end
                self.unlexed += j - i
                self._copy(table, i, j)
                pos = j  # the terminator search starts at the COPY line's newline
            else:  # SQL that starts with COPY: a COPY the lexer does not know is a doubt
                j = buf.find(b"\n", i)
                end = j + 1 if j >= 0 else n
                self._sql(buf[i:end])
                pos = end
        self.buf_pos += pos
        self.buf = buf[pos:]

    def _sql(self, data: bytes) -> None:
        """SQL text (not COPY rows): the lexer sees it before any session does."""
        self.lexer.feed(data)
        self._check_lexer()
        self._emit(data)

    def _check_lexer(self) -> None:
        lexer = self.lexer
        if lexer.doubt is not None:
            line = lexer.doubt_line
            if self.unlexed:  # the lexer counted only the lines it saw
                line = self._line_at(lexer.doubt_offset + self.unlexed)
            raise _Unsure(lexer.doubt, line, loaded=self.pre_held is None)

    def _line_at(self, offset: int) -> int:
        """The line of the decompressed byte `offset` (read again: only for a message)."""
        lines = 1
        with self.r.backup.open("rb") as f:
            inflater = zlib.decompressobj(GZIP_WBITS)
            for piece in _inflate(f, inflater, 0, self.r.name, snapshots=False):
                if offset <= len(piece.data):
                    return lines + piece.data.count(b"\n", 0, offset)
                lines += piece.data.count(b"\n")
                offset -= len(piece.data)
        return lines

    def _release_pre_data(self) -> None:
        """The pre-data held so far goes to the schema session: from now on the load has
        begun, and a doubt can only stop it."""
        if self.pre_held is None:
            return
        self._check_lexer()
        held, self.pre_held = self.pre_held, None
        for data in held:
            self._write(self.r.schema, data)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.tail += data
        del self.tail[:-4096]
        if self.target == "pre":
            if self.preamble is not None:
                self.preamble += data
            if self.pre_held is None:
                self._write(self.r.schema, data)
            else:
                self.pre_held.append(data)
                self.pre_held_bytes += len(data)
                if self.pre_held_bytes > PRE_DATA_HOLD:
                    self._release_pre_data()
        elif self.target == "serial":
            self._write(self.r.serial_session(), data)
        elif self.target == "post":
            assert self.entry is not None
            self.entry.text.append(data)
        elif any(line.strip() and not _SETTING.fullmatch(line) for line in data.split(b"\n")):
            # "copy": only blank lines and session settings may surround a parallel COPY
            if not self.expect_copy:
                raise DrError(
                    f"{self.r.name}: unexpected SQL after the data of {self._last_label()}: "
                    "this is not pg_dump's plain output as `preskool-dr backup` writes it; "
                    "the load was stopped: check where this backup came from and restore "
                    "another one"
                )
            self.target = "serial"  # e.g. `ALTER TABLE ... DISABLE TRIGGER ALL` first
            self.expect_copy = False
            self._write(self.r.serial_session(), data)

    def _last_label(self) -> str:
        return self.r.copies[-1].label if self.r.copies else "a table"

    def _write(self, session: _Psql | None, data: bytes) -> None:
        assert session is not None
        session.write(data)

    # ------------------------------------------------------------ entries

    def _header(self, header: re.Match[bytes] | None, raw: bytes) -> None:
        kind = header["type"].decode() if header else "END"
        name = header["name"].decode("utf-8", "replace") if header else "end of dump"
        self._finish_entry()
        if self.preamble is not None:
            self._check_preamble(bytes(self.preamble))
            self.r.preamble = bytes(self.preamble)
            self.preamble = None
            self.r.start_sessions()
        if kind in DATA_TYPES and self.section == "pre":
            self._end_pre_data(data_follows=True)
            self.section = "data"
        elif kind not in DATA_TYPES and self.section == "data":
            self._end_data()
            self.section = "post"
        if self.section == "pre":
            self.target = "pre"
            self._emit(raw)
        elif self.section == "data" and kind == "TABLE DATA":
            self.target = "copy"
            self.expect_copy = True
        elif self.section == "data":
            self.target = "serial"
            self._write(self.r.serial_session(), self._settings())
            self._emit(raw)
        else:
            self.target = "post"
            self.entry = _Entry(kind, name, self._settings())
            self._emit(raw)

    def _settings(self) -> bytes:
        return b"".join(line + b"\n" for line in self.settings.values())

    def _check_preamble(self, text: bytes) -> None:
        """Every session replays the text before the first entry: it may only hold the
        session settings pg_dump writes there (anything else would run once per session,
        where the serial load runs it once)."""
        for number, line in enumerate(text.split(b"\n"), 1):
            meta_or_comment = line.startswith((b"--", b"\\"))
            if line.strip() and not meta_or_comment and not _PREAMBLE_LINE.fullmatch(line):
                raise _Unsure(
                    "SQL other than pg_dump's session settings before its first entry",
                    number,
                    loaded=self.pre_held is None,
                )

    def _finish_entry(self) -> None:
        """Session settings at the end of an entry belong to the entries after it."""
        lines = bytes(self.tail).split(b"\n")
        self.tail.clear()
        found: list[bytes] = []
        for line in reversed(lines):
            if not line.strip():
                continue
            match = _SETTING.fullmatch(line)
            if match is None:
                break
            found.append(line)
            key = match["set"] or match["reset"] or match["fn"]
            self.settings.setdefault(key, b"")  # keep first-seen order
        for line in reversed(found):
            match = _SETTING.fullmatch(line)
            assert match is not None
            self.settings[match["set"] or match["reset"] or match["fn"]] = line
        entry, self.entry = self.entry, None
        self.expect_copy = False
        if entry is None:
            return
        text = b"".join(entry.text)
        if found:
            text = text[: text.rfind(found[-1])]
        self._hold(entry, text)

    def _hold(self, entry: _Entry, text: bytes) -> None:
        """Keep the newest post-data job back until the next entry shows whether it belongs
        to it (a COMMENT on the index just made) or runs in file order with it."""
        keys = self._keys(entry.type, text)
        group = GROUPS.get(entry.type, SERIAL) if keys is not None else SERIAL
        held = self.held
        if held is not None and (
            entry.type in ATTACHED_TYPES or (group == SERIAL and held.group == SERIAL)
        ):
            held.text.append(entry.settings + text)
            return
        if held is not None:
            self._register(held)
        if group != self.last_group or group == SERIAL:
            self.stage += 1
            self.last_group = group
        self.held = _Job(
            seq=self.r.next_seq(),
            label=f"{entry.type} {entry.name}",
            group=group,
            stage=self.stage,
            settings=entry.settings,
            keys=keys or frozenset(),
            text=[text],
            # not when it also alters the table (CLUSTER ON, REPLICA IDENTITY)
            shared=group == "build" and entry.type == "INDEX" and b"ALTER " not in text,
        )

    def _register(self, job: _Job) -> None:
        self.held = None
        self.r.add_post(job)

    def _keys(self, kind: str, text: bytes) -> frozenset[int] | None:
        """The table trees a post-data entry touches; None when not sure (it runs alone)."""
        pattern = _TABLES.get(kind)
        match = pattern.search(text) if pattern else None
        if match is None:
            return None
        names = [match.group(1)]
        also = _ALSO.get(kind)
        if also is not None:
            names += [m.group(1) for m in also.finditer(text, match.end())]
        keys = set()
        for raw in names:
            key = self.r.roots.get(_name_key(raw))
            if key is None:
                return None
            keys.add(key)
        return frozenset(keys)

    # ------------------------------------------------------------ COPY blocks

    def _copy(self, table: bytes, i: int, j: int) -> None:
        if self.target == "copy" and self.expect_copy:
            self.expect_copy = False
            key = self.r.roots.get(_name_key(table))
            seq = self.r.next_seq()
            self.in_block = True
            self.block_seq = seq
            self.label = table.decode("utf-8", "replace")
            self.part_at = self.block_at = self.buf_pos + j + 1
            self.block = self._part(seq, 1, seq, self.buf[i : j + 1])
            self.block.keys = frozenset({key if key is not None else -seq})
            self.block.settings = self._settings()
            self.r.add_copy(self.block)
        else:
            self._emit(self.buf[i:j])
            self.serial_copy = True

    def _part(self, seq: int, part: int, block: int, header: bytes) -> _Job:
        """A COPY part whose rows start at `part_at`."""
        at = self.part_at
        snap = next(s for s in reversed(self.snaps) if s.sql_pos <= at)
        start = max(snap.offset, self.r.scan_offset)  # the part before ends at scan_offset
        return _Job(
            seq=seq,
            label=self.label,
            group="copy",
            stage=0,
            settings=b"",
            header=header,
            block=block,
            part=part,
            checkpoint=_Checkpoint(snap.offset, snap.state.copy(), at - snap.sql_pos),
            start=start,
            pos=start,
        )

    def _skip_rows(self, buf: bytes, pos: int, stop: int, end: int | None) -> None:
        """The scanner passed the rows buf[pos:stop] of a parallel block (and its terminator,
        which ends at `end`, when that is not None). With `split_bytes`, a part ends at the
        first row end after that many bytes; the session loading it finds the same row end
        on its own. The next part starts only once the bytes after that row end show that
        they are not the terminator."""
        base = self.buf_pos
        split = self.r.split_bytes
        while True:
            if self.pending:
                if end is not None and base + end - 3 == self.part_at:
                    self.block = None  # the rows ended exactly at the cut: no part follows
                    self.pending = False
                    break
                if base + stop - self.part_at < 3:
                    break  # which it is shows in the next piece
                assert self.block is not None
                self.pending = False
                self.r.add_copy(self.block)
            if not split:
                break
            limit = self.part_at + split - 1 - base  # the row end is at or after this
            cut = buf.find(b"\n", max(pos, limit), stop) if limit < stop else -1
            if cut < 0 or (end is not None and cut >= end - 4):  # no cut, or the terminator's
                break
            part = self.block
            assert part is not None
            part.size = base + cut + 1 - self.part_at
            self.r.block_scanned(part, self.r.scan_offset)
            self.part_at = base + cut + 1
            self.block = self._part(self.r.next_seq(), part.part + 1, part.block, part.header)
            self.block.keys, self.block.settings = part.keys, part.settings
            self.pending = True
            pos = cut + 1
        self.r.block_bytes[self.block_seq] = base + stop - self.block_at
        part = self.block
        if part is not None and not self.pending:
            part.size = base + (end if end is not None else stop) - self.part_at
            if end is not None:
                self.r.block_scanned(part, self.r.scan_offset)
        if end is not None:
            self.r.block_closed(self.block_seq)
            self.in_block = False
            self.block = None

    # ------------------------------------------------------------ sections

    def _end_pre_data(self, *, data_follows: bool) -> None:
        r = self.r
        assert r.schema is not None
        self._release_pre_data()
        r.schema.close()
        r.pre_data_running = True
        code = r.schema.wait(r.stop)
        r.pre_data_running = False
        if code == -1:
            raise _Stopped
        if code != 0:
            raise r.session_error(r.schema, None)
        if data_follows:
            r.set_roots(_table_trees(r.env, r.appname))

    def _end_data(self) -> None:
        self.r.data_scanned_to_end()


# ---------------------------------------------------------------- the coordinator


class _Restore:
    """Shared state of one parallel load. The calling thread schedules jobs and is the only
    one that calls `on_event`; the scanner and one thread per session do the work."""

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
        self.preamble = b""
        self.roots: dict[tuple[str, ...], int] = {}
        self.schema: _Psql | None = None  # pre-data
        self.serial: _Psql | None = None  # data entries that are not COPY blocks
        self.serial_closed = False
        self.serial_done = False
        self.sessions: list[_Psql] = []
        self.assigned: dict[_Psql, _Job | None] = {}
        self.copiers: dict[_Psql, _Copier] = {}  # each session's COPY connection
        self.last_block: dict[_Psql, int] = {}  # the block of each session's last COPY part
        self.threads: list[threading.Thread] = []
        self.copies: list[_Job] = []  # every COPY part, in file order
        self.parts_left: Counter[int] = Counter()  # unfinished parts per block
        self.block_bytes: Counter[int] = Counter()  # SQL bytes of each block scanned so far
        self.block_running: Counter[int] = Counter()  # its parts being loaded now
        self.open_blocks: set[int] = set()  # blocks the scanner may still cut parts from
        self.waiting: list[_Job] = []  # COPY jobs not started
        self.posts: list[_Job] = []  # post-data jobs not started, in file order
        self.running: set[_Job] = set()
        self.copy_left: Counter[int] = Counter()  # unfinished COPY jobs per table tree
        self.stage_left: Counter[int] = Counter()  # unfinished post-data jobs per stage
        self.serial_stages: Counter[int] = Counter()  # unfinished SERIAL jobs per stage
        self.key_stages: dict[int, Counter[int]] = {}  # per tree: unfinished jobs per stage
        self.bytes_by_key: Counter[int] = Counter()  # data loaded per tree: bigger first
        self.post_total = self.post_done = self.copies_done = 0
        self.data_scanned = False
        self.scan_done = False
        self.scan_offset = 0
        self.sql_bytes = 0
        self.log: deque[str] = deque(maxlen=2000)
        self._seq = 0
        self._last_at = 0.0
        self._last_done = 0
        self.rate = 0.0
        # the watchdog: what moved last, and when (monotonic seconds)
        self.watchdog = watchdog
        self.pre_data_running = False  # the scanner waits for the schema session
        self._mark: tuple[object, ...] = ()
        self._moved_at = time.monotonic()
        self.server_working_at = 0.0  # the last time a server session of the load worked
        self.server_note = "the server was not asked yet"

    # ------------------------------------------------------------ called by the scanner

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def serial_session(self) -> _Psql:
        if self.serial is None:
            self.serial = _Psql(self.env, self.token, "data")
            self.serial.write(self.preamble)
        return self.serial

    def start_sessions(self) -> None:
        """Connect the sessions while the schema loads; they get work once it has."""
        with self.cond:
            for number in range(1, self.jobs + 1):
                session = _Psql(self.env, self.token, f"session {number}")
                session.write(self.preamble)
                self.sessions.append(session)
                self.assigned[session] = None
                thread = threading.Thread(
                    target=self._work, args=(session,), name=f"restore-{number}", daemon=True
                )
                self.threads.append(thread)
                thread.start()

    def set_roots(self, roots: dict[tuple[str, ...], int]) -> None:
        with self.cond:
            self.roots = roots

    def add_copy(self, job: _Job) -> None:
        with self.cond:
            while len(self.waiting) >= MAX_LOOKAHEAD and not self.stop.is_set():
                self.cond.wait(0.5)
            if self.stop.is_set():
                raise _Stopped
            self.copies.append(job)
            self.waiting.append(job)
            for key in job.keys:
                self.copy_left[key] += 1
            self.parts_left[job.block] += 1
            if job.part == 1:
                self.open_blocks.add(job.block)
            self.cond.notify_all()

    def block_scanned(self, job: _Job, offset: int) -> None:
        """The scanner passed the end of this part."""
        with self.cond:
            job.end = offset
            self.cond.notify_all()

    def block_closed(self, block: int) -> None:
        """The scanner passed the end of the block: it has all its parts."""
        with self.cond:
            self.open_blocks.discard(block)
            if not self.parts_left[block]:
                self.copies_done += 1
            self.cond.notify_all()

    def add_post(self, job: _Job) -> None:
        with self.cond:
            self.posts.append(job)
            self.stage_left[job.stage] += 1
            self._count(job, 1)
            self.post_total += 1
            self.cond.notify_all()

    def data_scanned_to_end(self) -> None:
        with self.cond:
            self.data_scanned = True
            if self.serial is None:
                self.serial_done = True
            else:
                self.serial.close()
                self.serial_closed = True
            self.cond.notify_all()

    def scan_finished(self) -> None:
        with self.cond:
            self.scan_done = True
            self.data_scanned = True
            if self.serial is None:
                self.serial_done = True
            self.cond.notify_all()

    # ------------------------------------------------------------ the sessions' threads

    def _work(self, session: _Psql) -> None:
        while True:
            with self.cond:
                while self.assigned[session] is None and not self.stop.is_set():
                    self.cond.wait()
                job = self.assigned[session]
                if self.stop.is_set() or job is None:
                    return
            started = time.monotonic()
            try:
                if job.group == "copy":
                    self._load_block(self._copier(session), job)
                else:
                    session.write(job.settings + b"".join(job.text))
                    session.sync(self.stop)
            except _Stopped:
                return
            except _SessionGone:
                self.fail(self.session_error(session, job))
                return
            except psycopg.Error as exc:
                self.fail(self.copy_error(job, exc))
                return
            except BaseException as exc:
                self.fail(exc)
                return
            with self.cond:
                job.seconds = time.monotonic() - started
                self._finished_job(job)
                if job.group == "copy":
                    self.block_running[job.block] -= 1
                    self.last_block[session] = job.block
                self.assigned[session] = None
                self.cond.notify_all()

    def _copier(self, session: _Psql) -> _Copier:
        copier = self.copiers.get(session)
        if copier is None:
            copier = _Copier(self.env, self.appname, self.preamble)
            with self.cond:
                self.copiers[session] = copier
        return copier

    def _load_block(self, copier: _Copier, job: _Job) -> None:
        """One COPY part, inflated from its checkpoint; psycopg ends the COPY itself, so the
        terminator (`\\.`) is never sent."""
        checkpoint, job.checkpoint = job.checkpoint, None  # its zlib state is ours now
        assert checkpoint is not None
        if job.settings:
            copier.conn.execute(job.settings)
        with copier.conn.cursor() as cursor, cursor.copy(job.header.rstrip()) as copy:
            self._copy_rows(copy, job, checkpoint)

    def _copy_rows(self, copy: psycopg.Copy, job: _Job, checkpoint: _Checkpoint) -> None:
        """The part's rows up to its cut or the block's terminator. The last bytes of each
        piece wait for the next one: they may begin the terminator, which COPY must not get."""
        finder = _BlockEnd(after_newline=True)
        skip, split, seen = checkpoint.skip, self.split_bytes, 0  # seen: rows before `data`
        held = b""
        with self.backup.open("rb") as f:
            f.seek(checkpoint.offset)
            pieces = _inflate(f, checkpoint.inflater, checkpoint.offset, self.name, snapshots=False)
            for piece in pieces:
                if self.stop.is_set():
                    raise _Stopped
                job.pos = piece.end
                data = piece.data
                if skip:
                    if len(data) <= skip:
                        skip -= len(data)
                        continue
                    data, skip = data[skip:], 0
                end = finder.find(data)
                # the scanner's cut: the first row end at or after `split` bytes
                limit = max(0, split - 1 - seen) if split else len(data)
                cut = data.find(b"\n", limit) if limit < len(data) else -1
                buf, n = held + data, len(held)
                if end >= 0 and (cut < 0 or end - 4 <= cut):  # the terminator comes first
                    copy.write(memoryview(buf)[: n + end - 3])  # up to its `\\.`
                    return
                if cut >= 0:
                    copy.write(memoryview(buf)[: n + cut + 1])
                    job.cut = True
                    return
                keep = len(TERMINATOR) - 1
                copy.write(memoryview(buf)[: max(0, len(buf) - keep)])
                held = buf[-keep:]
                seen += len(data)
        raise DrError(
            f"{self.name} ends inside the data of {job.label}: the backup is incomplete; "
            "pick another backup (`preskool-dr list`)"
        )

    def _finished_job(self, job: _Job) -> None:
        job.state = "done"
        self.running.discard(job)
        if job.group == "copy":
            self.parts_left[job.block] -= 1
            if not self.parts_left[job.block] and job.block not in self.open_blocks:
                self.copies_done += 1
            for key in job.keys:
                self.copy_left[key] -= 1
                self.bytes_by_key[key] += job.size
            part = f"part {job.part}, " if job.cut or job.part > 1 else ""
            self.log.append(
                f"COPY {job.label}: {part}{job.size / 2**20:,.1f} MiB loaded in {job.seconds:.1f} s"
            )
        else:
            self.post_done += 1
            self.stage_left[job.stage] -= 1
            self._count(job, -1)
            self.log.append(f"{job.label} done in {job.seconds:.1f} s")

    def fail(self, exc: BaseException) -> None:
        """The first failure stops everything; later ones are its echoes."""
        with self.cond:
            if self.stop.is_set():
                return
            self.failure = exc
            self.stop.set()
            self.cond.notify_all()

    def copy_error(self, job: _Job, exc: psycopg.Error) -> RestoreError:
        """A COPY part's failure, worded as a psql session's (`ERROR: message (DETAIL)`)."""
        if gone := server_gone([str(exc)]):
            return gone
        diag = exc.diag
        if diag.sqlstate is None:  # not the server's error: the connection failed
            return RestoreError(
                f"restore stopped in {job.label} of {self.name}: cannot load it over a new "
                f"connection ({one_line(str(exc))}) - check that the server is up, "
                "DB_HOST/DB_PORT, DB_USER and PGPASSWORD, then run the restore again"
            )
        message = f"{diag.severity or 'ERROR'}: {one_line(diag.message_primary or str(exc))}"
        extra = [("DETAIL", diag.message_detail), ("HINT", diag.message_hint)]
        extra.append(("CONTEXT", diag.context))
        details = "".join(f" ({name}: {one_line(text)})" for name, text in extra if text)
        return RestoreError(
            f"restore stopped in {job.label} of {self.name}: {message}{details} - the "
            "database holds a partial load; fix the cause or choose another backup, then run "
            "the restore again",
            statement=short(job.label),
            error=message + details,
        )

    def session_error(self, session: _Psql, job: _Job | None) -> RestoreError:
        code = session.proc.poll()
        if code is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = session.proc.wait(5)
        session.output.join()
        if gone := server_gone(list(session.output.stderr_tail)):
            return gone
        line, message, raw = session.error()
        if raw.startswith("psql: error:"):
            return RestoreError(
                f"psql could not connect: {one_line(raw.removeprefix('psql: error:'))} - "
                "check that the server is up, DB_HOST/DB_PORT, DB_USER and PGPASSWORD"
            )
        if not message:
            message = f"psql exited with status {code}"
        if session is self.schema and line is not None:
            where = f"at input line {line:,} of {self.name} (schema)"
        elif job is not None:
            where = f"in {job.label} of {self.name}"
        else:
            where = f"in the {session.role} session of {self.name}"
        statement = short(job.label) if job is not None else ""
        return RestoreError(
            f"restore stopped {where}: {message} - the database holds a partial load; fix the "
            "cause or choose another backup, then run the restore again",
            statement=statement,
            line=line if session is self.schema else None,
            error=message,
        )

    # ------------------------------------------------------------ scheduling

    def _count(self, job: _Job, change: int) -> None:
        if job.group == SERIAL:
            self.serial_stages[job.stage] += change
        for key in job.keys if job.group != SERIAL else ():
            self.key_stages.setdefault(key, Counter())[job.stage] += change

    def _after_earlier(self, job: _Job) -> bool:
        """Every job of an earlier group on the same tables is done: the file's order where
        it matters (a foreign key needs the referenced table's key; a trigger must not see
        a later load), without waiting for the other tables' index builds."""
        for key in job.keys:
            stages = self.key_stages.get(key)
            if stages and any(left > 0 and stage < job.stage for stage, left in stages.items()):
                return False
        return True

    def _pick(self, session: _Psql) -> _Job | None:
        """The heaviest job `session` may start now (under the lock). The next part of a
        table weighs the table's data: the biggest tables load first, each on its own
        session, as pg_restore -j does; post-data weighs the data of its tables (an index on
        a big table is a long build). A table another session is loading weighs nothing: a
        session only helps with it when nothing else is left, so a table's own index builds
        still overlap the other tables' loads."""
        best: _Job | None = None
        best_weight = -1
        for job in self.waiting:  # in file order: a table's first waiting part comes first
            mine = self.last_block.get(session) == job.block
            busy = self.block_running[job.block] and not mine
            weight = 0 if busy else self.block_bytes[job.block]
            if weight > best_weight:
                best, best_weight = job, weight
        if not (self.data_scanned and self.serial_done and self.posts):
            return best
        first_stage = min(stage for stage, left in self.stage_left.items() if left > 0)
        first_serial = min(
            (st for st, left in self.serial_stages.items() if left > 0), default=None
        )
        # CREATE INDEX takes a SHARE lock: index builds on one table may run together;
        # everything else here (ADD CONSTRAINT, CREATE TRIGGER, ...) excludes the others.
        exclusive: set[int] = set()
        shared: set[int] = set()
        for job in self.running:
            if job.group != "copy":
                (shared if job.shared else exclusive).update(job.keys)
        for job in self.posts:
            if first_serial is not None and job.stage > first_serial:
                break  # nothing passes an entry that runs alone
            if job.group == SERIAL:
                alone = not self.running and not self.waiting and not +self.copy_left
                return job if alone and job.stage == first_stage else best
            if not self._after_earlier(job):
                continue
            if job.keys & exclusive or (not job.shared and job.keys & shared):
                continue
            if any(self.copy_left[key] for key in job.keys):
                continue
            weight = sum(self.bytes_by_key[key] for key in job.keys)
            if weight > best_weight:
                best, best_weight = job, weight
        return best

    def _assign(self) -> None:
        for session in self.sessions:
            if self.assigned[session] is not None:
                continue
            job = self._pick(session)
            if job is None:
                return
            (self.waiting if job.group == "copy" else self.posts).remove(job)
            if job.group == "copy":
                self.block_running[job.block] += 1
            job.state = "running"
            self.running.add(job)
            self.assigned[session] = job
            self.cond.notify_all()

    def _check_serial(self) -> None:
        serial = self.serial
        if serial is None or not self.serial_closed or self.serial_done:
            return
        if serial.proc.poll() is None:
            return
        serial.output.join()
        if serial.proc.returncode != 0:
            self.fail(self.session_error(serial, None))
        else:
            self.serial_done = True

    def _all_done(self) -> bool:
        return (
            self.scan_done
            and self.serial_done
            and not self.waiting
            and not self.posts
            and not self.running
        )

    # ------------------------------------------------------------ the calling thread

    def run(self) -> StreamResult:
        started = time.monotonic()
        scanner = threading.Thread(target=self._scan, name="restore-scan", daemon=True)
        scanner.start()
        watcher = threading.Thread(target=self._watch_server, name="restore-watch", daemon=True)
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
            sql_bytes=self.sql_bytes,
            tables_loaded=tuple(job.label for job in self.copies if job.part == 1),
            seconds=time.monotonic() - started,
        )

    def _scan(self) -> None:
        try:
            _Scanner(self).run()
        except _Stopped:
            pass
        except _SessionGone as gone:
            self.fail(self.session_error(gone.session, None))
        except BaseException as exc:
            self.fail(exc)

    def _close_sessions(self) -> None:
        for session in self.sessions:
            session.close()
        for session in self.sessions:
            code = session.wait(self.cancel, timeout=self.watchdog)
            if code == -2:
                self.fail(
                    RestoreError(
                        f"restore of {self.name} stopped: psql {session.role} did not exit for "
                        f"{self.watchdog:.0f} s after its last input ({self.server_note}) - "
                        "every table is loaded; check the server, then run the restore again"
                    )
                )
                return
            if code not in (0, -1):
                self.fail(self.session_error(session, None))

    # ------------------------------------------------------------ the watchdog

    def _check_watchdog(self) -> None:
        """Under the lock: fail the load when nothing has moved for `watchdog` seconds -
        no bytes scanned or loaded, no job finished, no server session of the load working
        (a psql that never answers its sync marker, a COPY or an index build waiting for a
        lock nobody releases). The failure stops every session, as any failure does."""
        running = sorted(self.running, key=lambda j: j.seq)
        mark = (
            self.scan_offset,
            self.copies_done,
            self.post_done,
            self.serial_done,
            self.pre_data_running,
            tuple((job.seq, job.pos) for job in running),
        )
        now = time.monotonic()
        if mark != self._mark:
            self._mark, self._moved_at = mark, now
        moved = max(self._moved_at, self.server_working_at)
        if now - moved < self.watchdog or self.stop.is_set():
            return
        waits = self._waits(running)
        what = waits[0] if waits else "the load made no progress"
        others = f" (also: {'; '.join(waits[1:3])})" if len(waits) > 1 else ""
        self.fail(
            RestoreError(
                f"restore of {self.name} stopped: {what} for {self.watchdog:.0f} s: "
                f"{self.server_note}{others} - the database holds a partial load; end what "
                "blocks it (see pg_stat_activity and pg_locks on the server), then run the "
                "restore again",
                error=f"{what} for {self.watchdog:.0f} s",
            )
        )

    def _waits(self, running: list[_Job]) -> list[str]:
        """What the load is waiting for, in the words of the watchdog's message."""
        waits = []
        if self.pre_data_running:
            waits.append("psql schema session did not finish the schema (pre-data)")
        for session, job in self.assigned.items():
            if job is None:
                continue
            if job.group == "copy":
                waits.append(f"{session.role} did not finish loading COPY {job.label}")
            else:
                waits.append(f"psql {session.role} did not answer its sync marker ({job.label})")
        if self.serial_closed and not self.serial_done:
            waits.append("psql data session did not finish the sequence values and data entries")
        if not waits and not self.scan_done:
            waits.append("the scanner did not read further into the file")
        return waits

    def _watch_server(self) -> None:
        """Ask the server, every few seconds, whether a session of the load is working:
        an index build that runs for an hour is progress, and so is a stream of short
        statements (a session's state changed since the last look); a lock wait is not."""
        every = max(0.2, min(10.0, self.watchdog / 5))
        conn: psycopg.Connection | None = None
        changes: set[tuple[int, object]] = set()
        while not self.stop.wait(every):
            try:
                if conn is None:
                    conn = connect_env(self.env, f"{self.appname}-watch")
                found = conn.execute(
                    """SELECT pid, state, coalesce(wait_event_type, ''),
                              coalesce(wait_event, ''), pg_blocking_pids(pid), state_change
                       FROM pg_stat_activity WHERE application_name = %s ORDER BY pid""",
                    (self.appname,),
                ).fetchall()
            except psycopg.Error as exc:
                self.server_note = f"the server did not answer ({one_line(str(exc))})"
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                continue
            rows = [(pid, st, kind, event, blockers) for pid, st, kind, event, blockers, _ in found]
            seen = {(row[0], row[5]) for row in found}
            working = any(
                st == "active" and kind not in _STALLED_WAITS for _, st, kind, _, _ in rows
            )
            if working or seen - changes:
                self.server_working_at = time.monotonic()
            changes = seen
            self.server_note = _describe_sessions(rows)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _all_sessions(self) -> list[_Psql]:
        return [s for s in (self.schema, self.serial, *self.sessions) if s is not None]

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
            scanned = self.scan_offset
            behind = sum(
                max(0, (job.end if job.end is not None else scanned) - max(job.pos, job.start))
                for job in self.copies
                if job.state != "done"
            )
            running = sorted(self.running, key=lambda j: j.seq)
            loading = [j.label for j in running if j.group == "copy"]
            building = [j.label.split(" ")[-1] for j in running if j.group != "copy"]
            in_post = self.data_scanned and not self.waiting and not loading
            current = ", ".join(loading) or ("schema" if not self.sessions else "tables")
            if in_post:
                current = f"indexes and constraints ({self.post_done} of {self.post_total})"
                if building:
                    current += ": " + ", ".join(building)
            items = self.copies_done
        done = max(0, scanned - behind)
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


def _describe_sessions(rows: list[tuple[int, str, str, str, list[int]]]) -> str:
    """What the load's server sessions do, for the watchdog's message."""
    if not rows:
        return "the load has no session on the server"
    said = []
    for pid, state, kind, event, blockers in rows[:4]:
        if blockers:
            said.append(
                f"server session {pid} waits for a lock ({event or kind}) held by "
                + ", ".join(f"pid {b}" for b in blockers)
            )
        elif state != "active":
            said.append(f"server session {pid} is {state} (waiting for psql)")
        else:
            said.append(f"server session {pid} is active ({kind}: {event})" if kind else "")
    return "; ".join(s for s in said if s) or "its server sessions are idle"


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
    pre-data, where it mostly would); later it stops the load with a RestoreError. A load in
    which nothing moves for `watchdog` seconds fails with a message naming what it waited
    for, instead of waiting forever."""
    cancel = cancel or threading.Event()
    restore = _Restore(backup, env, jobs, on_event, step_id, cancel, split_bytes, watchdog)
    try:
        return restore.run()
    except _Unsure as exc:
        unsure = exc
    where = f"line {unsure.line:,} of {backup.name}"
    if unsure.loaded:
        raise RestoreError(
            f"restore stopped at {where}: the parallel loader cannot split it with "
            f"certainty ({unsure.reason}) and part of it is already loaded - the database "
            "holds a partial load; restore it with restore.method: serial in runbook.yaml",
            line=unsure.line,
            error=unsure.reason,
        ) from None
    on_event(
        Notice(
            "warn",
            f"{backup.name} is loaded serially: at {where} the parallel loader cannot split "
            f"it with certainty ({unsure.reason}); nothing had been loaded",
            step_id,
        )
    )
    return stream_restore(backup, env, on_event=on_event, step_id=step_id, cancel=cancel)
