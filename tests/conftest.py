"""Real components for every test: one private PostgreSQL cluster per session, a fresh
database per test, moto's S3 server over real HTTP, and an isolated environment."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pytest
from psycopg import sql

from preskool_dr.core.base.ports import free_port
from preskool_dr.demo.cluster import Cluster, create_cluster
from preskool_dr.demo.seed import seed_database

REPO = Path(__file__).resolve().parent.parent
APP_ROLE = "preskool"
PASSWORD = "pw-MARKER-7f3a9c"  # a marker: tests grep written files for it


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = create_cluster(password=PASSWORD)
    try:
        with psycopg.connect(cluster.conninfo(), password=PASSWORD, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(PASSWORD)
                )
            )
        yield cluster
    finally:
        cluster.remove()


@dataclass
class Database:
    """A fresh database in the session cluster, owned by the app role."""

    cluster: Cluster
    name: str

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            self.cluster.conninfo(dbname or self.name), password=PASSWORD, autocommit=True
        )

    def row_counts(self, dbname: str | None = None) -> dict[str, int]:
        with self.connect(dbname) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]
            return {
                t: conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))
                ).fetchone()[0]
                for t in tables
            }

    def accepts_connections(self, dbname: str | None = None) -> bool:
        """False for a database that is missing or closed (step 5's placeholder)."""
        with self.connect("postgres") as conn:
            row = conn.execute(
                "SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname or self.name,)
            ).fetchone()
            return bool(row and row[0])

    def exists(self, dbname: str) -> bool:
        with self.connect("postgres") as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
                is not None
            )


def make_database(cluster: Cluster, *, seeded: bool = True, scale: float = 0.05) -> Database:
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.conninfo(), password=PASSWORD, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(APP_ROLE)
            )
        )
    db = Database(cluster, name)
    if seeded:
        seed_database(cluster.conninfo(name, user=APP_ROLE), password=PASSWORD, scale=scale)
    return db


@pytest.fixture
def database(pg_cluster: Cluster) -> Iterator[Database]:
    """A fresh, seeded PreSkool database; dropped afterwards (with any _before_ copies)."""
    db = make_database(pg_cluster)
    yield db
    with psycopg.connect(pg_cluster.conninfo(), password=PASSWORD, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (db.name + "%",)
            )
        ]
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def drop_database(db: Database) -> None:
    """Drop `db` (and end its sessions)."""
    with db.connect("postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name))
        )


@pytest.fixture
def scratch(pg_cluster: Cluster) -> Iterator[Callable[[], Database]]:
    """`scratch()`: a new empty database in the session cluster, dropped after the test."""
    made: list[Database] = []

    def make() -> Database:
        made.append(make_database(pg_cluster, seeded=False))
        return made[-1]

    yield make
    for db in made:
        drop_database(db)


@pytest.fixture
def base_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A clean environment: no inherited AWS_/PG/DB_ settings; private BACKUP_DIR and state
    dir; the repo's runbook. No database and no S3 unless another fixture adds them."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "PG", "DB_", "PRESKOOL_DR_", "S3_", "BACKUP_")):
            monkeypatch.delenv(var, raising=False)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)  # as `backup` makes it; `check` warns about a 0755 one
    values = {
        "BACKUP_DIR": str(backup_dir),
        "PRESKOOL_DR_STATE_DIR": str(tmp_path / "state"),
        "PRESKOOL_DR_RUNBOOK": str(REPO / "runbook.yaml"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def dr_env(
    monkeypatch: pytest.MonkeyPatch,
    base_env: dict[str, str],
    pg_cluster: Cluster,
    database: Database,
) -> dict[str, str]:
    """The contract's environment pointing at the test database; no S3 unless `s3` is used."""
    values = {
        **base_env,
        "DB_HOST": pg_cluster.host,
        "DB_PORT": str(pg_cluster.port),
        "DB_NAME": database.name,
        "DB_USER": APP_ROLE,
        "PGPASSWORD": PASSWORD,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


AWS_SECRET = "aws-secret-MARKER-42"  # a marker: tests grep outputs for it


def _use_new_bucket(monkeypatch: pytest.MonkeyPatch, server: str) -> str:
    bucket = f"preskool-test-{uuid.uuid4().hex[:8]}"
    for key, value in {
        "AWS_ENDPOINT_URL": server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_BUCKET": bucket,
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=server).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch, s3_server: str, base_env: dict[str, str]) -> str:
    """A fresh bucket and BACKUP_DIR, without a database (catalog, S3 and verify tests)."""
    return _use_new_bucket(monkeypatch, s3_server)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, s3_server: str, dr_env: dict[str, str]) -> str:
    """The test database plus a fresh bucket; S3_BUCKET and AWS_* set. Returns the bucket."""
    return _use_new_bucket(monkeypatch, s3_server)


@pytest.fixture
def app_runbook(tmp_path: Path, dr_env: dict[str, str]) -> Iterator[Path]:
    """runbook.yaml whose `app` commands and health URL drive a running stand-in app: what
    a whole nine-step restore of the test database needs."""
    from preskool_dr.demo import standin_app

    app_dir = tmp_path / "app"
    server = standin_app.start_server(app_dir, env=dr_env)
    try:
        yield write_runbook(
            tmp_path,
            app={
                "stop": standin_app.command("stop", app_dir),
                "start": standin_app.command("start", app_dir),
                "migrate": standin_app.command("migrate", app_dir),
                "cwd": str(tmp_path),
                "health_url": server.health_url,
                "timeout_seconds": 60,
                "health_wait_seconds": 20,
            },
        )
    finally:
        server.stop()


def write_runbook(folder: Path, **sections: dict) -> Path:
    """A copy of the repo's runbook.yaml with some top-level sections merged/replaced."""
    import yaml

    data = yaml.safe_load((REPO / "runbook.yaml").read_text())
    for key, value in sections.items():
        if isinstance(data.get(key), dict) and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = folder / "runbook.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """`python -m preskool_dr ARGS` as a real child process, in the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "preskool_dr", *args],
        env=env if env is not None else os.environ.copy(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def pg_dump_shaped(body: bytes) -> bytes:
    """`body` between the banners pg_dump's plain output starts and ends with: a hand-made
    backup must look like a whole dump to pass verify's content check."""
    return (
        b"--\n-- PostgreSQL database dump\n--\n\n"
        + body
        + b"\n--\n-- PostgreSQL database dump complete\n--\n\n"
    )


def assert_no_secrets(*texts: str, folder: Path | None = None) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert AWS_SECRET not in text
    for path in folder.rglob("*") if folder else ():
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert PASSWORD.encode() not in data, path
            assert AWS_SECRET.encode() not in data, path


def make_signing_key(folder: Path, principal: str) -> tuple[Path, Path]:
    """A fresh ed25519 key (no passphrase) and an allowed_signers file naming `principal`."""
    key = folder / f"{principal}_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(key)],
        check=True,
    )
    kind, blob = (folder / f"{principal}_ed25519.pub").read_text().split()[:2]
    allowed = folder / "allowed_signers"
    allowed.write_text(f'{principal} namespaces="preskool-dr-drill" {kind} {blob}\n')
    return key, allowed


def assert_openssh_verifies(entry: dict, allowed: Path, principal: str, folder: Path) -> None:
    """The entry's signature checks with stock `ssh-keygen -Y verify`, not only our code."""
    from preskool_dr.core.drill.entry import canonical_bytes

    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    signature = folder / "entry.sig"
    signature.write_text(entry["signature"])
    check = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            principal,
            "-n",
            "preskool-dr-drill",
            "-s",
            str(signature),
        ],
        input=canonical_bytes(unsigned),
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
