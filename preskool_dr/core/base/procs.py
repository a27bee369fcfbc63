"""Child processes: argv lists, no shell, stdin closed, own session, secrets only in env.

Own session (start_new_session) means a dropped SSH terminal's SIGHUP does not reach
psql or pg_dump mid-write; the engine decides when they stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SECRET_ENV_VARS = ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def secrets() -> list[str]:
    """The secret values present in this process's environment (never printed)."""
    return [v for k in SECRET_ENV_VARS if len(v := os.environ.get(k, "")) >= 3]


def redact(text: str) -> str:
    """Replace any secret value that leaked into `text` (e.g. an echoed connection string)."""
    for value in secrets():
        text = text.replace(value, "********")
    return text


# PostgreSQL's client programs read a backup's text (psql) or talk to a server: they get the
# libpq variables, the locale and PATH, never the AWS keys or anything else in this
# process's environment (a meta-command that got through would see none of it).
PG_CLIENTS = frozenset({"psql", "pg_dump", "pg_restore", "pg_dumpall", "pg_basebackup"})
LIBPQ_ENV = frozenset(
    {
        "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
        "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGCONNECT_TIMEOUT",
        "PGCLIENTENCODING", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR",
        "PGREQUIREAUTH", "PGCHANNELBINDING", "PGREQUIREPEER", "PGGSSENCMODE", "PGGSSLIB",
        "PGGSSDELEGATION", "PGKRBSRVNAME", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS",
        "PGREQUIRESSL", "PG_COLOR",
    }
)  # fmt: skip
_PG_CLIENT_ALSO = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "KRB5CCNAME",
     "KRB5_CONFIG", "KRB5_KTNAME"}
)  # fmt: skip


def pg_client_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's libpq (PG*, PGSSL*), locale (LANG, LC_*) and PATH-like variables only,
    plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in LIBPQ_ENV or k in _PG_CLIENT_ALSO or k.startswith(("PGSSL", "LC_"))
    }
    if extra:
        env.update(extra)
    return env


def child_env(extra: Mapping[str, str] | None = None, program: str | None = None) -> dict[str, str]:
    """The environment of a child: for a PostgreSQL client `program` only pg_client_env,
    otherwise (app commands, pg_ctl whose server runs wal-fetch) all of this process's."""
    if program is not None and Path(program).name in PG_CLIENTS:
        return pg_client_env(extra)
    env = dict(os.environ)
    if extra:
        env.update(extra)
    return env


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | IO[Any] = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `argv` the one way this project starts programs.

    new_session=False keeps the child in our session, on the operator's terminal, for a
    program that must ask there (ssh-keygen asking for a passphrase with echo off)."""
    return subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=child_env(env, argv[0] if argv else None),
        start_new_session=new_session,
        close_fds=True,
    )


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it does not go."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def close_child(proc: subprocess.Popen[bytes], join_readers: Callable[[], None]) -> None:
    """Tear down a child fed through a pipe (psql) and read by threads: stop it first if it
    still runs (closing psql's input first would let it COMMIT what it has), close its
    input, wait for the readers (`join_readers`), then close its output pipes."""
    if proc.poll() is None:
        terminate(proc)
    with contextlib.suppress(OSError, ValueError):
        if proc.stdin is not None:
            proc.stdin.close()
    join_readers()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str  # the last lines of stdout+stderr, redacted
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        name = Path(self.argv[0]).name if self.argv else "?"
        if self.timed_out:
            return f"{name} did not finish within the timeout and was stopped"
        if self.returncode == 0:
            return f"{name} finished ({self.seconds:.1f} s)"
        last = self.output.strip().splitlines()[-1:] or [""]
        return f"{name} exited with status {self.returncode}: {last[0]}".rstrip(": ")


def run_command(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    keep_lines: int = 200,
) -> CommandResult:
    """Run to completion, streaming merged output lines to `on_line`, keeping the tail."""
    started = time.monotonic()
    try:
        proc = spawn(argv, cwd=cwd, env=env, stderr=subprocess.STDOUT)
    except OSError as exc:
        return CommandResult(
            tuple(argv), 127, f"cannot start {argv[0]}: {exc.strerror}", False, 0.0
        )
    tail: deque[str] = deque(maxlen=keep_lines)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
            tail.append(line)
            if on_line:
                on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    deadline = started + timeout if timeout else None
    while proc.poll() is None:
        if cancel is not None and cancel.is_set():
            terminate(proc)
            break
        if deadline is not None and time.monotonic() > deadline:
            timed_out = True
            terminate(proc)
            break
        # returns as soon as the child exits (a sleep(0.05) here cost each short command
        # up to 50 ms); still wakes every 50 ms for cancel and the deadline
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    proc.wait()
    reader.join(timeout=5)
    return CommandResult(
        tuple(argv), proc.returncode, "\n".join(tail), timed_out, time.monotonic() - started
    )
