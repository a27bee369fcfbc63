"""The catalog: names, meta, local + S3 listing merged by name, resolve and fetch."""

from __future__ import annotations

import dataclasses
import hashlib
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import ArchivedError, DrError, NotFoundError, UsageError
from preskool_dr.core.base.events import Notice
from preskool_dr.core.base.paths import UnsafeNameError
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage.backup_names import KINDS, backup_name, parse_backup_name
from preskool_dr.core.storage.catalog import list_backups, resolve_backup
from preskool_dr.core.storage.checksum import sidecar_path, verify_backup, write_sidecar
from preskool_dr.core.storage.fetch import discard_download, fetch_backup, request_restore
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.meta import BackupMeta, read_meta, write_meta
from preskool_dr.core.storage.s3store import S3Store
from tests.support.backups import make_backup, make_base_backup, s3_store, upload_backup
from tests.support.runbook import REPO

T0 = datetime(2026, 2, 20, 2, 0, 0, tzinfo=UTC)


def local_config(backup_dir: Path) -> Config:
    return load_config(REPO / "runbook.yaml", env={"BACKUP_DIR": str(backup_dir)})


# ---------------------------------------------------------------- names and meta


def test_backup_names_round_trip() -> None:
    assert backup_name("daily", T0) == "preskool-backup-20260220_020000.sql.gz"
    assert backup_name("weekly", T0) == backup_name("pre-deploy", T0)
    assert backup_name("base", T0) == "preskool-base-20260220_020000"
    other_zone = datetime(2026, 2, 20, 3, 0, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert backup_name("daily", other_zone) == "preskool-backup-20260220_030000.sql.gz"
    for kind in KINDS:
        assert parse_backup_name(backup_name(kind, T0)) == T0
    assert parse_backup_name("preskool-base-20260220_020000.tar.gz") == T0
    with pytest.raises(ValueError):
        backup_name("hourly", T0)


@pytest.mark.parametrize(
    "name",
    [
        "preskool-backup-20260220_020000.sql.gz.md5",
        "preskool-backup-20260220_020000.sql.gz.part",
        "preskool-backup-20260220_020000.sql.gz.meta.json",
        "preskool-backup-20260220_020000.sql",
        "preskool-backup-20261320_020000.sql.gz",  # month 13
        "preskool-backup-2026022_020000.sql.gz",
        "xpreskool-backup-20260220_020000.sql.gz",
        "wal",
        ".lock",
    ],
)
def test_non_backup_names(name: str) -> None:
    assert parse_backup_name(name) is None


def test_meta_round_trip_and_damage(tmp_path: Path) -> None:
    path = make_backup(tmp_path, T0, "weekly")
    meta = read_meta(path)
    assert meta is not None and meta.kind == "weekly" and meta.created_at == T0
    assert meta.row_counts == {"students": 3}
    assert BackupMeta.from_json(meta.to_json()) == meta
    meta_path(path).write_text("{not json")
    assert read_meta(path) is None
    meta_path(path).write_text('{"name": "x"}')
    assert read_meta(path) is None
    meta_path(path).unlink()
    assert read_meta(path) is None


# ---------------------------------------------------------------- local listing


def test_local_listing_newest_first_with_attributes(tmp_path: Path) -> None:
    old = make_backup(tmp_path, T0 - timedelta(days=2), "daily")
    weekly = make_backup(tmp_path, T0 - timedelta(days=1), "weekly", sidecar=False)
    no_meta = make_backup(tmp_path, T0, None, seed=2)
    base = make_base_backup(tmp_path, T0 - timedelta(hours=1))
    # Things that are not backups, and attributes without a backup.
    (tmp_path / ".lock").write_text("123")
    (tmp_path / "wal").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    orphan = backup_name("daily", T0 - timedelta(days=9))
    (tmp_path / (orphan + ".md5")).write_text("x")
    (tmp_path / (orphan + ".part")).write_bytes(b"x")

    records = list_backups(local_config(tmp_path), "local")
    assert [r.name for r in records] == [no_meta.name, base.name, weekly.name, old.name]
    by_name = {r.name: r for r in records}
    assert by_name[no_meta.name].kind == "unknown"
    assert by_name[weekly.name].kind == "weekly" and not by_name[weekly.name].has_md5
    assert by_name[old.name].kind == "daily" and by_name[old.name].has_md5
    assert by_name[old.name].size == old.stat().st_size
    assert by_name[base.name].kind == "base" and by_name[base.name].has_md5
    assert by_name[base.name].size == sum(p.stat().st_size for p in base.glob("*.tar.gz"))
    record = by_name[old.name].to_json()
    assert record["time"] == "2026-02-18T02:00:00Z"
    assert record["locations"] == ["local"] and record["storage_class"] is None
    assert not by_name[old.name].needs_restore


def test_missing_or_unreadable_backup_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist; set BACKUP_DIR"):
        list_backups(local_config(tmp_path / "nope"), "local")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(DrError, match=f"cannot read backup directory {not_a_dir}"):
        list_backups(local_config(not_a_dir), "all")


def test_bad_source_and_s3_without_bucket(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown source"):
        list_backups(local_config(tmp_path), "ftp")
    with pytest.raises(UsageError, match="no S3 bucket configured"):
        list_backups(local_config(tmp_path), "s3")
    assert list_backups(local_config(tmp_path), "all") == []


def test_resolve_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = local_config(tmp_path)
    daily = make_backup(tmp_path, T0 - timedelta(days=1), "daily")
    newest = make_backup(tmp_path, T0, "pre-deploy", seed=3)
    make_base_backup(tmp_path, T0 + timedelta(hours=1))  # newer, but not logical
    assert resolve_backup(config, "latest").local_path == newest
    assert resolve_backup(config, daily.name).local_path == daily
    assert resolve_backup(config, str(daily)).kind == "daily"
    # A renamed copy elsewhere still verifies: explicit paths need not follow the name scheme.
    copy = tmp_path.parent / "my-copy.sql.gz"
    copy.write_bytes(daily.read_bytes())
    monkeypatch.chdir(tmp_path.parent)
    record = resolve_backup(config, "./my-copy.sql.gz")
    assert record.local_path == copy and record.kind == "unknown" and not record.has_md5
    # a bare name is not looked for in the current folder (anyone's /tmp): said as a hint
    with pytest.raises(NotFoundError, match=r"say \./my-copy\.sql\.gz"):
        resolve_backup(config, "my-copy.sql.gz")
    for spec in ("preskool-backup-20990101_000000.sql.gz", "/nowhere/x.sql.gz"):
        with pytest.raises(NotFoundError) as missing:
            resolve_backup(config, spec)
        assert missing.value.exit_code == 2
    with pytest.raises(UsageError):
        resolve_backup(config, "  ")
    with pytest.raises(UsageError):
        resolve_backup(config, "s3://bucket-only")


def test_latest_without_backups(tmp_path: Path) -> None:
    make_base_backup(tmp_path, T0)
    with pytest.raises(NotFoundError, match="no logical backup found"):
        resolve_backup(local_config(tmp_path), "latest")


# ---------------------------------------------------------------- with S3


@pytest.mark.usefixtures("s3_bucket")
def test_merged_listing_local_and_s3(tmp_path: Path) -> None:
    config = load_config()
    backup_dir = config.backups.dir
    store = s3_store(config)
    staging = tmp_path / "staging"
    staging.mkdir()
    both = make_backup(backup_dir, T0, "daily")
    upload_backup(store, both)
    local_only = make_backup(backup_dir, T0 - timedelta(days=1), "pre-deploy", seed=2)
    weekly = make_backup(staging, T0 - timedelta(days=3), "weekly", seed=3)
    upload_backup(store, weekly, "GLACIER")
    anonymous = make_backup(staging, T0 - timedelta(days=4), None, sidecar=False, seed=4)
    upload_backup(store, anonymous, "DEEP_ARCHIVE")
    base = make_base_backup(staging, T0 - timedelta(days=5))
    for member in sorted(base.iterdir()):
        S3Store(store.bucket, f"{store.prefix}{base.name}/").upload(member)
    (backup_dir / (weekly.name + ".part")).write_bytes(b"partial")
    store.upload(sidecar_path(local_only), name="preskool-backup-20250101_000000.sql.gz.md5")

    records = list_backups(config, "all")
    assert [r.name for r in records] == [
        both.name,
        local_only.name,
        weekly.name,
        anonymous.name,
        base.name,
    ]
    r = {x.name: x for x in records}
    assert r[both.name].locations == ["local", "s3"] and r[both.name].storage_class == "STANDARD"
    assert r[local_only.name].locations == ["local"] and r[local_only.name].storage_class is None
    assert r[weekly.name].locations == ["s3"] and r[weekly.name].kind == "weekly"
    assert r[weekly.name].meta is not None and r[weekly.name].meta.row_counts == {"students": 3}
    assert r[weekly.name].storage_class == "GLACIER" and r[weekly.name].needs_restore
    assert r[weekly.name].has_md5 and r[weekly.name].has_part
    assert r[weekly.name].s3_url == store.url(weekly.name)
    assert r[anonymous.name].kind == "unknown" and r[anonymous.name].storage_class == "DEEP_ARCHIVE"
    assert not r[anonymous.name].has_md5
    assert r[base.name].kind == "base" and r[base.name].has_md5
    assert r[base.name].size == sum(p.stat().st_size for p in base.glob("*.tar.gz"))

    assert [x.name for x in list_backups(config, "s3")] == [
        both.name,
        weekly.name,
        anonymous.name,
        base.name,
    ]
    assert [x.name for x in list_backups(config, "local")] == [both.name, local_only.name]


@pytest.mark.usefixtures("s3_bucket")
def test_s3_trouble_does_not_hide_local_backups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_BUCKET", "preskool-no-such-bucket")
    config = load_config()
    local = make_backup(config.backups.dir, T0)
    warnings: list[str] = []
    assert [r.name for r in list_backups(config, "all", warnings)] == [local.name]
    assert len(warnings) == 1 and "does not exist" in warnings[0]
    with pytest.raises(NotFoundError):
        list_backups(config, "all")
    # A name found locally never needs S3.
    assert resolve_backup(config, local.name).local_path == local


@pytest.mark.usefixtures("s3_bucket")
def test_fresh_dr_host_without_backup_dir_lists_s3(tmp_path: Path) -> None:
    config = load_config()
    store = s3_store(config)
    staged = make_backup(tmp_path, T0)
    upload_backup(store, staged)
    config.backups.dir.rmdir()
    warnings: list[str] = []
    assert [r.name for r in list_backups(config, "all", warnings)] == [staged.name]
    assert "does not exist" in warnings[0]
    latest = resolve_backup(config, "latest")
    path = fetch_backup(config, latest)
    assert path == config.backups.dir / staged.name  # BACKUP_DIR created on the way
    assert all(r.ok for r in verify_backup(path))


@pytest.mark.usefixtures("s3_bucket")
def test_fetch_s3_only_backup_with_sidecar_and_meta(tmp_path: Path) -> None:
    config = load_config()
    store = s3_store(config)
    staged = make_backup(tmp_path, T0, "weekly")
    upload_backup(store, staged)
    for spec in (staged.name, store.url(staged.name)):
        record = resolve_backup(config, spec)
        assert record.locations == ["s3"] and record.kind == "weekly" and record.has_md5
    path = fetch_backup(config, record)
    assert path.read_bytes() == staged.read_bytes()
    assert sidecar_path(path).read_bytes() == sidecar_path(staged).read_bytes()
    assert read_meta(path) == read_meta(staged)
    check = subprocess.run(
        ["md5sum", "--check", sidecar_path(path).name], cwd=path.parent, capture_output=True
    )
    assert check.returncode == 0
    assert not path.with_name(path.name + ".part").exists()
    local = resolve_backup(config, staged.name)
    assert local.local_path == path and fetch_backup(config, local) == path


def stage_with_companion(store: S3Store, folder: Path) -> tuple[Path, Path, str, BackupMeta]:
    """A backup in `folder` and S3 with a stand-in companion (the catalog copies it,
    pg_restore is not asked), its meta recording the companion's MD5: returns the backup,
    the companion, that MD5 and the meta as it was before."""
    staged = make_backup(folder, T0, "daily")
    companion = companion_path(staged)
    companion.write_bytes(b"PGDMP stand-in: the catalog copies it, pg_restore is not asked")
    companion_md5 = hashlib.md5(companion.read_bytes()).hexdigest()
    write_sidecar(companion, companion_md5)
    meta = read_meta(staged)
    assert meta is not None
    write_meta(staged, dataclasses.replace(meta, companion_md5=companion_md5))
    upload_backup(store, staged)
    for path in (companion, sidecar_path(companion)):
        store.upload(path)
    return staged, companion, companion_md5, meta


@pytest.mark.slow
@pytest.mark.usefixtures("s3_bucket")
def test_fetch_with_companion_and_discard_download(tmp_path: Path) -> None:
    config = load_config()
    store = s3_store(config)
    staged, companion, companion_md5, meta = stage_with_companion(store, tmp_path)
    record = resolve_backup(config, staged.name)
    plain_only = fetch_backup(config, record)  # e.g. `verify`: the companion is not needed
    assert not companion_path(plain_only).exists()
    discard_download(plain_only)
    assert list(config.backups.dir.iterdir()) == []
    events: list[object] = []
    path = fetch_backup(config, record, with_companion=True, on_event=events.append)
    assert companion_path(path).read_bytes() == companion.read_bytes()
    assert sidecar_path(companion_path(path)).read_bytes() == (sidecar_path(companion).read_bytes())
    assert resolve_backup(config, staged.name).has_custom
    # discard takes everything the fetch put there, and only that; S3 keeps its copies
    (config.backups.dir / "other.txt").write_text("not ours")
    discard_download(path)
    assert [p.name for p in config.backups.dir.iterdir()] == ["other.txt"]
    assert store.exists(staged.name) and store.exists(companion.name)
    # a companion that cannot be fetched is reported, not fatal, and leaves nothing behind
    store.upload(companion, storage_class="GLACIER")
    path = fetch_backup(config, record, with_companion=True, on_event=events.append)
    assert path.read_bytes() == staged.read_bytes()
    assert not companion_path(path).exists()
    assert not sidecar_path(companion_path(path)).exists()
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "the plain backup will be restored" in notices[0].text
    discard_download(path)
    # another archive (with a matching sidecar of its own) than the meta records: not kept
    companion.write_bytes(b"PGDMP another archive")
    write_sidecar(companion, hashlib.md5(companion.read_bytes()).hexdigest())
    for path in (companion, sidecar_path(companion)):
        store.upload(path)
    events.clear()
    path = fetch_backup(config, record, with_companion=True, on_event=events.append)
    assert not companion_path(path).exists()
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert f"is not the {companion_md5} recorded" in notice.text
    discard_download(path)
    # a meta without the companion's MD5 (an older backup): the companion is not fetched
    write_meta(staged, meta)
    store.upload(meta_path(staged))
    events.clear()
    path = fetch_backup(config, record, with_companion=True, on_event=events.append)
    assert not companion_path(path).exists()
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert "records no MD5 for it" in notice.text


@pytest.mark.usefixtures("s3_bucket")
def test_a_companion_already_here_is_kept_only_when_it_is_ours_and_whole(tmp_path: Path) -> None:
    """A restore whose .sql.gz download failed after the companion came down keeps the
    companion: the next fetch does not download it again, and says it is ready (with what
    the backup's download still writes). A file others may write there is replaced by a
    fresh download; a symlink there stops the fetch (paths.inside) and its target is not
    touched."""
    config = load_config()
    (tmp_path / "staged").mkdir()
    staged, companion, _, _ = stage_with_companion(s3_store(config), tmp_path / "staged")
    record = resolve_backup(config, staged.name)
    here = config.backups.dir / companion.name
    outside = tmp_path / "outside.dump"

    config.backups.dir.mkdir(mode=0o700, exist_ok=True)
    outside.write_bytes(b"not the bucket's")
    here.symlink_to(outside)
    with pytest.raises(UnsafeNameError, match="through a symbolic link"):
        fetch_backup(config, record, with_companion=True)
    assert outside.read_bytes() == b"not the bucket's"
    here.unlink()

    for kind in ("ours", "writable by others"):
        here.write_bytes(companion.read_bytes())
        here.chmod(0o600 if kind == "ours" else 0o666)
        before = here.lstat()
        ready: list[tuple[Path, int]] = []
        path = fetch_backup(
            config,
            record,
            with_companion=True,
            companion_ready=lambda dest, remaining, seen=ready: seen.append((dest, remaining)),
        )
        after = here.lstat()
        assert ready == [(path, staged.stat().st_size)], kind
        assert here.read_bytes() == companion.read_bytes() and not here.is_symlink(), kind
        assert stat.S_IMODE(after.st_mode) == 0o600, kind  # a download writes 0600
        if kind == "ours":  # the very file, not written again
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        discard_download(path)


@pytest.mark.usefixtures("s3_bucket")
def test_fetch_archived_backup_needs_restore(tmp_path: Path) -> None:
    config = load_config()
    store = s3_store(config)
    staged = make_backup(tmp_path, T0, "weekly")
    upload_backup(store, staged, "GLACIER")
    record = resolve_backup(config, staged.name)
    assert record.needs_restore and record.restore_state is None
    with pytest.raises(ArchivedError) as archived:
        fetch_backup(config, record)
    assert archived.value.exit_code == 3 and "--request-restore" in str(archived.value)
    assert not (config.backups.dir / staged.name).exists()
    assert request_restore(record).startswith("restore requested")
    record = resolve_backup(config, staged.name)
    assert record.restore_state == "available" and not record.needs_restore
    assert all(r.ok for r in verify_backup(fetch_backup(config, record)))


@pytest.mark.usefixtures("s3_bucket")
@pytest.mark.slow
def test_fetch_folder_backup_from_s3(tmp_path: Path) -> None:
    config = load_config()
    store = s3_store(config)
    base = make_base_backup(tmp_path, T0)
    for member in sorted(base.iterdir()):
        S3Store(store.bucket, f"{store.prefix}{base.name}/").upload(member)
    record = resolve_backup(config, base.name)
    assert record.kind == "base" and record.has_md5
    path = fetch_backup(config, record)
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in base.iterdir())
    assert [r.ok for r in verify_backup(path)] == [True, True]


@pytest.mark.usefixtures("s3_bucket")
def test_s3_url_for_a_missing_object() -> None:
    config = load_config()
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_backup(config, s3_store(config).url("preskool-backup-x.sql.gz"))
    with pytest.raises(NotFoundError, match="bucket 'preskool-nope' does not exist"):
        resolve_backup(config, "s3://preskool-nope/preskool-backups/x.sql.gz")
