"""A stand-in for the PreSkool application: the runbook's app commands and health URL.

Usage (what runbook.yaml's app.stop/start/migrate and app.health_url point at):

    python -m preskool_dr.demo.standin_app serve   --state-dir DIR [--port N] [--db NAME]
    python -m preskool_dr.demo.standin_app stop    --state-dir DIR [fault options]
    python -m preskool_dr.demo.standin_app start   --state-dir DIR [fault options]
    python -m preskool_dr.demo.standin_app migrate --state-dir DIR [--db NAME] [fault options]

- `serve` answers GET /api/v1/health on 127.0.0.1:PORT (`--port 0`: any free port): 200
  `{"status": "ok", "db": "up"}` when the app is started and `SELECT 1 FROM students` works
  in its database, else 503 with `status`, `db` and `reason`. `?db=NAME` checks another
  database (a drill's health URL). It writes DIR/app.pid and DIR/app.port, removed on exit.
- `stop` / `start` set DIR/state to `stopped` / `started` (no file: started); the running
  `serve` reads it on every request. `migrate` brings the database up to `HEAD_REVISION`
  in an `alembic_version` table (idempotent).
- Every call of stop/start/migrate first appends its name to DIR/calls.log, so tests see
  calls even when they fail or hang. `read_calls(DIR)` returns them, `app_state(DIR)` the state.
- Fault options: `--fail` (exit 1 with a message, state unchanged), `--fail-times N` (fail
  only the first N calls of this command: a retry then succeeds), `--hang SECONDS` (sleep
  first, e.g. past app.timeout_seconds), `--spam N` (print N output lines first).
- Database: `--db`, else PRESKOOL_DR_TARGET_DB (set by the restore engine), else DB_NAME;
  host/port/user from DB_HOST/DB_PORT/DB_USER, else libpq's PGHOST/PGPORT/PGUSER; the
  password only from PGPASSWORD (libpq reads it).

From Python: `command("stop", DIR, "--fail")` builds an argv list for runbook.yaml;
`start_server(DIR)` spawns `serve` on a free port and waits until it listens; the returned
`StandinServer` has `.health_url` and `.stop()`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from preskool_dr.core.base import procs
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.files import atomic_write

HEALTH_PATH = "/api/v1/health"
HEAD_REVISION = "0002_dr_standin"
REQUIRED_TABLE = "students"
ACTIONS = ("serve", "stop", "start", "migrate")


# ---------------------------------------------------------------- files in the state dir


def state_file(state_dir: Path) -> Path:
    return state_dir / "state"


def app_state(state_dir: Path) -> str:
    """`started` or `stopped`; an app whose state was never set is running."""
    try:
        return state_file(state_dir).read_text().strip() or "started"
    except FileNotFoundError:
        return "started"


def read_calls(state_dir: Path) -> list[str]:
    try:
        return (state_dir / "calls.log").read_text().split()
    except FileNotFoundError:
        return []


def command(action: str, state_dir: Path, *extra: str) -> list[str]:
    """The argv that runs `action` against `state_dir` (for runbook.yaml's app keys)."""
    if action not in ACTIONS:
        raise ValueError(action)
    return [
        sys.executable,
        "-m",
        "preskool_dr.demo.standin_app",
        action,
        "--state-dir",
        str(state_dir),
        *extra,
    ]


# ---------------------------------------------------------------- the database side


def _connect(dbname: str | None) -> psycopg.Connection:
    """DB_* wins over libpq's PG* (the engine passes DB_*); PGPASSWORD stays with libpq."""
    params: dict[str, Any] = {"connect_timeout": 5, "application_name": "preskool-standin"}
    for var, key in (("DB_HOST", "host"), ("DB_PORT", "port"), ("DB_USER", "user")):
        if os.environ.get(var):
            params[key] = os.environ[var]
    if dbname:
        params["dbname"] = dbname
    return psycopg.connect(autocommit=True, **params)


def _default_db(explicit: str | None) -> str | None:
    return (
        explicit
        or os.environ.get("PRESKOOL_DR_TARGET_DB")
        or os.environ.get("DB_NAME")
        or os.environ.get("PGDATABASE")
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def migrate(dbname: str | None) -> str:
    """Bring `dbname` to HEAD_REVISION the way `alembic upgrade head` would; idempotent."""
    with _connect(dbname) as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS alembic_version "
            "(version_num varchar(32) NOT NULL PRIMARY KEY)"
        )
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        current = row[0] if row else None
        if current == HEAD_REVISION:
            return f"already at head {HEAD_REVISION}"
        conn.execute("DELETE FROM alembic_version")
        conn.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", (HEAD_REVISION,))
        return f"Running upgrade {current or '<base>'} -> {HEAD_REVISION}"


@dataclass(frozen=True)
class Health:
    status: int
    body: dict[str, str]


def health(state_dir: Path, dbname: str | None, table: str = REQUIRED_TABLE) -> Health:
    if app_state(state_dir) == "stopped":
        return Health(
            503,
            {"status": "stopped", "db": "unknown", "reason": "the app is stopped (app.stop)"},
        )
    try:
        with _connect(dbname) as conn:
            conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)))
    except psycopg.Error as exc:
        return Health(503, {"status": "error", "db": "down", "reason": _first_line(exc)})
    return Health(200, {"status": "ok", "db": "up"})


# ---------------------------------------------------------------- serve


def serve(state_dir: Path, port: int, dbname: str | None) -> None:
    """Answer health requests until SIGTERM; pid and port files exist while it listens."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != HEALTH_PATH:
                self._reply(404, {"status": "error", "reason": f"no such path {url.path}"})
                return
            query = urllib.parse.parse_qs(url.query)
            result = health(state_dir, query.get("db", [dbname])[0])
            self._reply(result.status, result.body)

        def _reply(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")
            sys.stderr.flush()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    pid_file, port_file = state_dir / "app.pid", state_dir / "app.port"
    try:
        atomic_write(pid_file, f"{os.getpid()}\n".encode())
        atomic_write(port_file, f"{server.server_address[1]}\n".encode())
        print(f"stand-in app serving http://127.0.0.1:{server.server_address[1]}{HEALTH_PATH}")
        sys.stdout.flush()
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        pid_file.unlink(missing_ok=True)
        port_file.unlink(missing_ok=True)


@dataclass
class StandinServer:
    """A running `serve` process (own session); `stop()` ends its process group."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return self.url + HEALTH_PATH

    def stop(self) -> None:
        procs.terminate(self.proc)


def start_server(
    state_dir: Path,
    *,
    db: str | None = None,
    env: Mapping[str, str] | None = None,
    wait_seconds: float = 60.0,
) -> StandinServer:
    """Spawn `serve` on a free port (output in DIR/serve.log) and wait until it listens."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port_file = state_dir / "app.port"
    port_file.unlink(missing_ok=True)
    argv = command("serve", state_dir, "--port", "0", *(["--db", db] if db else []))
    with (state_dir / "serve.log").open("ab") as log:
        proc = procs.spawn(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + wait_seconds
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            procs.terminate(proc)
            tail = (state_dir / "serve.log").read_text(errors="replace").strip().splitlines()
            raise DrError(
                f"the stand-in app did not start: {tail[-1] if tail else 'no output'} "
                f"(see {state_dir / 'serve.log'})"
            )
        time.sleep(0.05)
    return StandinServer(proc, state_dir, int(port_file.read_text()))


# ---------------------------------------------------------------- the commands


def _faults(args: argparse.Namespace) -> None:
    """Spam, hang, then fail, in that order: what a misbehaving deploy tool does."""
    for i in range(args.spam):
        print(f"{args.action}: output line {i + 1} of {args.spam}")
    sys.stdout.flush()
    if args.hang:
        time.sleep(args.hang)
    calls = read_calls(args.state_dir).count(args.action)
    if args.fail or calls <= args.fail_times:
        raise DrError(f"{args.action} failed (stand-in app started with a fault option)")


def run(args: argparse.Namespace) -> None:
    state_dir: Path = args.state_dir
    if args.action == "serve":
        state_dir.mkdir(parents=True, exist_ok=True)
        serve(state_dir, args.port, _default_db(args.db))
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "calls.log").open("a") as log:
        log.write(args.action + "\n")
    _faults(args)
    if args.action == "stop":
        atomic_write(state_file(state_dir), b"stopped\n")
        print("Stopping preskool_frontend ... done\nStopping preskool_backend  ... done")
    elif args.action == "start":
        atomic_write(state_file(state_dir), b"started\n")
        print("Starting preskool_backend  ... done\nStarting preskool_frontend ... done")
    else:
        dbname = _default_db(args.db)
        try:
            outcome = migrate(dbname)
        except psycopg.Error as exc:
            raise DrError(
                f"migration of {dbname or 'the database'} failed: {_first_line(exc)}"
            ) from None
        print("INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.")
        print(f"INFO  [alembic.runtime.migration] {outcome}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preskool_dr.demo.standin_app",
        description="Stand-in PreSkool app for the demo and the tests (see the module docstring).",
    )
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--state-dir", type=Path, required=True, metavar="DIR")
    parser.add_argument("--port", type=int, default=8000, help="serve: port (0: any free port)")
    parser.add_argument("--db", metavar="NAME", help="database (default: see the docstring)")
    parser.add_argument("--fail", action="store_true", help="exit 1 without doing anything")
    parser.add_argument("--fail-times", type=int, default=0, metavar="N")
    parser.add_argument("--hang", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--spam", type=int, default=0, metavar="N")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except DrError as exc:
        print(f"standin_app: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
