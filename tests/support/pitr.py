"""The point-in-time-recovery scenario: a cluster whose archive_command is the product's
`wal-push`, a base backup taken with `backup --kind base`, rows inserted at known times in
three batches, and a target between batches 2 and 3. Built once per session (the `scenario`
fixture); tests recover from it into data directories of their own."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from preskool_dr.core.base.age import generate_identity
from preskool_dr.core.base.pgbin import find_pg_bin
from preskool_dr.demo.cluster import SUPERUSER, Cluster, create_cluster
from tests.support.cli import run_cli
from tests.support.leaks import PASSWORD
from tests.support.runbook import REPO, write_runbook

ROOT = os.geteuid() == 0
ROWS = {1: 40, 2: 25, 3: 30}  # batch -> rows; each row is its own transaction


@dataclass
class Scenario:
    cluster: Cluster
    root: Path  # scratch space the postgres OS user can reach
    backup_dir: Path
    python: str  # what the server runs wal-push/wal-fetch with
    base_name: str
    base_output: str
    target: datetime  # after batch 2, before batch 3
    batch2_segment: str
    batch3_segment: str
    identity: Path | None = None  # the age key the archive is encrypted to, if it is


def chown_to_server(path: Path) -> None:
    if ROOT:
        shutil.chown(path, SUPERUSER, SUPERUSER)
        for child in path.rglob("*"):
            shutil.chown(child, SUPERUSER, SUPERUSER)


def server_python(folder: Path) -> str:
    """A Python the server's OS user can run with preskool_dr importable. As root the test
    venv's interpreter lives under /root (0700), so build a venv from the system Python of
    the same version that sees this checkout and the test venv's packages."""
    if not ROOT:
        return sys.executable
    probe = ["runuser", "-u", SUPERUSER, "--", sys.executable, "-c", "import preskool_dr"]
    if subprocess.run(probe, capture_output=True, cwd="/", check=False).returncode == 0:
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip(f"no {version} the postgres user can run")
    venv = folder / "server-venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "preskool-dr-tests.pth").write_text(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    subprocess.run(["chmod", "-R", "go+rX", str(venv)], check=True)
    return str(venv / "bin" / "python")


def sql(cluster: Cluster, query: str, port: int | None = None) -> list[tuple]:
    with psycopg.connect(
        host="127.0.0.1",
        port=port or cluster.port,
        user=SUPERUSER,
        dbname="postgres",
        password=PASSWORD,
        autocommit=True,
    ) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def insert_batch(cluster: Cluster, batch: int) -> None:
    with psycopg.connect(
        cluster.conninfo(), password=PASSWORD, autocommit=True
    ) as conn:  # autocommit: one transaction (one commit record) per row
        for n in range(ROWS[batch]):
            conn.execute("INSERT INTO pitr_events (batch, n) VALUES (%s, %s)", (batch, n))


def switch_wal(cluster: Cluster) -> str:
    """Close the current segment (so it is archived); returns its name."""
    (row,) = sql(cluster, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql(cluster, "SELECT pg_switch_wal()")
    return str(row[0])


def wait_archived(cluster: Cluster, archive: Path, name: str) -> None:
    """Wait (with a generous deadline, not a timing assertion) until `name` is archived."""
    deadline = time.monotonic() + 180
    while not ((archive / name).exists() or (archive / f"{name}.age").exists()):
        if time.monotonic() > deadline:
            stats = sql(cluster, "SELECT * FROM pg_stat_archiver")
            log = (cluster.root / "server.log").read_text()[-3000:]
            pytest.fail(f"{name} was never archived: {stats}\n{log}")
        time.sleep(0.2)


def cli_env(cluster: Cluster, backup_dir: Path, state: Path) -> dict[str, str]:
    """The operator's environment for `cluster` (the shipped runbook, no S3)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PG", "DB_", "PRESKOOL_DR_", "S3_", "BACKUP_"))
    }
    return {
        **env,
        "DB_HOST": cluster.host,
        "DB_PORT": str(cluster.port),
        "DB_NAME": "postgres",
        "DB_USER": SUPERUSER,
        "PGPASSWORD": PASSWORD,
        "BACKUP_DIR": str(backup_dir),
        "PRESKOOL_DR_STATE_DIR": str(state),
        "PRESKOOL_DR_RUNBOOK": str(REPO / "runbook.yaml"),
    }


@contextmanager
def built_scenario(*, encrypted: bool = False) -> Iterator[Scenario]:
    """The scenario, built once per session; its cluster and files are removed afterwards.
    `encrypted`: archive_command encrypts every segment to an age key made in the scenario's
    folder (PRESKOOL_DR_AGE_RECIPIENTS), readable by the server's OS user for wal-fetch."""
    root = Path(tempfile.mkdtemp(prefix="preskool-pitr-test-"))
    root.chmod(0o755)
    backup_dir = root / "backups"
    (backup_dir / "wal").mkdir(parents=True)
    backup_dir.chmod(0o755)
    chown_to_server(backup_dir / "wal")
    python = server_python(root)
    identity = root / "age.key" if encrypted else None
    keys = ""
    backup_env: dict[str, str] = {}
    if identity is not None:
        recipient = generate_identity(identity)
        keys = f"PRESKOOL_DR_AGE_RECIPIENTS={recipient} "
        identity.chmod(0o644)  # a test key: the server's OS user reads it in wal-fetch
        # the base backup too: taken with a runbook that encrypts
        runbook = write_runbook(root, encryption={"recipients": [recipient]})
        backup_env["PRESKOOL_DR_RUNBOOK"] = str(runbook)
    cluster = create_cluster(password=PASSWORD)
    try:
        archive_command = (
            f"env BACKUP_DIR={shlex.quote(str(backup_dir))} {keys}{shlex.quote(python)} "
            "-m preskool_dr wal-push %p"
        )
        sql(cluster, "ALTER SYSTEM SET archive_mode = 'on'")
        sql(cluster, f"ALTER SYSTEM SET archive_command = '{archive_command}'")
        cluster.stop()
        cluster.start()
        sql(
            cluster,
            "CREATE TABLE pitr_events (id serial PRIMARY KEY, batch int NOT NULL, n int NOT NULL,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        insert_batch(cluster, 1)
        result = run_cli(
            "backup", "--kind", "base", env=cli_env(cluster, backup_dir, root / "s") | backup_env
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (base_name,) = [p.name for p in backup_dir.iterdir() if p.is_dir() and p.name != "wal"]
        # The recoverable range must hold a whole second: a target typed in the TUI names one.
        sql(cluster, "SELECT pg_sleep(1.1)")
        switch_wal(cluster)  # batch 2 starts a segment of its own
        insert_batch(cluster, 2)
        (row,) = sql(cluster, "SELECT pg_sleep(0.05), clock_timestamp()")
        target = row[1]
        sql(cluster, "SELECT pg_sleep(0.05)")
        batch2_segment = switch_wal(cluster)
        insert_batch(cluster, 3)
        batch3_segment = switch_wal(cluster)
        wait_archived(cluster, backup_dir / "wal", batch3_segment)
        yield Scenario(
            cluster,
            root,
            backup_dir,
            python,
            base_name,
            result.stdout,
            target,
            batch2_segment,
            batch3_segment,
            identity,
        )
    finally:
        cluster.remove()
        shutil.rmtree(root, ignore_errors=True)


def stop_server(data_dir: Path) -> None:
    if (data_dir / "postmaster.pid").exists():
        argv = [find_pg_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"]
        if ROOT:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        subprocess.run(argv, capture_output=True, check=False, cwd="/")


def new_data_dir(scenario: Scenario, made: list[Path]) -> Path:
    folder = scenario.root / f"recovered-{uuid.uuid4().hex[:8]}"
    made.append(folder)
    return folder


def scenario_env(scenario: Scenario, state: Path, backup_dir: Path | None = None) -> dict[str, str]:
    return cli_env(scenario.cluster, backup_dir or scenario.backup_dir, state)


def copy_backups(scenario: Scenario, name: str) -> Path:
    """A private copy of BACKUP_DIR (base backup + archive) a test may damage."""
    copy = scenario.root / f"{name}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(scenario.backup_dir, copy)
    chown_to_server(copy / "wal")
    return copy


def drill_runbook(folder: Path) -> Path:
    """The shipped runbook, with the scenario's table as the one a recovered copy must have."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_runbook(
        folder,
        restore_test={
            "required_tables": ["pitr_events"],
            "smoke_queries": [
                {
                    "name": "events present",
                    "sql": "SELECT count(*) FROM pitr_events",
                    "min_value": 1,
                }
            ],
        },
    )
