"""Room on the database server before step 5 (and before the headless restore takes the app
offline): the backup's recorded database size against the real test cluster's disk."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import NoSpaceError
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore import server_space
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.server_space import check_server_space
from preskool_dr.core.storage.meta import BackupMeta, read_meta, write_meta
from tests.support.cli import run_cli
from tests.support.db import Database

HUGE = 10 << 50  # 10 PiB: no test machine has that free
OLD_META = BackupMeta(
    "preskool-backup-20260220_020000.sql.gz",
    "daily",
    datetime(2026, 2, 20, tzinfo=UTC),
    "d",
    1,
    "0" * 32,
)


def backup_with(db_size: int | None) -> tuple[Path, BackupMeta]:
    """A real backup of the test database whose .meta.json claims `db_size` (written
    through the meta writer, as `backup` writes it)."""
    path = run_backup(load_config(), upload=False).path
    meta = read_meta(path)
    assert meta is not None
    write_meta(path, dataclasses.replace(meta, db_size_bytes=db_size))
    return path, meta


def test_backup_records_the_database_size(dr_env: dict[str, str], database: Database) -> None:
    _, meta = backup_with(None)
    with database.connect() as conn:
        now = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    assert meta.db_size_bytes is not None and 0 < meta.db_size_bytes <= 2 * now


def test_old_meta_without_a_size_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / OLD_META.name
    written = write_meta(path, OLD_META)
    assert "db_size_bytes" not in written.read_text()
    assert read_meta(path) == OLD_META and OLD_META.db_size_bytes is None
    for bad in ("-1", "true", '"12"', "1.5"):
        written.write_text(written.read_text().replace('"kind"', f'"db_size_bytes": {bad}, "kind"'))
        assert read_meta(path) == OLD_META  # not a byte count: as if not recorded
        write_meta(path, OLD_META)
    write_meta(path, dataclasses.replace(OLD_META, db_size_bytes=12))
    meta = read_meta(path)
    assert meta is not None and meta.db_size_bytes == 12


def test_not_measured_says_why(dr_env: dict[str, str]) -> None:
    db = load_config().database
    assert "records no database size" in check_server_space(db, None).detail
    meta = dataclasses.replace(OLD_META, db_size_bytes=HUGE)
    app_role = dataclasses.replace(db, admin_user=db.user)  # not a superuser
    space = check_server_space(app_role, meta)
    detail = space.detail
    assert (
        not space.measured
        and detail.startswith("server space: not measured (")
        and "pg_read_all_settings" in detail
    )


def test_headless_restore_refuses_before_the_app_goes_offline(
    dr_env: dict[str, str], database: Database
) -> None:
    path, _ = backup_with(HUGE)
    before = database.row_counts()
    result = run_cli("restore", path.name, "--confirm", database.name)
    assert result.returncode == 1, result.stderr
    assert "needs 10.5 PiB in the database server's data directory " in result.stdout
    assert "free: free space on that disk or grow it" in result.stdout
    assert "step 1/9" not in result.stdout  # the app was never taken offline
    assert database.row_counts() == before


def test_step_5_refuses_before_anything_is_renamed(
    dr_env: dict[str, str], database: Database
) -> None:
    path, meta = backup_with(None)
    write_meta(path, meta)  # the size as recorded: it fits
    engine = Engine.start(load_config(), RunOptions(backup_spec=path.name))
    try:
        for step_id in ("download", "verify"):
            assert engine.run_step(step_id).status is StepStatus.DONE
        detail = engine.step("verify").detail
        assert "; server space: " in detail and " free in /" in detail
        engine.skip_step("app_offline", "app already down (outage)")
        write_meta(path, dataclasses.replace(meta, db_size_bytes=HUGE))  # the disk "filled"
        record = engine.run_step("recreate_db", confirmation=database.name)
        assert record.status is StepStatus.FAILED
        assert "needs 10.5 PiB in the database server's data directory" in record.detail
        assert engine.state.aside_db is None  # nothing planned, renamed or dropped
        assert "has not been touched" in engine.production_state()
    finally:
        engine.close()
    with database.connect("postgres") as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    assert [n for n in names if n.startswith(database.name)] == [database.name]
    assert database.row_counts()


def test_drop_mode_counts_what_the_drop_frees(dr_env: dict[str, str], database: Database) -> None:
    path, meta = backup_with(None)
    write_meta(path, meta)
    engine = Engine.start(load_config(), RunOptions(backup_spec=path.name, recreate_mode="drop"))
    try:
        assert engine.run_step("download").status is StepStatus.DONE
        assert engine.run_step("verify").status is StepStatus.DONE
        assert f"dropping {database.name} frees)" in engine.step("verify").detail
    finally:
        engine.close()


def test_restore_test_refuses_before_it_creates_the_scratch_database(
    dr_env: dict[str, str], database: Database
) -> None:
    path, meta = backup_with(HUGE)
    refused = run_cli("restore-test", path.name, "--json")
    assert refused.returncode == 1, refused.stderr
    checks = json.loads(refused.stdout)["checks"]
    assert [c["name"] for c in checks] == ["checksum", "server space"]  # nothing created
    assert "needs 10.5 PiB in the database server's data directory " in checks[1]["detail"]
    write_meta(path, dataclasses.replace(meta, db_size_bytes=None))  # an older backup's meta
    passed = run_cli("restore-test", path.name, "--json")
    assert passed.returncode == 0, passed.stdout
    space = json.loads(passed.stdout)["checks"][1]
    assert space["status"] == "skipped" and "not measured" in space["detail"]


def test_a_load_started_early_counts_as_space_the_restore_has(
    dr_env: dict[str, str], database: Database
) -> None:
    """The early load (steps/early_load.py) has written part of the restore by the time
    step 4 and step 5 measure the disk: what it holds counts as free, else a fitting
    restore would be refused half way."""
    path, meta = backup_with(None)
    write_meta(path, meta)
    db = load_config().database
    plain = check_server_space(db, meta)
    counted = check_server_space(db, meta, loading=database.name)
    assert f"{database.name} holds)" in counted.detail
    assert f"{database.name} holds" not in plain.detail


def test_a_download_still_writing_to_the_servers_disk_counts_as_taken(
    dr_env: dict[str, str], database: Database
) -> None:
    """A load that starts while step 3 still downloads the .sql.gz (steps/early_load.py):
    when BACKUP_DIR shares the data directory's disk, the bytes still to come are needed
    too; on another disk they are not."""
    path, meta = backup_with(None)
    write_meta(path, meta)
    db = load_config().database
    with database.connect() as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    same_disk = Path(row[0]).parent
    refused = None
    try:
        check_server_space(db, meta, incoming=(same_disk, HUGE))
    except NoSpaceError as exc:
        refused = str(exc)
    assert refused is not None and "a download still writes there as taken" in refused
    assert "as taken" not in check_server_space(db, meta, incoming=(same_disk, 0)).detail
    other = Path("/dev/shm")
    if other.is_dir() and not server_space._same_disk(other, same_disk):
        assert "as taken" not in check_server_space(db, meta, incoming=(other, HUGE)).detail


def test_a_pool_behind_two_devices_counts_as_one_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """btrfs subvolumes and ZFS datasets of one pool have their own st_dev but report the
    pool's free space: a download into one takes room from the other. Two devices whose
    free space differs are two disks."""
    backups, data_dir = tmp_path / "backups", tmp_path / "data"
    backups.mkdir()
    data_dir.mkdir()
    real_stat = Path.stat

    def own_device(path: Path, **kwargs: Any) -> Any:
        found = real_stat(path, **kwargs)
        if path == data_dir:  # another device number, as a subvolume or dataset has
            fields = list(found)
            fields[stat.ST_DEV] += 1
            return os.stat_result(fields)
        return found

    monkeypatch.setattr(Path, "stat", own_device)
    free = {backups: 40 << 30, data_dir: (40 << 30) + (3 << 20)}  # one pool, a load writing
    monkeypatch.setattr(server_space, "free_bytes", lambda path: free[path])
    assert server_space._same_disk(backups, data_dir)
    free[data_dir] = 90 << 30  # another disk
    assert not server_space._same_disk(backups, data_dir)
    assert server_space._same_disk(backups, tmp_path / "missing")  # unknown: counted
