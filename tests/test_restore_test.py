"""`preskool-dr restore-test` end to end: real pg_dump backups, the real cluster, the CLI
in-process for what it prints and records (a child process where it is killed), and the
scratch database gone afterwards whatever happened."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.base.events import Event, Notice
from preskool_dr.core.restore import restore_test
from preskool_dr.core.storage.meta import BackupMeta, read_meta, write_meta
from preskool_dr.demo.cluster import Cluster
from tests.support.backups import dump_sql, write_backup
from tests.support.cli import call_cli
from tests.support.db import Database, drop_database, make_database
from tests.support.leaks import PASSWORD
from tests.support.loaders import LockWhenCreated, live_psql_children
from tests.support.runbook import REPO

SCRATCH = "preskool_restore_test"  # restore_test.database in the shipped runbook.yaml
NAME = "preskool-backup-20260220_020000.sql.gz"


@pytest.fixture(autouse=True)
def no_scratch_left(pg_cluster: Cluster) -> Iterator[None]:
    """Every test must leave no scratch database; this also keeps a failure from leaking."""
    drop_database(pg_cluster, SCRATCH)
    yield
    exists = Database(pg_cluster, "postgres").exists(SCRATCH)
    drop_database(pg_cluster, SCRATCH)
    assert not exists, f"{SCRATCH} was left behind"


def make_backup(db: Database, backup_dir: Path, *, with_meta: bool = True) -> Path:
    """A backup as `preskool-dr backup` leaves it: .sql.gz, .md5 and .meta.json (row counts,
    database size)."""
    path = write_backup(backup_dir / NAME, dump_sql(db))
    if with_meta:
        meta = BackupMeta(
            name=NAME,
            kind="weekly",
            created_at=datetime(2026, 2, 20, 2, 0, tzinfo=UTC),
            database=db.name,
            size=path.stat().st_size,
            md5=path.with_name(NAME + ".md5").read_text().split()[0],
            row_counts=db.row_counts(),
            db_size_bytes=db_size(db),
        )
        write_meta(path, meta)
    return path


def db_size(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`preskool-dr restore-test ARGS` in-process (the killed runs below are children)."""
    return call_cli("restore-test", *args)


def last_result(dr_env: dict[str, str]) -> dict[str, object]:
    path = Path(dr_env["PRESKOOL_DR_STATE_DIR"]) / "restore-test" / "last.json"
    text = path.read_text()
    assert PASSWORD not in text
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


def test_passes_on_a_preskool_backup(database: Database, dr_env: dict[str, str]) -> None:
    backup = make_backup(database, Path(dr_env["BACKUP_DIR"]))

    done = cli(str(backup))

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for expected in (
        "[OK]    checksum: MD5",
        "[OK]    create database: preskool_restore_test created",
        "[OK]    restore: 18 tables loaded",
        "[OK]    tables: 18 tables in schema public",
        "[OK]    required tables: all 18 present",
        "[OK]    row counts: 18 tables match the counts recorded at backup time",
        "[OK]    smoke: students present: returned 500",
        "[OK]    drop database: preskool_restore_test dropped",
        f"[PASS]  restore test of {NAME} passed",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, done.stdout)
    assert PASSWORD not in done.stdout + done.stderr
    recorded = last_result(dr_env)
    assert recorded["ok"] is True and recorded["backup"] == NAME


def test_json_output_and_latest(database: Database, dr_env: dict[str, str]) -> None:
    make_backup(database, Path(dr_env["BACKUP_DIR"]))

    done = cli("--json")  # BACKUP defaults to latest

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["backup"] == NAME
    assert isinstance(report["seconds"], float)
    names = [c["name"] for c in report["checks"]]
    assert names[:4] == ["checksum", "server space", "create database", "restore"]
    assert names[-1] == "drop database"
    assert "smoke: every invoice has a student" in names
    assert all(c["status"] == "ok" and c["ok"] for c in report["checks"])
    assert report["row_counts"]["attendance"] == database.row_counts()["attendance"]


def test_fails_when_a_required_table_is_missing(database: Database, dr_env: dict[str, str]) -> None:
    with database.connect() as conn:
        conn.execute("DROP TABLE grades CASCADE")
    make_backup(database, Path(dr_env["BACKUP_DIR"]))

    done = cli(NAME, "--json")

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["required tables", "smoke: public tables"]
    assert failed[0]["detail"] == "missing 1: grades"
    assert report["checks"][-1] == {
        "name": "drop database",
        "status": "ok",
        "ok": True,
        "detail": f"{SCRATCH} dropped",
    }
    recorded = last_result(dr_env)
    assert recorded["ok"] is False and "grades" in str(recorded["detail"])


def test_fails_when_row_counts_differ_from_the_record(
    database: Database, dr_env: dict[str, str]
) -> None:
    backup = make_backup(database, Path(dr_env["BACKUP_DIR"]))
    meta = read_meta(backup)
    assert meta is not None
    wrong = {**meta.row_counts, "students": meta.row_counts["students"] + 1}
    write_meta(backup, dataclasses.replace(meta, row_counts=wrong))

    done = cli(NAME)

    assert done.returncode == 1
    assert "[FAIL]  row counts: 1 differ from the backup's record: students 500 (backup 501)" in (
        done.stdout
    )
    assert done.stdout.splitlines()[-1].startswith(f"[FAIL]  restore test of {NAME} failed")


def test_without_meta_row_counts_are_skipped_not_passed(
    database: Database, dr_env: dict[str, str]
) -> None:
    make_backup(database, Path(dr_env["BACKUP_DIR"]), with_meta=False)

    done = cli(NAME, "--json")

    assert done.returncode == 0, done.stderr
    rows = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "row counts")
    assert rows["status"] == "skipped" and "no recorded counts" in rows["detail"]


def test_corrupt_backup_fails_before_any_database_is_created(
    database: Database, dr_env: dict[str, str]
) -> None:
    backup = make_backup(database, Path(dr_env["BACKUP_DIR"]))
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data))

    done = cli(NAME, "--json")

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert [c["name"] for c in report["checks"]] == ["checksum"]  # no create, no restore
    assert "MD5 mismatch" in report["checks"][0]["detail"]
    assert last_result(dr_env)["ok"] is False


def test_backup_without_sidecar_is_not_restored(database: Database, dr_env: dict[str, str]) -> None:
    backup = make_backup(database, Path(dr_env["BACKUP_DIR"]))
    backup.with_name(NAME + ".md5").unlink()

    done = cli(NAME)

    assert done.returncode == 1
    assert "[FAIL]  checksum: MD5:" in done.stdout and "create database" not in done.stdout


def test_missing_backup_is_exit_2(dr_env: dict[str, str]) -> None:
    done = cli("preskool-backup-20200101_000000.sql.gz")

    assert done.returncode == 2
    assert "not found" in done.stderr and done.stdout == ""


def test_leftover_scratch_database_is_replaced(
    database: Database, dr_env: dict[str, str], pg_cluster: Cluster
) -> None:
    make_backup(database, Path(dr_env["BACKUP_DIR"]))
    leftover = make_database(pg_cluster, seeded=False)
    with database.connect("postgres") as conn:
        conn.execute(f'ALTER DATABASE "{leftover.name}" RENAME TO {SCRATCH}')

    done = cli(NAME)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[INFO]  dropped {SCRATCH} left over from an earlier, interrupted test" in done.stdout


def test_refuses_a_scratch_name_that_is_a_real_database(dr_env: dict[str, str]) -> None:
    config = load_config()
    for name in (config.database.name, config.drill.target_db):
        unsafe = dataclasses.replace(
            config, restore_test=dataclasses.replace(config.restore_test, database=name)
        )
        with pytest.raises(UsageError, match="drops its database at the end"):
            restore_test.run_restore_test(unsafe, "latest")


def test_core_reports_each_check_as_an_event(database: Database, dr_env: dict[str, str]) -> None:
    make_backup(database, Path(dr_env["BACKUP_DIR"]))
    notices: list[Notice] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Notice):
            notices.append(event)

    report = restore_test.run_restore_test(load_config(), NAME, on_event=on_event)

    assert report.ok
    checks = [n.text for n in notices if n.level in ("ok", "error")]
    assert checks == [f"{c.name}: {c.detail}" for c in report.checks]
    assert {n.step_id for n in notices} == {"restore-test"}


# ---------------------------------------------------------------- interrupted


@pytest.fixture(scope="module")
def big_database(pg_cluster: Cluster) -> Iterator[Database]:
    db = make_database(pg_cluster, scale=0.3)
    yield db
    drop_database(pg_cluster, db.name)


@pytest.mark.xdist_group("scale_0_3")  # builds (or reuses) the worker's scale-0.3 template
@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGINT, id="SIGINT"),
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.slow),
    ],
)
def test_signal_mid_restore_drops_the_scratch_database(
    big_database: Database, dr_env: dict[str, str], pg_cluster: Cluster, signum: int
) -> None:
    make_backup(big_database, Path(dr_env["BACKUP_DIR"]))
    with LockWhenCreated(pg_cluster, SCRATCH, "enrollments") as blocker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "preskool_dr", "restore-test", NAME],
            cwd=REPO,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # psql is now mid-COPY, waiting on the lock: the restore is under way.
            blocker.wait_for_waiter()
            head = _read_until(proc, "[OK]    create database")
            children = live_psql_children(proc.pid)
            assert len(children) == 1
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=120)
            out = head + out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert not Path(f"/proc/{children[0]}").exists()  # psql stopped, not orphaned
    assert not Database(pg_cluster, "postgres").exists(SCRATCH)
    assert "[OK]    drop database: preskool_restore_test dropped" in out


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """stdout up to the line holding `marker` (checks are printed as they happen)."""
    assert proc.stdout is not None
    head = []
    for line in proc.stdout:
        head.append(line)
        if marker in line:
            break
    return "".join(head)


# ---------------------------------------------------------------- from S3


def _upload(backup: Path, bucket: str, storage_class: str = "STANDARD") -> None:
    client = boto3.client("s3")
    for path in (backup, backup.with_name(NAME + ".md5"), backup.with_name(NAME + ".meta.json")):
        client.upload_file(
            str(path),
            bucket,
            f"preskool-backups/{path.name}",
            ExtraArgs={"StorageClass": storage_class if path == backup else "STANDARD"},
        )
        path.unlink()


def test_backup_only_in_s3_is_downloaded_and_tested(
    database: Database, dr_env: dict[str, str], s3: str
) -> None:
    backup = make_backup(database, Path(dr_env["BACKUP_DIR"]))
    _upload(backup, s3)

    done = cli(f"s3://{s3}/preskool-backups/{NAME}")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK]    row counts: 18 tables match" in done.stdout
    assert "aws-secret-MARKER-42" not in done.stdout + done.stderr
    assert backup.exists()  # fetched into BACKUP_DIR, as the runbook's step 3


def test_archived_backup_is_exit_3(database: Database, dr_env: dict[str, str], s3: str) -> None:
    backup = make_backup(database, Path(dr_env["BACKUP_DIR"]))
    _upload(backup, s3, storage_class="GLACIER")

    done = cli(f"s3://{s3}/preskool-backups/{NAME}")

    assert done.returncode == 3, done.stdout + done.stderr
    assert "create database" not in done.stdout
