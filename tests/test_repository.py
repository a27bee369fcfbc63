"""Repository: local folder + S3 (moto's server over real HTTP) in one place: the policy
of each kind, put (small files in STANDARD before the data), get, remove and retain."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import Event, Notice, Progress
from preskool_dr.core.base.settings import Retention
from preskool_dr.core.storage.checksum import sidecar_path, write_sidecar
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.repository import Repository

PREFIX = "preskool-backups/"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETENTION = {
    "daily": Retention(local_days=30, s3_days=90, storage_class="STANDARD_IA"),
    "weekly": Retention(local_days=60, s3_days=365, storage_class="GLACIER"),
    "pre-deploy": Retention(local_days=7),
    "base": Retention(local_days=14, s3_days=30, storage_class="GLACIER"),
}


def repository(tmp_path: Path, bucket: str | None = None) -> Repository:
    directory = tmp_path / "backups"
    directory.mkdir(exist_ok=True)
    return Repository(directory, bucket, PREFIX, RETENTION)


def name_at(at: datetime, base: bool = False) -> str:
    stamp = at.strftime("%Y%m%d_%H%M%S")
    return f"preskool-base-{stamp}" if base else f"preskool-backup-{stamp}.sql.gz"


def write_backup(directory: Path, name: str, *, companion: bool = False) -> Path:
    path = directory / name
    path.write_bytes(gzip.compress(b"-- dump of " + name.encode()))
    write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
    meta_path(path).write_text('{"kind": "daily"}\n')
    if companion:
        dump = companion_path(path)
        dump.write_bytes(b"PGDMP custom format")
        write_sidecar(dump, hashlib.md5(dump.read_bytes()).hexdigest())
    return path


def write_base(directory: Path, name: str) -> Path:
    folder = directory / name
    folder.mkdir()
    for member in ("base.tar.gz", "pg_wal.tar.gz", "backup_manifest"):
        path = folder / member
        path.write_bytes(member.encode() * 100)
        write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
    meta_path(folder).write_text('{"kind": "base"}\n')
    return folder


def objects(bucket: str) -> dict[str, str]:
    """key below the prefix -> storage class."""
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"].removeprefix(PREFIX): o.get("StorageClass", "STANDARD") for o in listed}


# ---------------------------------------------------------------- policy (no S3)


def test_which_kinds_go_to_s3_and_how(tmp_path: Path) -> None:
    repo = repository(tmp_path, "a-bucket")
    assert repo.keeps_in_s3("daily") and repo.keeps_in_s3("not-listed")
    assert not repo.keeps_in_s3("pre-deploy")
    assert repo.storage_class("weekly") == "GLACIER"
    assert repo.storage_class("not-listed") == "STANDARD"
    assert repo.retention_days("daily", "local") == 30
    assert repo.retention_days("daily", "s3") == 90
    assert repo.retention_days("pre-deploy", "s3") is None
    assert repo.retention_days("not-listed", "local") is None
    assert repository(tmp_path).retention_days("daily", "s3") is None  # no bucket


def test_where_and_urls(tmp_path: Path) -> None:
    repo = repository(tmp_path, "a-bucket")
    assert repo.url("x.sql.gz") == "s3://a-bucket/preskool-backups/x.sql.gz"
    assert repo.where("or") == f"{tmp_path / 'backups'} or s3://a-bucket/preskool-backups/"
    local = repository(tmp_path)
    assert local.where("and") == str(tmp_path / "backups")
    assert not local.has_s3
    with pytest.raises(UsageError, match="no S3 bucket configured: set S3_BUCKET"):
        local.s3  # noqa: B018


def test_uploads_says_why_not(tmp_path: Path) -> None:
    events: list[Event] = []
    repo = repository(tmp_path, "a-bucket")

    def decide(kind: str, upload: bool = True) -> bool:
        return repo.uploads(
            kind, upload=upload, local_only=f"{kind} stays", on_event=events.append, step_id="b"
        )

    assert decide("daily")
    assert not decide("daily", upload=False)
    assert not decide("pre-deploy")
    assert not repository(tmp_path).uploads(
        "daily", upload=True, local_only="-", on_event=events.append, step_id="b"
    )
    assert events == [
        Notice("info", "S3 upload skipped (--no-upload)", "b"),
        Notice("info", "S3 upload skipped: pre-deploy stays", "b"),
    ]


# ---------------------------------------------------------------- put and get


def test_put_a_logical_backup_small_files_standard_data_in_its_class(
    s3_bucket: str, tmp_path: Path
) -> None:
    repo = repository(tmp_path, s3_bucket)
    name = name_at(NOW)
    backup = write_backup(repo.directory, name, companion=True)
    events: list[Event] = []
    urls = repo.put(backup, "weekly", on_event=events.append, step_id="backup")
    dump = companion_path(backup).name
    assert objects(s3_bucket) == {
        name: "GLACIER",
        dump: "GLACIER",
        f"{name}.md5": "STANDARD",
        f"{name}.meta.json": "STANDARD",
        f"{dump}.md5": "STANDARD",
    }
    assert set(urls) == {repo.url(key) for key in objects(s3_bucket)}
    notices = [e for e in events if isinstance(e, Notice)]
    assert notices == [
        Notice("info", f"Uploading to {repo.url(name)} (GLACIER)...", "backup"),
        Notice(
            "ok", f"Uploaded to S3: {repo.url(name)} (+ .md5, .meta.json, {dump} + .md5)", "backup"
        ),
    ]
    # progress for the data only, the small files go quietly
    done = {e.total for e in events if isinstance(e, Progress) and e.done == e.total}
    assert done == {backup.stat().st_size, companion_path(backup).stat().st_size}
    assert repo.get_bytes(f"{name}.md5") == sidecar_path(backup).read_bytes()
    assert repo.get_bytes("missing.md5") is None


def test_put_uploads_the_small_files_first_and_says_the_local_copy_is_kept(
    s3_bucket: str, tmp_path: Path
) -> None:
    repo = repository(tmp_path, s3_bucket)
    backup = write_backup(repo.directory, name_at(NOW))
    backup.unlink()  # the data upload fails after its sidecar and meta are in S3
    with pytest.raises(DrError) as caught:
        repo.put(backup, "daily", on_event=lambda _e: None, step_id="backup")
    assert str(caught.value).startswith("S3 upload failed: cannot upload ")
    assert str(caught.value).endswith(f"(the local backup {backup.name} is kept)")
    assert set(objects(s3_bucket)) == {f"{backup.name}.md5", f"{backup.name}.meta.json"}


def test_put_a_base_backup_folder_meta_beside_it(s3_bucket: str, tmp_path: Path) -> None:
    repo = repository(tmp_path, s3_bucket)
    name = name_at(NOW, base=True)
    folder = write_base(repo.directory, name)
    events: list[Event] = []
    repo.put(folder, "base", on_event=events.append, step_id="backup")
    members = ("backup_manifest", "base.tar.gz", "pg_wal.tar.gz")
    assert objects(s3_bucket) == {
        f"{name}.meta.json": "STANDARD",
        **{f"{name}/{m}": "GLACIER" for m in members},
        **{f"{name}/{m}.md5": "STANDARD" for m in members},
    }
    assert [e for e in events if isinstance(e, Notice)][-1] == Notice(
        "ok", f"Uploaded to S3: {repo.url(name + '/')} (+ .meta.json)", "backup"
    )


def test_put_failure_names_the_base_backup(s3_bucket: str, tmp_path: Path) -> None:
    repo = Repository(tmp_path, "no-such-bucket-preskool", PREFIX, RETENTION)
    folder = write_base(tmp_path, name_at(NOW, base=True))
    with pytest.raises(DrError, match=r"no-such-bucket-preskool.*\(the local base backup "):
        repo.put(folder, "base", on_event=lambda _e: None, step_id="backup")


# ---------------------------------------------------------------- remove and retain


@dataclass(frozen=True)
class Listed:
    name: str
    kind: str
    time: datetime


def test_retain_deletes_only_old_backups_of_the_kind_on_each_side(
    s3_bucket: str, tmp_path: Path
) -> None:
    repo = repository(tmp_path, s3_bucket)
    staged: dict[str, list[Listed]] = {"local": [], "s3": []}
    for kind, days in (("daily", 100), ("daily", 40), ("daily", 10), ("weekly", 70)):
        at = NOW - timedelta(days=days)
        backup = write_backup(repo.directory, name_at(at), companion=kind == "weekly")
        repo.put(backup, kind, on_event=lambda _e: None, step_id="backup")
        for side in staged:
            staged[side].append(Listed(backup.name, kind, at))
    unknown = Listed(name_at(NOW - timedelta(days=200)), "unknown", NOW - timedelta(days=200))
    write_backup(repo.directory, unknown.name)
    staged["local"].append(unknown)
    keep = staged["local"][0].name  # the oldest daily, as the run that just made it would say

    def retain(kind: str, side: str) -> int:
        return repo.retain(kind, side, keep=keep, now=NOW, listing=lambda s: staged[s])

    assert retain("daily", "local") == 1  # 40 days (> 30); 100 days is `keep`
    assert retain("daily", "s3") == 0  # 90 days in S3: only `keep` is older
    assert retain("weekly", "local") == 1
    assert retain("pre-deploy", "s3") == 0
    gone = staged["local"][1].name
    left = {p.name for p in repo.directory.iterdir()}
    assert not {n for n in left if n.startswith(gone.removesuffix(".sql.gz"))}
    assert {keep, staged["local"][2].name, unknown.name} <= left
    weekly = staged["local"][3].name
    assert not {n for n in left if n.startswith(weekly.removesuffix(".sql.gz"))}
    # in S3 the weekly (70 days < 365) stays whole, with its companion
    assert len([k for k in objects(s3_bucket) if k.startswith(weekly.removesuffix(".sql.gz"))]) == 5


def test_remove_deletes_a_folder_backup_on_both_sides(s3_bucket: str, tmp_path: Path) -> None:
    repo = repository(tmp_path, s3_bucket)
    name = name_at(NOW, base=True)
    other = write_backup(repo.directory, name_at(NOW - timedelta(days=1)))
    repo.put(write_base(repo.directory, name), "base", on_event=lambda _e: None, step_id="b")
    repo.put(other, "daily", on_event=lambda _e: None, step_id="b")
    repo.remove(name, "s3")
    repo.remove(name, "local")
    repo.remove(name, "local")  # what is gone already is no error
    assert sorted(p.name for p in repo.directory.iterdir()) == sorted(
        [other.name, f"{other.name}.md5", f"{other.name}.meta.json"]
    )
    assert set(objects(s3_bucket)) == {other.name, f"{other.name}.md5", f"{other.name}.meta.json"}
