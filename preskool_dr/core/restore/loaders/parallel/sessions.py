"""The parallel load's connections: psql child processes fed through pipes (`Psql`), the
psycopg connections that load COPY parts (`Copier`), the catalog query for table trees,
stopping the load's server sessions, and the errors a session's failure becomes.

No meta-command from the backup runs: every psql starts under a `\\restrict` key of its own
(psql.restrict_line), and what is written passes a DumpText first, which blanks
pg_dump's own `\\restrict`/`\\unrestrict` lines and refuses any other backslash line
outside COPY data before psql reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from preskool_dr.core.base.database import PINNED_SEARCH_PATH
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.procs import close_child, spawn
from preskool_dr.core.restore.loaders.parallel.jobs import Job, Stopped
from preskool_dr.core.restore.loaders.parallel.pieces import TERMINATOR, BlockEnd, inflate
from preskool_dr.core.restore.loaders.parallel.toc import Roots
from preskool_dr.core.restore.loaders.psql import PsqlOutput, restrict_line
from preskool_dr.core.restore.loaders.stream import (
    PIPE_SIZE,
    PSQL_ERROR,
    RestoreError,
    one_line,
    refused,
    server_gone,
    short,
)
from preskool_dr.core.storage.dumptext import DumpText

# -q -A -t: no command tags; query output is only our sync markers (and setval results).
SESSION_ARGV = ("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-")
WAKE_EVERY = 0.1  # seconds: how often a waiting session looks at psql's and the run's state


class SessionGone(Exception):
    """psql closed its input: it stopped on an error, or was stopped."""

    def __init__(self, session: Psql) -> None:
        super().__init__(session.role)
        self.session = session


class Psql:
    """One psql (ON_ERROR_STOP) fed through a pipe; `sync` waits until it has run all
    that was written, by asking it to echo a marker."""

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
            raise SessionGone(self) from None

    def sync(self, stop: threading.Event) -> None:
        """Return once psql has executed everything written so far."""
        self._syncs += 1
        marker = f"preskool-dr:{self.token}:{self._syncs}"
        self.write(f"SELECT '{marker}';\n".encode())
        try:
            self.stdin.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError):
            raise SessionGone(self) from None
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
                raise SessionGone(self)
            arrived.wait(WAKE_EVERY)

    def close(self) -> None:
        """No more input: psql runs what is left and exits."""
        with contextlib.suppress(OSError, ValueError, SessionGone):
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
        close_child(self.proc, self.output.join)

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


class Copier:
    """A session's connection for COPY parts: psycopg hands the rows to libpq as they are,
    where psql would first read them from a pipe line by line (a quarter of the client's CPU
    in a parallel load, on a machine whose cores the server needs)."""

    def __init__(self, env: Mapping[str, str], appname: str, preamble: bytes) -> None:
        self.conn = connect_env(env, appname)
        # the dump's session settings, without psql's own commands (`\restrict KEY`)
        lines = preamble.split(b"\n")
        self.conn.execute(b"\n".join(line for line in lines if not line.startswith(b"\\")))

    def load(
        self, job: Job, backup: Path, name: str, split_bytes: int, stop: threading.Event
    ) -> None:
        """One COPY part, inflated from its checkpoint; psycopg ends the COPY itself, so the
        terminator (`\\.`) is never sent."""
        checkpoint, job.checkpoint = job.checkpoint, None  # its zlib state is ours now
        assert checkpoint is not None
        if job.settings:
            self.conn.execute(job.settings)
        with self.conn.cursor() as cursor, cursor.copy(job.header.rstrip()) as copy:
            finder = BlockEnd(after_newline=True)
            skip, seen = checkpoint.skip, 0  # seen: rows before `data`
            held = b""
            with backup.open("rb") as f:
                f.seek(checkpoint.offset)
                pieces = inflate(f, checkpoint.inflater, checkpoint.offset, name, snapshots=False)
                for piece in pieces:
                    if stop.is_set():
                        raise Stopped
                    job.pos = piece.end
                    data = piece.data
                    if skip:
                        if len(data) <= skip:
                            skip -= len(data)
                            continue
                        data, skip = data[skip:], 0
                    end = finder.find(data)
                    # the scanner's cut: the first row end at or after `split_bytes` bytes
                    limit = max(0, split_bytes - 1 - seen) if split_bytes else len(data)
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
                f"{name} ends inside the data of {job.label}: the backup is incomplete; "
                "pick another backup (`preskool-dr list`)"
            )

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


def connect_env(
    env: Mapping[str, str], appname: str, *, pinned: bool = False
) -> psycopg.Connection:
    """A psycopg connection to where `env` points psql (PGHOST, PGPORT, PGUSER, PGDATABASE);
    the password comes from this process's environment, as for psql. `pinned`: for the
    tool's own queries, search_path is pg_catalog only (see database.PINNED_SEARCH_PATH);
    the loading sessions keep the server's default, as psql does, and the load's PGOPTIONS
    (database.load_env)."""
    return psycopg.connect(
        options=f"-c search_path={PINNED_SEARCH_PATH}" if pinned else env.get("PGOPTIONS"),
        host=env.get("PGHOST"),
        port=env.get("PGPORT"),
        user=env.get("PGUSER"),
        dbname=env.get("PGDATABASE"),
        autocommit=True,
        connect_timeout=10,
        application_name=appname,
    )


# PostgreSQL 14 and later wait (up to this many ms) until each terminated session has
# exited: the caller that drops the database next, or reports the load stopped, finds none
STOP_WAIT_MS = 5000


def stop_backends(env: Mapping[str, str], appname: str) -> None:
    """End the server sessions of a stopped load: a killed psql or pg_restore does not stop
    a CREATE INDEX its backend is running (best effort: the server may be the problem)."""
    with (
        contextlib.suppress(psycopg.Error),
        connect_env(env, f"{appname}-stop", pinned=True) as conn,
    ):
        terminate = (
            sql.SQL("pg_catalog.pg_terminate_backend(pid, {})").format(STOP_WAIT_MS)
            if conn.info.server_version >= 140000
            else sql.SQL("pg_catalog.pg_terminate_backend(pid)")
        )
        conn.execute(
            sql.SQL(
                """SELECT {} FROM pg_catalog.pg_stat_activity
                   WHERE application_name = %s AND pid <> pg_catalog.pg_backend_pid()"""
            ).format(terminate),
            (appname,),
        )


def table_trees(env: Mapping[str, str], appname: str) -> Roots:
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


# ---------------------------------------------------------------- a failure, in words


def copy_error(job: Job, name: str, exc: psycopg.Error) -> RestoreError:
    """A COPY part's failure, worded as a psql session's (`ERROR: message (DETAIL)`)."""
    if gone := server_gone([str(exc)]):
        return gone
    diag = exc.diag
    if diag.sqlstate is None:  # not the server's error: the connection failed
        return RestoreError(
            f"restore stopped in {job.label} of {name}: cannot load it over a new "
            f"connection ({one_line(str(exc))}) - check that the server is up, "
            "DB_HOST/DB_PORT, DB_USER and PGPASSWORD, then run the restore again"
        )
    message = f"{diag.severity or 'ERROR'}: {one_line(diag.message_primary or str(exc))}"
    extra = [("DETAIL", diag.message_detail), ("HINT", diag.message_hint)]
    extra.append(("CONTEXT", diag.context))
    details = "".join(f" ({what}: {one_line(text)})" for what, text in extra if text)
    return RestoreError(
        f"restore stopped in {job.label} of {name}: {message}{details} - the "
        "database holds a partial load; fix the cause or choose another backup, then run "
        "the restore again",
        statement=short(job.label),
        error=message + details,
    )


def session_error(session: Psql, job: Job | None, name: str, *, schema: bool) -> RestoreError:
    """Why psql `session` stopped (running `job`, if any); `schema`: it is the schema
    session, whose input lines are the file's lines."""
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
    if schema and line is not None:
        where = f"at input line {line:,} of {name} (schema)"
    elif job is not None:
        where = f"in {job.label} of {name}"
    else:
        where = f"in the {session.role} session of {name}"
    statement = short(job.label) if job is not None else ""
    return RestoreError(
        f"restore stopped {where}: {message} - the database holds a partial load; fix the "
        "cause or choose another backup, then run the restore again",
        statement=statement,
        line=line if schema else None,
        error=message,
    )
