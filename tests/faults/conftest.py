"""Tools of the fault-injection suite: a restore site (test database + stand-in app + runbook),
a driver for CLI runs that waits for a given output line before it strikes, an S3 proxy in
front of moto's server that injects errors, connection resets and stalls, a health-URL stub,
and the checks every case makes: one clear error line, the documented exit code, no secret
in any output or file, no partial file under a final backup name.

Everything is real: the PostgreSQL cluster, moto's S3 server over HTTP, the CLI as a child
process, real signals, real file-system limits. A case waits for what it needs to see (an
output line, a request at the proxy, a query in pg_stat_activity) instead of sleeping.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.journal import Journal, RunState
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import meta_path
from preskool_dr.core.storage.meta import read_meta, write_meta
from preskool_dr.core.storage.s3store import S3Store
from preskool_dr.demo import standin_app
from preskool_dr.demo.cluster import Cluster, create_cluster
from tests.conftest import (
    APP_ROLE,
    AWS_SECRET,
    PASSWORD,
    Database,
    assert_no_secrets,
    write_runbook,
)

FINAL_NAME = re.compile(r"^preskool-backup-\d{8}_\d{6}\.sql\.gz$")
STUDENTS_SUM = "SELECT md5(string_agg(s::text, '|' ORDER BY s.id)) FROM students s"
HANG_GUARD = 180.0  # seconds: only ever reached when a case is broken, never a measurement
# the fields of one drill entry (tests append them with their own signer and key)
DRILL_FIELDS: dict[str, Any] = {
    "performed_by": "alice",
    "backup": "preskool-backup-20260220_020000.sql.gz",
    "backup_md5": "0123456789abcdef0123456789abcdef",
    "incident_declared_at": "2026-02-20T09:00:00Z",
    "app_accessible_at": "2026-02-20T10:12:30Z",
    "rto_seconds": 4350,
    "rpo_seconds": 25200,
    "result": "pass",
    "steps": [{"id": "restore", "status": "done"}],
}


# ---------------------------------------------------------------- a private cluster


def start_private_cluster() -> Cluster:
    """A cluster of the suite's own, with the app role, for cases that stop the server."""
    cluster = create_cluster(password=PASSWORD)
    with psycopg.connect(cluster.conninfo(), password=PASSWORD, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(PASSWORD)
            )
        )
    return cluster


# ---------------------------------------------------------------- CLI runs


def cli_argv(*args: str, runbook: Path | None = None) -> list[str]:
    head = [sys.executable, "-m", "preskool_dr"]
    return head + (["--runbook", str(runbook)] if runbook else []) + list(args)


def without_dac_override() -> list[str]:
    """argv prefix under which file permissions apply to this user, as to any operator.

    Root ignores permission bits through CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH; setpriv drops
    both from the child (it stays uid 0, so it can still run the venv's interpreter)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def run(
    argv: list[str], env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD + 60,
        check=False,
        **kwargs,
    )


def is_step(line: str, step_id: str, status: str) -> bool:
    """`<time>  step N/9  <id> <STATUS> <detail>`: the restore's line per transition."""
    parts = line.split()
    return len(parts) >= 5 and parts[1] == "step" and parts[3] == step_id and parts[4] == status


class Child:
    """A CLI run in the background whose stdout lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + HANG_GUARD
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if not self._reader.is_alive() or time.monotonic() > deadline:
                    raise AssertionError(f"never saw {what}; output:\n" + "\n".join(self.lines))
                self._changed.wait(0.5)

    def wait_for_step(self, step_id: str, status: str = "RUNNING") -> str:
        return self.wait_for(lambda line: is_step(line, step_id, status), f"{step_id} {status}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout=HANG_GUARD)
        finally:
            self.kill()
        self._reader.join(timeout=30)
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, "\n".join(self.lines) + "\n", err
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the restore site


@dataclass
class Site:
    """A restore target: the test database, the stand-in app with its health URL, a runbook
    whose `app` commands drive that app, and the environment of the `dr_env` fixture."""

    db: Database
    root: Path
    app_dir: Path
    server: standin_app.StandinServer
    runbook: Path
    app: dict[str, Any]
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def backup_dir(self) -> Path:
        return Path(os.environ["BACKUP_DIR"])

    @property
    def state_dir(self) -> Path:
        return Path(os.environ["PRESKOOL_DR_STATE_DIR"])

    def env(self, **over: str) -> dict[str, str]:
        return {**os.environ, **over}

    def set_app(self, **over: Any) -> None:
        """Rewrite runbook.yaml's `app` section (what a fixed runbook looks like)."""
        self.app = {**self.app, **over}
        write_runbook(self.root, app=self.app)

    def config(self) -> Config:
        return load_config(self.runbook, env=os.environ)

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(cli_argv(*args, runbook=self.runbook), env or self.env())

    def start(self, *args: str, env: dict[str, str] | None = None) -> Child:
        child = Child(cli_argv(*args, runbook=self.runbook), env or self.env())
        self.cleanups.append(child.kill)
        return child

    def restore(self, spec: str = "latest", *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("restore", spec, "--confirm", self.db.name, *extra)

    def resume(self, run_id: str) -> subprocess.CompletedProcess[str]:
        return self.cli("restore", "--resume", run_id, "--confirm", self.db.name)

    def backup(self, *, upload: bool = False) -> Path:
        return run_backup(self.config(), "daily", upload=upload).path

    def checksum(self, dbname: str | None = None) -> str:
        with self.db.connect(dbname) as conn:
            row = conn.execute(STUDENTS_SUM).fetchone()
            assert row is not None
            return str(row[0])

    def change_data(self) -> None:
        """What happened after the backup: the restore must bring these rows back."""
        with self.db.connect() as conn:
            conn.execute("DELETE FROM payments WHERE id % 3 = 0")
            conn.execute("UPDATE students SET first_name = 'CHANGED' WHERE id % 5 = 0")

    def calls(self) -> list[str]:
        return standin_app.read_calls(self.app_dir)

    def the_run(self) -> RunState:
        (state,) = Journal(self.state_dir).runs()
        return state

    def assert_no_leak(self, *results: subprocess.CompletedProcess[str]) -> None:
        """No traceback, no secret in any output, journal, backup or app file."""
        texts = [t for r in results for t in (r.stdout, r.stderr)]
        for text in texts:
            assert "Traceback" not in text, text
        assert_no_secrets(*texts)
        for folder in (self.state_dir, self.backup_dir, self.app_dir):
            assert_no_secret_files(folder)


def assert_no_secret_files(folder: Path) -> None:
    """Like conftest's folder check, but damaged .gz files (made by a case) are read raw."""
    for path in folder.rglob("*") if folder.is_dir() else ():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            with contextlib.suppress(OSError, EOFError, zlib.error):
                data = gzip.decompress(data)
        assert PASSWORD.encode() not in data, path
        assert AWS_SECRET.encode() not in data, path


@pytest.fixture
def site(tmp_path: Path, dr_env: dict[str, str], database: Database) -> Iterator[Site]:
    app_dir = tmp_path / "app"
    server = standin_app.start_server(app_dir, env=dr_env)
    app = {
        "stop": standin_app.command("stop", app_dir),
        "start": standin_app.command("start", app_dir),
        "migrate": standin_app.command("migrate", app_dir),
        "cwd": str(tmp_path),
        "health_url": server.health_url,
        "timeout_seconds": 60,
        "health_wait_seconds": 20,
    }
    site = Site(database, tmp_path, app_dir, server, write_runbook(tmp_path, app=app), app)
    try:
        yield site
    finally:
        for cleanup in reversed(site.cleanups):
            cleanup()
        server.stop()


# ---------------------------------------------------------------- what a case checks


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines that report a failure: `preskool-dr: error:` and `[FAIL]` lines."""
    return [
        line
        for line in (result.stdout + "\n" + result.stderr).splitlines()
        if line.startswith(("preskool-dr: error:", "[FAIL]"))
    ]


def the_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line that says what went wrong (and what to do): exactly one such line."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, "\n".join(lines) or result.stdout + result.stderr
    return lines[0]


def assert_says(line: str, *needles: str) -> None:
    for needle in needles:
        assert needle in line, f"{needle!r} not in: {line}"


def assert_no_partial_backups(folder: Path, *, known_bad: tuple[str, ...] = ()) -> None:
    """Every file under a final backup name is whole: its sidecar matches and gzip is intact.
    `known_bad` are files a case damaged on purpose (the tool must not have replaced them)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if FINAL_NAME.match(path.name) and path.name not in known_bad:
            result = checksum.verify_with_sidecar(path)
            assert result.ok, result.describe()


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains `text` (zombies do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for_size(path: Path, size: int) -> None:
    """Until `path` holds at least `size` bytes (a download's .part growing)."""
    deadline = time.monotonic() + HANG_GUARD
    while not (path.exists() and path.stat().st_size >= size):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never reached {size} bytes")
        time.sleep(0.05)


# ---------------------------------------------------------------- doctored backups


def backup_sql(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def rewrite_backup(path: Path, data: bytes, *, compressed: bool = False) -> None:
    """Replace a backup's bytes and re-seal it (sidecar and meta md5 follow), so only the
    content can be wrong: what a broken dump with an honest checksum looks like."""
    path.write_bytes(data if compressed else gzip.compress(data, compresslevel=1))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    checksum.write_sidecar(path, md5)
    meta = read_meta(path)
    if meta is not None:
        write_meta(path, replace(meta, md5=md5, size=path.stat().st_size))


def insert_before(sql_bytes: bytes, anchor: bytes, extra: bytes) -> bytes:
    cut = sql_bytes.index(anchor)
    return sql_bytes[:cut] + extra + sql_bytes[cut:]


def padding(nbytes: int, seed: int = 7) -> bytes:
    """SQL comment lines of incompressible text: a bigger backup that loads the same."""
    rng = random.Random(seed)
    raw = base64.b64encode(rng.randbytes(nbytes * 3 // 4))
    return b"".join(b"-- " + raw[i : i + 96] + b"\n" for i in range(0, len(raw), 96))


def padded(path: Path, nbytes: int = 4 << 20) -> None:
    """Make the backup big enough to span several 1 MiB reads (compressed); the padding goes
    before pg_dump's closing banner, which verify expects at the very end."""
    end = b"\n--\n-- PostgreSQL database dump complete\n"
    rewrite_backup(path, insert_before(backup_sql(path), end, padding(nbytes)))


def blocker(release_db: str) -> bytes:
    """A statement that waits until a database named `release_db` exists: the load stops
    at a known place until the case says go (pg_database is visible from every database)."""
    return (
        "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '"
        + release_db
        + "') LOOP PERFORM pg_sleep(0.05); END LOOP; END $$;\n"
    ).encode()


def wait_until_blocked(db: Database, target: str) -> None:
    """Until a session of the load sits in a blocker's pg_sleep inside `target` (or in the
    database step 6 loads it under: `<target>_loading_<run id>`)."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        with db.connect("postgres") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE (datname = %s "
                "OR starts_with(datname, %s)) AND wait_event = 'PgSleep'",
                (target, target + "_loading_"),
            ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.1)
    raise AssertionError(f"the load into {target} never reached the blocker")


def create_db(db: Database, name: str) -> None:
    with db.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def s3_only_backup(site: Site) -> Path:
    """A ~3 MiB backup that exists only in the bucket (the local copy is deleted)."""
    path = site.backup()
    padded(path, 4 << 20)
    config = site.config()
    store = S3Store(str(config.backups.s3_bucket), config.backups.s3_prefix)
    for member in (checksum.sidecar_path(path), meta_path(path), path):
        store.upload(member)
        member.unlink()
    return path


# ---------------------------------------------------------------- a backup served by a FIFO


class FifoBackup:
    """A backup whose bytes come through a named pipe, as from a hung network mount: each
    reader gets the whole file, except while `hold()` is on, when the bytes stop half way
    until `let_go()`. Sidecar and meta are ordinary files beside it."""

    def __init__(self, source: Path, folder: Path) -> None:
        self.data = source.read_bytes()
        self.path = folder / source.name
        for attr in (checksum.sidecar_path(source), meta_path(source)):
            if attr.exists():
                shutil.copy(attr, folder / attr.name)
        os.mkfifo(self.path)
        self.holding = threading.Event()  # set: the next reader is held half way
        self.held = threading.Event()  # set while a reader waits half way
        self.idle = threading.Event()  # set while no reader has the pipe open
        self._go = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self._go.clear()
        self.holding.set()

    def let_go(self) -> None:
        self.holding.clear()
        self._go.set()

    def reopen(self) -> None:
        """After a reader was killed half way: let go and wait until the pipe is closed, so
        the next reader does not get the bytes the dead one left in it."""
        self.let_go()
        if not self.idle.wait(HANG_GUARD):
            raise AssertionError("the FIFO writer never closed the pipe")

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.idle.set()
            try:
                fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens it
            except OSError:
                return
            self.idle.clear()
            if self._stop.is_set():
                os.close(fd)
                return
            # A fresh pipe for whoever opens next: this reader keeps the old one to its EOF.
            self.path.unlink()
            os.mkfifo(self.path)
            try:
                half = len(self.data) // 2
                if self.holding.is_set():
                    _write_all(fd, self.data[:half])
                    self.held.set()
                    self._go.wait(HANG_GUARD)
                    self.held.clear()
                    _write_all(fd, self.data[half:])
                else:
                    _write_all(fd, self.data)
            except OSError:
                pass  # the reader died (SIGKILL): serve the next one
            finally:
                os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        self.let_go()
        try:  # wake a writer blocked in open()
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        self._thread.join(timeout=10)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- the S3 fault proxy

S3_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
    "</Message><RequestId>fault-proxy</RequestId></Error>"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te"}


@dataclass
class Fault:
    """One injected misbehaviour for requests whose method and key match.

    error: answer `status` with S3's XML error `code`; stall: send `after_bytes` of the body,
    then wait for `release()`, which sends the rest or resets the connection (RST) half way;
    cut: send `after_bytes`, then close the connection cleanly (a short body); delay: wait
    `seconds` before answering normally; hold: keep the request from S3 until `release()`,
    then pass it on (a PUT that lands later than others). `times` < 0: every matching
    request."""

    action: str
    key_suffix: str = ""
    method: str = "GET"
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    after_bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    key: str
    range: str | None
    status: int


class FaultProxy:
    """An HTTP proxy in front of moto's server; AWS_ENDPOINT_URL points here."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.stalled = threading.Event()  # a stall is holding a response right now
        self._release = threading.Event()
        self._reset = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._release.clear()
            self.faults.append(fault)

    def release(self, *, reset: bool = False) -> None:
        """Let a stalled response go on (or reset its connection), and drop the faults not
        used up yet."""
        with self._lock:
            self.faults.clear()
            self._reset = reset
        self._release.set()

    def take(self, method: str, key: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and key.endswith(fault.key_suffix) and fault.times:
                    fault.times -= 1
                    return fault
        return None

    def gets(self, key_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.key.endswith(key_suffix)]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the cases read `proxy.seen`

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        fault = proxy.take(self.command, key)
        if fault is not None and fault.action == "hold":
            proxy.stalled.set()
            proxy._release.wait(HANG_GUARD)
            proxy.stalled.clear()
        if fault is not None and fault.action == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.action == "error":
            proxy.record(Seen(self.command, key, self.headers.get("Range"), fault.status))
            data = S3_ERROR_BODY.format(code=fault.code, message="injected by the test").encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            answer = response.getheaders()
        finally:
            upstream.close()
        proxy.record(Seen(self.command, key, self.headers.get("Range"), response.status))
        self.send_response(response.status)
        for name, value in answer:
            if name.lower() not in _HOP | {"content-length", "date", "server"}:
                self.send_header(name, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if fault is None or fault.action not in ("stall", "cut"):
                self.wfile.write(data)
                return
            self.wfile.write(data[: fault.after_bytes])
            self.wfile.flush()
            if fault.action == "cut":
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            proxy.stalled.set()
            proxy._release.wait(HANG_GUARD)
            proxy.stalled.clear()
            if proxy._reset:
                # SO_LINGER 0: close() sends RST, the connection is reset half way
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                return
            self.wfile.write(data[fault.after_bytes :])
        except OSError:
            pass  # the client went away (killed): nothing to answer


def _serve_proxy(monkeypatch: pytest.MonkeyPatch, s3_server: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def s3_proxy(s3: str, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The `s3` fixture (test database + fresh bucket), reached through a FaultProxy."""
    yield from _serve_proxy(monkeypatch, s3_server)


@pytest.fixture
def bucket_proxy(
    s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """The `s3_bucket` fixture (no database), reached through a FaultProxy."""
    yield from _serve_proxy(monkeypatch, s3_server)


# ---------------------------------------------------------------- a health URL stub


class HealthStub:
    """A health URL: answers `status` (None: accepts and never answers) until `release()`,
    then 200. `asked` is set by the first request."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.asked = threading.Event()
        self.released = threading.Event()
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub.requests += 1
                stub.asked.set()
                if stub.status is None and not stub.released.is_set():
                    stub.released.wait(HANG_GUARD)
                    return  # the client gave up long ago
                code = 200 if stub.released.is_set() else int(stub.status or 200)
                data = json.dumps({"status": "ok" if code == 200 else "error"}).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1/health"

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def health_stub() -> Iterator[Callable[[int | None], HealthStub]]:
    stubs: list[HealthStub] = []

    def make(status: int | None) -> HealthStub:
        stubs.append(HealthStub(status))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.stop()
