"""The sandbox behind `preskool-dr demo`: everything the runbook needs, on this machine.

A private PostgreSQL cluster with a seeded `preskool_db`, a local S3 endpoint (moto's
server, as a child process so `--keep` can leave it running), the stand-in app with a
health URL, a runbook.yaml pointing at all of it, and backups taken by the real backup
code (demo/backups.py). `Sandbox.stop()` undoes everything it started; `sandbox.json` in
the sandbox folder names the processes (never the password), so `stop_sandbox(DIR)`
(demo/manifest.py) can do the same later.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import psycopg
import yaml
from psycopg import sql

from preskool_dr.core.base import files, procs
from preskool_dr.core.base.age import generate_identity
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.base.runbook_file import shipped_runbook_path
from preskool_dr.core.drill import signing
from preskool_dr.core.restore.appctl import check_health
from preskool_dr.core.storage import catalog
from preskool_dr.demo import standin_app
from preskool_dr.demo.backups import take_backups
from preskool_dr.demo.cluster import Cluster, create_cluster
from preskool_dr.demo.manifest import (
    describe_cluster,
    describe_folder,
    remove_cluster,
    remove_folder,
    write_manifest,
)
from preskool_dr.demo.seed import seed_database

# Measured on a 2-core machine: scale 0.5 gives a ~4 MB gzip backup (5,000 students,
# ~500,000 attendance rows) that restores in 2-4 s; seeding takes 7-15 s. Scale 1.0 doubles
# all of it, which makes the demo slower to open without showing anything new.
DEMO_SCALE = 0.5
DATABASE = "preskool_db"
APP_ROLE = "preskool"
DRILL_DATABASE = "preskool_drill"
BUCKET = "preskool-demo-backups"
# Variables of the operator's own setup that must not leak into the sandbox (a real
# AWS profile, a PGSERVICE, a production BACKUP_DIR...).
_FOREIGN_PREFIXES = ("PG", "AWS_", "DB_", "PRESKOOL_DR_")
_FOREIGN_NAMES = ("S3_BUCKET", "BACKUP_DIR")


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Run with exactly `env` as os.environ (libpq, boto3 and children read it), then restore."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Sandbox:
    """What the demo started; each part is None until it runs. `stop()` is idempotent."""

    dir: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    aws_secret: str = field(default_factory=lambda: "sandbox-" + secrets.token_hex(8), repr=False)
    cluster: Cluster | None = None
    s3_proc: subprocess.Popen[bytes] | None = None
    s3_port: int | None = None
    app: standin_app.StandinServer | None = None
    records: list[catalog.BackupRecord] = field(default_factory=list)  # newest first
    # what stop() stopped and removed, one line each, for the demo's last words
    removed: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, parent: Path | None = None) -> Sandbox:
        return cls(Path(tempfile.mkdtemp(prefix="preskool-demo-", dir=parent)))

    # ------------------------------------------------------------ where things are

    @property
    def runbook(self) -> Path:
        return self.dir / "runbook.yaml"

    @property
    def backup_dir(self) -> Path:
        return self.dir / "backups"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def app_dir(self) -> Path:
        return self.dir / "app"

    @property
    def drill_key(self) -> Path:
        return self.dir / "drill-signing-key"

    @property
    def age_identity(self) -> Path:
        """The age key the demo's encrypted backup is encrypted to (made at start)."""
        return self.dir / "demo-age.key"

    @property
    def allowed_signers(self) -> Path:
        return self.dir / "allowed_signers"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def health_url(self) -> str:
        return self.app.health_url if self.app else ""

    @property
    def env(self) -> dict[str, str]:
        """The contract's variables for this sandbox (PGPASSWORD and the AWS secret included)."""
        assert self.cluster is not None
        return {
            "DB_HOST": self.cluster.host,
            "DB_PORT": str(self.cluster.port),
            "DB_NAME": DATABASE,
            "DB_USER": APP_ROLE,
            "PGPASSWORD": self.password,
            "BACKUP_DIR": str(self.backup_dir),
            "S3_BUCKET": BUCKET,
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": "sandbox",
            "AWS_SECRET_ACCESS_KEY": self.aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            # no ~/.aws files: the sandbox must never reach a real account
            "AWS_CONFIG_FILE": str(self.dir / "aws-config-none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.dir / "aws-credentials-none"),
            "PRESKOOL_DR_STATE_DIR": str(self.state_dir),
            "PRESKOOL_DR_RUNBOOK": str(self.runbook),
            "PRESKOOL_DR_AGE_IDENTITY": str(self.age_identity),
        }

    def full_environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) without the operator's own DB/AWS settings, plus ours."""
        base = os.environ if base is None else base
        kept = {
            k: v
            for k, v in base.items()
            if not k.startswith(_FOREIGN_PREFIXES) and k not in _FOREIGN_NAMES
        }
        return {**kept, **self.env}

    # ------------------------------------------------------------ starting

    def start(
        self,
        *,
        scale: float = DEMO_SCALE,
        source_runbook: Path | None = None,
        on_event: EventSink = ignore_events,
    ) -> None:
        """Start everything and take the backups. On failure the caller still calls stop()."""
        if importlib.util.find_spec("moto.server") is None:
            raise DrError(
                "the demo's local S3 endpoint needs moto[server]: run `make demo`, or "
                "pip install 'moto[server]>=5.1,<6' into this environment"
            )
        on_event(Notice("info", f"Sandbox folder: {self.dir}"))
        on_event(Notice("info", "Starting a private PostgreSQL cluster..."))
        self.cluster = create_cluster(password=self.password)
        self._write_manifest()
        on_event(
            Notice(
                "ok",
                f"PostgreSQL on {self.cluster.host}:{self.cluster.port} "
                f"(data in {self.cluster.data_dir})",
            )
        )
        self._create_database()
        on_event(Notice("info", f"Seeding {DATABASE} with PreSkool data (scale {scale})..."))
        seed_database(
            self.cluster.conninfo(DATABASE, user=APP_ROLE), password=self.password, scale=scale
        )
        self._start_s3()
        on_event(Notice("ok", f"Local S3 endpoint {self.s3_url}, bucket {BUCKET}"))
        self.app_dir.mkdir()
        with environment(self.full_environ()):
            self.app = standin_app.start_server(self.app_dir)
            self._write_manifest()
            health = check_health(self.app.health_url, wait_seconds=30)
        if not health.ok:
            raise DrError(f"the stand-in app is not healthy: {health.detail}")
        on_event(Notice("ok", f"Stand-in app: {self.app.health_url} answers 200"))
        self._make_drill_key()
        self._write_runbook(source_runbook or shipped_runbook_path())
        self._take_backups(on_event)

    def _create_database(self) -> None:
        assert self.cluster is not None
        with psycopg.connect(
            self.cluster.conninfo(), password=self.password, autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(APP_ROLE)
                )
            )

    def _start_s3(self, wait_seconds: float = 60.0) -> None:
        self.s3_port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)]
        log_path = self.dir / "s3.log"
        with log_path.open("ab") as log:
            self.s3_proc = procs.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        self._write_manifest()
        deadline = time.monotonic() + wait_seconds
        while not _port_open(self.s3_port):
            if self.s3_proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()
                raise DrError(
                    f"the local S3 endpoint did not start: {tail[-1] if tail else 'no output'} "
                    f"(see {log_path})"
                )
            time.sleep(0.1)
        with environment(self.full_environ()):
            try:
                boto3.client("s3").create_bucket(Bucket=BUCKET)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise DrError(f"cannot create the sandbox bucket: {exc}") from None

    def _make_drill_key(self) -> None:
        """A throwaway SSH key so a drill can sign its log entry; no ssh-keygen, no key."""
        if shutil.which("ssh-keygen") is None:
            return
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo@preskool-dr"]
        result = procs.run_command([*keygen, "-f", str(self.drill_key)], timeout=60)
        if not result.ok:
            raise DrError(f"cannot make the demo's drill signing key: {result.describe()}")
        # The drill log's trust root, named in the runbook (drill.allowed_signers): the demo
        # key may sign as any name the operator types at the sign-off.
        kind, blob = Path(f"{self.drill_key}.pub").read_text(encoding="utf-8").split()[:2]
        line = f'* namespaces="{signing.NAMESPACE}" {kind} {blob}\n'
        files.atomic_write(self.allowed_signers, line.encode(), mode=0o600)

    def _write_runbook(self, source: Path) -> None:
        """The shipped runbook with the database, backups and app pointed at the sandbox."""
        assert self.cluster is not None and self.app is not None
        data: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        data.setdefault("database", {}).update(
            host=self.cluster.host,
            port=self.cluster.port,
            name=DATABASE,
            user=APP_ROLE,
            admin_user="postgres",
            admin_db="postgres",
        )
        backups = data.setdefault("backups", {})
        old_dir = str(backups.get("dir", "/var/backups/preskool"))
        backups["dir"] = str(self.backup_dir)
        backups.pop("s3_bucket", None)
        app_cmd = {a: standin_app.command(a, self.app_dir) for a in ("stop", "start", "migrate")}
        data["app"] = {
            **app_cmd,
            "cwd": str(self.dir),
            "health_url": self.app.health_url,
            "timeout_seconds": 120,
            "health_wait_seconds": 30,
        }
        drill = data.setdefault("drill", {})
        drill["target_db"] = DRILL_DATABASE
        drill["app"] = {
            "migrate": list(app_cmd["migrate"]),
            "cwd": str(self.dir),
            "health_url": f"{self.app.health_url}?db={DRILL_DATABASE}",
            "timeout_seconds": 120,
            "health_wait_seconds": 30,
        }
        if self.drill_key.exists():
            drill["sign_key"] = str(self.drill_key)
            drill["allowed_signers"] = str(self.allowed_signers)
        # The step texts show what really runs here, not docker-compose and alembic.
        shown = {
            "app_offline": _shown(app_cmd["stop"]),
            "migrate": _shown(app_cmd["migrate"]),
            "app_online": _shown(app_cmd["start"]),
            "health": f"curl {self.app.health_url}",
        }
        for step in data.get("steps") or []:
            if step.get("id") in shown:
                step["command"] = shown[step["id"]]
            elif isinstance(step.get("command"), str):
                step["command"] = step["command"].replace(old_dir, str(self.backup_dir))
        header = (
            "# preskool-dr demo sandbox: the shipped runbook pointed at this sandbox.\n"
            f"# Made from {source}; removed with the sandbox.\n"
        )
        self.runbook.write_text(header + yaml.safe_dump(data, sort_keys=False, width=100))
        load_config(self.runbook, env=self.env)  # a broken runbook fails here, not in the TUI

    def _take_backups(self, on_event: EventSink) -> None:
        """Real backups, oldest first, with a school day of attendance between them so each
        one holds different data (as a week of real backups would)."""
        assert self.cluster is not None
        with environment(self.full_environ()):
            config = load_config(self.runbook)
            recipient = generate_identity(self.age_identity)
            taken = take_backups(config, self._school_day, on_event, recipient)
            self.records = catalog.list_backups(config)
        on_event(Notice("ok", f"{taken} backups in {self.backup_dir} and s3://{BUCKET}/"))

    def _school_day(self) -> None:
        assert self.cluster is not None
        with psycopg.connect(
            self.cluster.conninfo(DATABASE, user=APP_ROLE), password=self.password, autocommit=True
        ) as conn:
            conn.execute(
                """INSERT INTO attendance (enrollment_id, day, status)
                   SELECT e.id, (SELECT max(day) + 1 FROM attendance), 'present'
                   FROM enrollments e"""
            )

    def _write_manifest(self) -> None:
        """What `stop_sandbox` needs to find the processes later; no secrets in it."""
        write_manifest(
            self.dir,
            self.cluster,
            s3_pid=self.s3_proc.pid if self.s3_proc else None,
            app_pid=self.app.proc.pid if self.app else None,
        )

    # ------------------------------------------------------------ stopping

    def running(self) -> list[str]:
        """What this sandbox has started and made, one line each (what --keep leaves)."""
        parts = []
        if self.cluster is not None:
            parts.append(describe_cluster(self.cluster))
        if self.s3_proc is not None:
            parts.append(f"the S3 endpoint (moto) at {self.s3_url}, pid {self.s3_proc.pid}")
        if self.app is not None:
            parts.append(f"the stand-in app at {self.app.url}, pid {self.app.proc.pid}")
        if self.dir.exists():
            parts.append(describe_folder(self.dir))
        return parts

    def stop(self) -> list[str]:
        """Stop all that runs and delete the files; returns problems (never raises them).
        `removed` says what was stopped and removed."""
        problems: list[str] = []
        if self.app is not None:
            self.app.stop()
            self.removed.append(
                f"stopped the stand-in app ({self.app.url}, pid {self.app.proc.pid})"
            )
            self.app = None
        if self.s3_proc is not None:
            procs.terminate(self.s3_proc)
            self.removed.append(
                f"stopped the S3 endpoint (moto, {self.s3_url}, pid {self.s3_proc.pid})"
            )
            self.s3_proc = None
        if self.cluster is not None:
            problems += remove_cluster(self.cluster, self.removed)
            self.cluster = None
        problems += remove_folder(self.dir, self.removed)
        return problems


def _shown(argv: list[str]) -> str:
    """The stand-in command as the step text shows it: `python -m ...`, not the venv path."""
    return shlex.join(["python", *argv[1:]])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
