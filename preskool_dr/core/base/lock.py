"""One run per target database at a time: a local flock and a lock on the server.

The flock on `<state dir>/locks/<host>_<port>_<db>.lock`: the kernel releases it when the
holder dies (even by SIGKILL), so a stale lock from a dead process is never a problem;
the file's content only names the holder for the message the second operator reads. The
file is opened without following symlinks and must be a regular file of this user with
one link, in a state folder only this user can write: a planted symlink or hard link
never makes preskool-dr truncate another file.

The flock only excludes runs that share a state folder and spell the host the same way.
`ServerLock` is the lock that counts: a session-level PostgreSQL advisory lock in the
admin database, keyed by the target database's name, so `localhost` and `127.0.0.1`,
another user's state folder and another machine all meet on it. A restore holds it
exclusively for its whole run (see Engine); `backup` takes it shared while it dumps, so
it refuses a database that a restore is replacing. The server releases it when the
holding session ends, however the process died. The holder is named from its session's
application_name (`preskool-dr RUN_ID PID USER@HOST`).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import DrError, LockedError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.paths import open_private_file, secure_state_subdir
from preskool_dr.core.base.settings import DatabaseSettings


def lock_path(state_dir: Path, host: str, port: int, dbname: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{host}_{port}_{dbname}")
    return state_dir / "locks" / f"{safe}.lock"


class TargetLock:
    def __init__(self, path: Path, *, run_id: str, operator: str) -> None:
        self.path = path
        self.run_id = run_id
        self.operator = operator
        self._fd: int | None = None

    def acquire(self) -> TargetLock:
        secure_state_subdir(self.path.parent)
        fd = open_private_file(self.path, os.O_RDWR | os.O_CREAT, "lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another run holds the lock on this target: run {holder.get('run_id', '?')} by "
                f"{holder.get('operator', '?')} (pid {holder.get('pid', '?')}, started "
                f"{holder.get('since', '?')}); wait for it, or stop it and resume it "
                "with `preskool-dr restore --resume RUN_ID`"
            ) from None
        info = {
            "run_id": self.run_id,
            "operator": self.operator,
            "pid": os.getpid(),
            "since": utcnow().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> TargetLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, str]:
    try:
        data = os.pread(fd, 4096, 0)
        parsed = json.loads(data.decode() or "{}")
        return parsed if isinstance(parsed, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- the server's lock

LOCK_NAMESPACE = "preskool-dr:target-database:"
APP_NAME_BYTES = 63  # PostgreSQL keeps NAMEDATALEN - 1 bytes of application_name
# how long a resumed run waits for the session of its own dead process to go
OWN_LEFTOVER_WAIT_SECONDS = 30.0


def server_lock_key(dbname: str) -> int:
    """The advisory lock's 64-bit key: the first 8 bytes of SHA-256 over a namespaced name,
    so it does not depend on the server's hash functions and another application's keys
    meet it only by a 2^-64 chance."""
    digest = hashlib.sha256((LOCK_NAMESPACE + dbname).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder_label(run_id: str | None, operator: str) -> str:
    """The lock session's application_name: `preskool-dr RUN_ID PID USER@HOST`
    (`backup` instead of a run id; USER is this process's account when `operator` is
    empty), cut to what PostgreSQL keeps."""
    if not operator:
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):
            operator = "?"
    text = f"preskool-dr {run_id or 'backup'} {os.getpid()} {operator}@{socket.gethostname()}"
    return text.encode()[:APP_NAME_BYTES].decode("utf-8", "ignore")


_LABEL = re.compile(r"preskool-dr (?P<what>\S+) (?P<pid>\d+) (?P<who>.*)")


@dataclass(frozen=True)
class Holder:
    """A session holding the target's advisory lock, as pg_locks + pg_stat_activity see it."""

    backend_pid: int
    application_name: str
    db_user: str
    exclusive: bool

    @property
    def run_id(self) -> str | None:
        match = _LABEL.fullmatch(self.application_name)
        return match["what"] if match and match["what"] != "backup" else None

    def describe(self) -> str:
        """`is being restored by run 20261204-... (user root on host dbhost, pid 4242)`, or
        `is being backed up (...)` for a backup's shared hold."""
        match = _LABEL.fullmatch(self.application_name)
        if match is None:
            who = (
                f"by a session named {self.application_name or '(no application_name)'!r} "
                f"(database user {self.db_user or '?'}, server pid {self.backend_pid})"
            )
        else:
            user, _, host = match["who"].rpartition("@")
            run = "" if match["what"] == "backup" else f"by run {match['what']} "
            who = f"{run}(user {user or '?'} on host {host or '?'}, pid {match['pid']})"
        return f"is being {'restored' if self.exclusive else 'backed up'} {who}"


class ServerLock:
    """A session-level advisory lock on `db.admin_db`, keyed by the target database's name.

    Exclusive (a restore, connecting as the admin role) or shared (`backup`, connecting as
    the app role). One dedicated connection holds it; `ensure()` checks it is still held
    (the server may have restarted) and takes it again when it is free."""

    def __init__(
        self,
        db: DatabaseSettings,
        target: str,
        *,
        run_id: str | None,
        operator: str,
        shared: bool = False,
    ) -> None:
        self.db = db
        self.target = target
        self.run_id = run_id
        self.shared = shared
        self.key = server_lock_key(target)
        self.label = holder_label(run_id, operator)
        self._conn: psycopg.Connection | None = None
        self._guard = threading.Lock()  # the TUI's worker threads and close() share it

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> ServerLock:
        """Take the lock; LockedError naming the holder when another session has it,
        DrError when the server cannot be reached."""
        with self._guard:
            if self._conn is None:
                self._conn = self._take()
        return self

    def try_acquire(self) -> ServerLock:
        """`acquire`, except that an unreachable server is not an error yet: the steps
        that need the server call `ensure()` and fail there, with their own message."""
        try:
            return self.acquire()
        except LockedError:
            raise
        except DrError:
            return self

    def ensure(self) -> None:
        """Before a destructive step: the lock is held on a live session, or taken now."""
        with self._guard:
            if self._conn is not None:
                try:
                    if self._holds(self._conn):
                        return
                except psycopg.Error:
                    pass  # the session is gone (server restart): take the lock again
                self._close()
            self._conn = self._take()

    def release(self) -> None:
        with self._guard:
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # ends the session: the server drops its advisory locks

    def _take(self) -> psycopg.Connection:
        conn = database.connect(
            self.db,
            self.db.admin_db,
            admin=not self.shared,
            application_name=self.label,
        )
        try:
            deadline = time.monotonic() + OWN_LEFTOVER_WAIT_SECONDS
            while not self._try(conn):
                holders = self._holders(conn)
                own = [h for h in holders if self.run_id and h.run_id == self.run_id]
                others = [h for h in holders if h not in own]
                if others or time.monotonic() > deadline:
                    raise LockedError(self._refusal(others or own))
                # Our own run's session, left by a process that died (this process holds
                # the run's local lock, so that one is gone): end it instead of waiting for
                # the server to notice. A restore connects as the admin role, which may.
                for holder in own:
                    conn.execute("SELECT pg_terminate_backend(%s)", (holder.backend_pid,))
                time.sleep(0.1)
        except BaseException:
            conn.close()
            raise
        return conn

    def _try(self, conn: psycopg.Connection) -> bool:
        func = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
        row = conn.execute(f"SELECT {func}(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    def _lock_rows(self, conn: psycopg.Connection, *, mine: bool) -> list[tuple[object, ...]]:
        """Granted pg_locks rows of this key in the admin database: this session's or the
        others' (with their application_name and user)."""
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        rows = conn.execute(
            sql.SQL(
                """SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
                          l.mode = 'ExclusiveLock'
                   FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                     AND l.database = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                     AND l.classid::bigint = %s AND l.objid::bigint = %s
                     AND l.pid {} pg_backend_pid()
                   ORDER BY l.mode = 'ExclusiveLock' DESC, l.pid"""
            ).format(sql.SQL("=" if mine else "<>")),
            (unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchall()
        return list(rows)

    def _holds(self, conn: psycopg.Connection) -> bool:
        return bool(self._lock_rows(conn, mine=True))

    def _holders(self, conn: psycopg.Connection) -> list[Holder]:
        return [
            Holder(int(str(r[0])), str(r[1]), str(r[2]), bool(r[3]))
            for r in self._lock_rows(conn, mine=False)
        ]

    def _refusal(self, holders: list[Holder]) -> str:
        where = f"{self.target} on {self.db.host}:{self.db.port}"
        if not holders:  # released and taken again in between: rare
            return f"the lock on target {where} stayed busy; nothing was changed - retry"
        first = holders[0]
        doing = f"target {where} {first.describe()}"
        if self.shared:
            return (
                f"{doing}: the backup was not taken (it would save a database that is being "
                "replaced); run it again once that run has finished"
            )
        if first.exclusive and first.run_id:
            return (
                f"{doing}; nothing was changed - wait for it, or stop it and resume it "
                f"with `preskool-dr restore --resume {first.run_id}` where it was started"
            )
        return f"{doing}; nothing was changed - wait for it to finish (or stop it), then retry"
