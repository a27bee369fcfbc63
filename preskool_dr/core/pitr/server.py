"""The recovered server: the recovery settings written into its data directory, pg_ctl
start, its log followed line by line, its state read over SQL.

The recovered copy gets `archive_mode = off`: its new timeline must not land in the
production archive, where a later recovery following timeline 'latest' would take it.
As root, the server (and what it runs) belongs to the postgres OS user."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shlex
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base import database, procs
from preskool_dr.core.base.age import IDENTITY_ENV
from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import EventSink, LogLine
from preskool_dr.core.base.pgbin import find_pg_bin
from preskool_dr.core.base.settings import Config

SERVER_OS_USER = "postgres"  # who runs the server when pitr runs as root
LOG_NAME = "pitr-recovery.log"
# Transient options for this start: a log we can read, in English, at our path.
_SERVER_OPTIONS = (
    "-c logging_collector=off -c log_destination=stderr -c log_min_messages=warning "
    "-c lc_messages=C"
)
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

# (in recovery, replay LSN, last replayed transaction time)
ReplayStatus = tuple[bool, str | None, datetime | None]


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
    if settings.identity is not None:  # a path (the key stays in its file): encrypted WAL
        env.append(f"{IDENTITY_ENV}={shlex.quote(str(settings.identity))}")
    return f"env {' '.join(env)} {shlex.quote(python)} -m preskool_dr wal-fetch %f %p"


def stop_command(data_dir: Path) -> str:
    prefix = f"runuser -u {SERVER_OS_USER} -- " if running_as_root() else ""
    return f"{prefix}pg_ctl -D {shlex.quote(str(data_dir))} stop"


def check_server_python(python: str) -> None:
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


# ---------------------------------------------------------------- the recovery settings


def write_missing_config_files(data_dir: Path) -> Iterator[str]:
    """Writes a minimal postgresql.conf, pg_hba.conf or pg_ident.conf where the base backup
    has none, yielding each name once it is written."""
    for name, text in _DEFAULT_FILES.items():
        path = data_dir / name
        if not os.path.lexists(path):
            _write(path, text, os.O_CREAT | os.O_EXCL)
            yield name


def write_recovery_settings(
    data_dir: Path, comment: str, *, port: int, target: datetime, restore: str
) -> None:
    """recovery.signal, and the settings appended to postgresql.auto.conf under `comment`:
    replay with `restore` (see restore_command) up to `target` (UTC), then promote."""
    (data_dir / "standby.signal").unlink(missing_ok=True)
    (data_dir / "recovery.signal").unlink(missing_ok=True)
    _write(data_dir / "recovery.signal", "", os.O_CREAT | os.O_EXCL)
    settings = {
        "port": str(port),
        "restore_command": restore,
        "recovery_target_time": f"{target:%Y-%m-%d %H:%M:%S.%f}+00",
        "recovery_target_action": "promote",
        "recovery_target_inclusive": "on",
        # The base backup's timeline: the recoverable range (plan.py) was computed along it.
        "recovery_target_timeline": "current",
        "hot_standby": "on",  # replay progress is read over SQL while recovering
        "archive_mode": "off",  # see the module docstring
    }
    auto = data_dir / "postgresql.auto.conf"
    lines = [
        "",
        f"# {comment}",
        *(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in settings.items()),
    ]
    _write(auto, "\n".join(lines) + "\n", os.O_CREAT | os.O_APPEND)
    if running_as_root():
        _chown_tree(data_dir, SERVER_OS_USER)


def _write(path: Path, text: str, flags: int) -> None:
    """Write `text` to `path` in the data directory, never through a symbolic link (one the
    base backup's tar held would lead elsewhere in it)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _chown_tree(root: Path, user: str) -> None:
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise DrError(
            f"{root} changed while pitr wrote it (it is no longer the folder pitr made its "
            "own): someone with write access to its parent folder replaced it; nothing was "
            f"given to {user} - check that folder, then run pitr again into a new one"
        )
    entry = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(root):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


# ---------------------------------------------------------------- the running server


class ServerLog:
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

    def accepts_connections(self) -> bool:
        return any(_ACCEPTS_CONNECTIONS in line for line in self.lines)

    def promoted(self) -> bool:
        done = next((i for i, ln in enumerate(self.lines) if _RECOVERY_COMPLETE in ln), None)
        return done is not None and any(_READY in ln for ln in self.lines[done:])

    def stop_point(self) -> tuple[str, datetime] | None:
        """Where recovery stopped: (transaction id, time) of the first transaction after
        the target, the one not replayed."""
        stop = self._find(_STOP_BEFORE)
        return (stop.group(1), _log_time(stop.group(2))) if stop else None

    def last_transaction(self) -> datetime | None:
        last = self._find(_LAST_XACT)
        return _log_time(last.group(1)) if last else None

    def new_timeline(self) -> int | None:
        timeline = self._find(_NEW_TIMELINE)
        return int(timeline.group(1)) if timeline else None

    def _find(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return next((m for line in self.lines if (m := pattern.search(line))), None)


def _log_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class RecoveredServer:
    """The server in `data_dir`: pg_ctl start, its log forwarded as LogLine events, its
    replay read over SQL."""

    def __init__(self, config: Config, data_dir: Path, port: int, on_event: EventSink) -> None:
        self.config = config
        self.data_dir = data_dir
        self.port = port
        self.on_event = on_event
        self.log = ServerLog(data_dir / LOG_NAME)
        self._conn: psycopg.Connection | None = None

    def start(self) -> None:
        """pg_ctl start, without waiting: the caller follows the log."""
        result = procs.run_command(
            as_server_user(
                [
                    find_pg_bin("pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log.path),
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

    def pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def forward_log(self) -> None:
        for line in self.log.read_new():
            if line.strip():
                self.on_event(LogLine("postgres", line, "replay"))

    def failure(self, *, started: bool) -> str | None:
        """Why the server stopped, or None while it is fine. `started`: it ran, so being
        gone is the failure; else (still starting) a FATAL line in its log is."""
        if started and self.pid() is not None:
            return None
        self.forward_log()
        fatal = self.log.fatal()
        if not (started or fatal):
            return None
        # wal-fetch's own error line says why a segment could not be restored.
        ours = [ln for ln in self.log.lines if ln.startswith("preskool-dr: error: ")]
        reason = "; ".join([*fatal, *ours[:1]]) or "no FATAL line in its log"
        hint = ""
        if any("before configured recovery target" in f for f in fatal):
            hint = " - the archive ends before the target (a missing WAL segment?)"
        elif any("could not restore file" in f for f in fatal):
            hint = " - an archived WAL segment is damaged or unreadable"
        return (
            f"the server stopped during recovery: {reason}{hint}; nothing is running; "
            f"log: {self.log.path}; remove {self.data_dir} before trying again"
        )

    def poll(self) -> ReplayStatus | None:
        """(in recovery, replay LSN, last replayed transaction time), or None when the
        server does not accept connections (yet: before consistency; or pg_hba)."""
        if not self.log.accepts_connections():
            return None
        try:
            if self._conn is None or self._conn.closed:
                db = dataclasses.replace(self.config.database, host="localhost", port=self.port)
                self._conn = database.connect(db, admin=True, connect_timeout=5)
            row = self._conn.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                "pg_last_xact_replay_timestamp()"
            ).fetchone()
        except (DrError, psycopg.Error):
            self.close()
            return None
        assert row is not None
        return bool(row[0]), row[1], row[2]

    def close(self) -> None:
        """The SQL connection, if one is open; the server itself keeps running."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None
