"""Fixtures for every test: one private PostgreSQL cluster per session, a fresh database per
test (a copy of a seeded template), moto's S3 server over real HTTP, an isolated
environment, the restore site and the PITR scenario. The helpers live in tests/support."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.base.ports import free_port
from preskool_dr.demo.cluster import Cluster, create_cluster
from tests.support.db import (
    APP_ROLE,
    Database,
    create_app_role,
    drop_database,
    drop_database_and_copies,
    make_database,
)
from tests.support.leaks import AWS_SECRET, PASSWORD
from tests.support.pitr import Scenario, built_scenario, stop_server
from tests.support.runbook import REPO
from tests.support.site import Site, recording_site, standin_site


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = create_cluster(password=PASSWORD)
    try:
        create_app_role(cluster)
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def database(pg_cluster: Cluster) -> Iterator[Database]:
    """A fresh, seeded PreSkool database; dropped afterwards (with any _before_ copies)."""
    db = make_database(pg_cluster)
    yield db
    drop_database_and_copies(db)


@pytest.fixture
def scratch(pg_cluster: Cluster) -> Iterator[Callable[[], Database]]:
    """`scratch()`: a new empty database in the session cluster, dropped after the test."""
    made: list[Database] = []

    def make() -> Database:
        made.append(make_database(pg_cluster, seeded=False))
        return made[-1]

    yield make
    for db in made:
        drop_database(pg_cluster, db.name)


@pytest.fixture
def pgpassword(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGPASSWORD set in this process, as the loaders' psql children need it."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)


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
def site_app() -> str:
    """The app a `site` runs: "standin" (the stand-in app) here; tests/tui overrides it with
    "recording" (commands that only record their calls, behind an always-healthy URL)."""
    return "standin"


@pytest.fixture
def site(
    site_app: str,
    tmp_path: Path,
    dr_env: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Site]:
    """The restore site on the test database (tests/support/site.py); its runbook is the one
    in effect (PRESKOOL_DR_RUNBOOK), as on a configured host."""
    if site_app == "recording":
        made = recording_site(database, tmp_path)
    else:
        made = standin_site(database, tmp_path, dr_env)
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(made.runbook))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def scenario() -> Iterator[Scenario]:
    """The PITR scenario (tests/support/pitr.py), built once for the whole session: a
    cluster archiving WAL with wal-push, a base backup and three batches of rows."""
    with built_scenario() as built:
        yield built


@pytest.fixture(scope="session")
def encrypted_scenario() -> Iterator[Scenario]:
    """The PITR scenario with its WAL archive age-encrypted (`Scenario.identity` decrypts)."""
    with built_scenario(encrypted=True) as built:
        yield built


@pytest.fixture
def new_dirs(scenario: Scenario) -> Iterator[list[Path]]:
    """Data directories a test recovers into; every server there is stopped afterwards."""
    made: list[Path] = []
    yield made
    for folder in made:
        stop_server(folder)
        shutil.rmtree(folder, ignore_errors=True)
