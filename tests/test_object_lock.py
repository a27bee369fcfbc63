"""S3 Object Lock (issue 19): `backups.object_lock.mode` puts every upload under
retention until upload time + the kind's `s3_days`; retention never tries to delete a
locked backup and says until when it is kept; `list --json` and `check` show the lock.
A real moto server over HTTP, with a bucket created with Object Lock enabled."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from preskool_dr.cli.main import main
from preskool_dr.core.backup import base_info
from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.backup.wal.health import archive_health
from preskool_dr.core.backup.wal.names import Segment
from preskool_dr.core.backup.wal.push import push
from preskool_dr.core.backup.wal.settings import WalSettings, push_lock
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import ConfigError, DrError
from preskool_dr.core.base.events import Event, Notice, utcnow
from preskool_dr.core.storage.layout import meta_path
from preskool_dr.core.storage.s3store import ObjectLock, S3Store
from tests.support.age_keys import make_key
from tests.support.cli import call_cli
from tests.support.runbook import write_runbook

RETENTION = {
    "daily": {"local_days": 7, "s3_days": 30},
    "weekly": {"local_days": 30, "s3_days": 365, "storage_class": "STANDARD"},
}


def _locked_bucket(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    name = os.environ["S3_BUCKET"] + "-lock"
    boto3.client("s3", endpoint_url=server).create_bucket(
        Bucket=name, ObjectLockEnabledForBucket=True
    )
    monkeypatch.setenv("S3_BUCKET", name)
    return name


def _lock_runbook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str = "GOVERNANCE"
) -> Path:
    runbook = write_runbook(
        tmp_path, backups={"object_lock": {"mode": mode}, "retention": RETENTION}
    )
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    return runbook


def test_object_lock_mode_must_be_governance_or_compliance(tmp_path: Path) -> None:
    runbook = write_runbook(tmp_path, backups={"object_lock": {"mode": "FOREVER"}})
    line = next(
        n for n, text in enumerate(runbook.read_text().splitlines(), 1) if "FOREVER" in text
    )
    with pytest.raises(ConfigError, match=rf"{runbook}:{line}: backups.object_lock.mode 'FOREVER'"):
        load_config(runbook, env={})


@pytest.mark.slow
def test_every_upload_carries_the_lock_and_list_shows_it(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _locked_bucket(s3_server, monkeypatch)
    _lock_runbook(tmp_path, monkeypatch, "COMPLIANCE")
    before = utcnow()
    result = run_backup(load_config(), "daily", upload=True)
    after = utcnow()
    client = boto3.client("s3", endpoint_url=s3_server)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    # the backup, its sidecar and its meta, the custom-format companion and its sidecar
    assert len(keys) == 5
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        until = head["ObjectLockRetainUntilDate"]
        # upload time + daily's s3_days (S3 keeps the date to the second)
        assert (
            before + timedelta(days=30, seconds=-1)
            <= until
            <= after + timedelta(days=30, seconds=1)
        )
    listed = json.loads(call_cli("list", "--json").stdout)
    (record,) = [r for r in listed if r["name"] == result.path.name]
    assert record["lock_mode"] == "COMPLIANCE" and record["locked"] is True
    assert record["lock_until"].startswith((before + timedelta(days=30)).strftime("%Y-%m-%d"))
    table = call_cli("list").stdout
    assert f"(locked COMPLIANCE to {record['lock_until'][:10]})" in table
    states = json.loads(call_cli("check", "--json").stdout)
    (s3_check,) = [c for c in states["checks"] if c["name"] == "s3_replication"]
    assert s3_check["status"] == "OK" and "Object Lock COMPLIANCE" in s3_check["summary"]


@pytest.mark.slow
def test_retention_keeps_a_locked_backup_and_says_until_when(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _locked_bucket(s3_server, monkeypatch)
    _lock_runbook(tmp_path, monkeypatch)
    old_at = utcnow() - timedelta(days=40)
    old = run_backup(load_config(), "daily", upload=True, at=old_at)  # locked 30 days from now
    # a second old one uploaded without a lock: retention deletes that one as before
    unlocked_at = utcnow() - timedelta(days=41)
    (tmp_path / "plain").mkdir()
    plain_runbook = write_runbook(tmp_path / "plain", backups={"retention": RETENTION})
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(plain_runbook))
    unlocked = run_backup(load_config(), "daily", upload=True, at=unlocked_at)
    _lock_runbook(tmp_path, monkeypatch)
    events: list[Event] = []
    run_backup(load_config(), "daily", upload=True, on_event=events.append)
    client = boto3.client("s3", endpoint_url=s3_server)
    keys = {o["Key"].rsplit("/", 1)[-1] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert old.path.name in keys and old.path.name + ".meta.json" in keys
    assert unlocked.path.name not in keys
    # no delete marker was ever put on the locked one
    versions = client.list_object_versions(Bucket=bucket)
    markers = {m["Key"].rsplit("/", 1)[-1] for m in versions.get("DeleteMarkers", [])}
    assert not {n for n in markers if n.startswith(old.path.name)}
    kept = [e.text for e in events if isinstance(e, Notice) and e.text.startswith("Kept ")]
    assert len(kept) == 1 and old.path.name in kept[0]
    assert (
        "Object Lock GOVERNANCE until" in kept[0] and "retention deletes it after that" in kept[0]
    )


def test_check_warns_when_the_newest_upload_has_no_lock(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _locked_bucket(s3_server, monkeypatch)
    (tmp_path / "plain").mkdir()
    plain = write_runbook(tmp_path / "plain", backups={"retention": RETENTION})
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(plain))
    path = run_backup(load_config(), "daily", upload=True).path  # before the lock was set
    _lock_runbook(tmp_path, monkeypatch)
    states = json.loads(call_cli("check", "--json").stdout)
    (s3_check,) = [c for c in states["checks"] if c["name"] == "s3_replication"]
    assert s3_check["status"] == "WARNING"
    assert f"S3 copy not locked: {path.name}" in s3_check["summary"]


def test_an_upload_to_a_bucket_without_object_lock_fails_and_keeps_the_local_backup(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is never dropped quietly: a bucket made without Object Lock refuses it."""
    _lock_runbook(tmp_path, monkeypatch)
    result = call_cli("backup")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "S3 upload failed" in result.stderr and "is kept" in result.stderr
    assert "needs a bucket created with Object Lock enabled" in result.stderr


# ---------------------------------------------------------------- WAL (wal-push)

WAL_RETENTION = {"base": {"local_days": 7, "s3_days": 14}}
SEGMENT = "000000010000000000000007"


def _wal_lock_runbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runbook = write_runbook(
        tmp_path,
        backups={"object_lock": {"mode": "GOVERNANCE"}, "retention": WAL_RETENTION},
    )
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "archive-host"))


@pytest.mark.slow
def test_wal_push_locks_each_segment_until_base_s3_days(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _locked_bucket(s3_server, monkeypatch)
    _wal_lock_runbook(tmp_path, monkeypatch)
    source = tmp_path / "pg_wal" / SEGMENT
    source.parent.mkdir()
    source.write_bytes(b"w" * 8192)
    before = utcnow()
    assert main(["wal-push", str(source)]) == 0
    after = utcnow()
    head = boto3.client("s3", endpoint_url=s3_server).head_object(
        Bucket=bucket, Key=f"wal/{SEGMENT}"
    )
    assert head["ObjectLockMode"] == "GOVERNANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert before + timedelta(days=14, seconds=-1) <= until <= after + timedelta(days=14, seconds=1)
    assert main(["wal-push", str(source)]) == 0  # idempotent: already in S3
    # an encrypted segment (<name>.age) carries the lock too
    monkeypatch.setenv("PRESKOOL_DR_AGE_RECIPIENTS", make_key(tmp_path / "keys").recipient)
    encrypted = source.with_name("000000010000000000000008")
    encrypted.write_bytes(b"e" * 8192)
    assert main(["wal-push", str(encrypted)]) == 0
    head = boto3.client("s3", endpoint_url=s3_server).head_object(
        Bucket=bucket, Key=f"wal/{encrypted.name}.age"
    )
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] >= before + timedelta(days=14, seconds=-1)


def test_wal_push_fails_rather_than_store_an_unlocked_copy(
    s3: str,
    s3_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A bucket made without Object Lock: exit 1 (PostgreSQL keeps the segment and
    retries), nothing in S3."""
    _wal_lock_runbook(tmp_path, monkeypatch)
    source = tmp_path / "pg_wal" / SEGMENT
    source.parent.mkdir()
    source.write_bytes(b"w" * 8192)
    assert main(["wal-push", str(source)]) == 1
    err = capfd.readouterr().err
    assert "needs a bucket created with Object Lock enabled" in err
    listed = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3)
    assert not [o for o in listed.get("Contents", []) if o["Key"].startswith("wal/")]


@pytest.mark.slow
def test_check_warns_when_the_newest_wal_segment_in_s3_has_no_lock(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _locked_bucket(s3_server, monkeypatch)
    _wal_lock_runbook(tmp_path, monkeypatch)
    settings = WalSettings.from_config(load_config())
    assert settings.lock_mode == "GOVERNANCE"
    source = tmp_path / "pg_wal" / SEGMENT
    source.parent.mkdir()
    source.write_bytes(b"w" * 8192)
    push(source, dataclasses.replace(settings, lock_mode=None))  # archived before the lock
    now = utcnow()
    status, summary = archive_health(settings, now).verdict(24.0, now)
    assert status == "WARNING", summary
    assert f"S3 copy not locked: WAL segment {SEGMENT} is in S3 without Object Lock" in summary
    newer = source.with_name("000000010000000000000008")
    newer.write_bytes(b"v" * 8192)
    push(newer, settings)
    now = utcnow()
    assert archive_health(settings, now).verdict(24.0, now)[0] == "OK"


def test_wal_push_refuses_an_invalid_lock_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runbook = write_runbook(tmp_path, backups={"object_lock": {"mode": "FOREVER"}})
    with pytest.raises(DrError, match=r"backups\.object_lock\.mode must be one of"):
        push_lock(runbook, env={})
    (tmp_path / "plain").mkdir()
    plain = write_runbook(tmp_path / "plain", backups={"retention": WAL_RETENTION})
    assert push_lock(plain, env={}) == (None, None)


# ---------------------------------------------------------------- base backups (slow)


@pytest.mark.slow
def test_base_backup_is_locked_and_pruning_keeps_locked_wal_and_backups(
    s3: str,
    s3_server: str,
    dr_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = _locked_bucket(s3_server, monkeypatch)
    runbook = write_runbook(
        tmp_path, backups={"object_lock": {"mode": "GOVERNANCE"}, "retention": WAL_RETENTION}
    )
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    backup_dir = Path(dr_env["BACKUP_DIR"])
    client = boto3.client("s3", endpoint_url=s3_server)
    before = utcnow()
    assert main(["backup", "--kind", "base"]) == 0
    after = utcnow()
    (first,) = [p for p in backup_dir.iterdir() if p.is_dir()]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"preskool-backups/{first.name}/base.tar.gz" in keys
    assert f"preskool-backups/{first.name}.meta.json" in keys
    for key in keys:  # every member, its sidecar, and the meta
        head = client.head_object(Bucket=bucket, Key=key)
        # size and parts in the message: moto drops the lock of a multipart upload (> 8 MiB)
        said = (key, head["ContentLength"], head.get("PartsCount"))
        assert head.get("ObjectLockMode") == "GOVERNANCE", said
        until = head["ObjectLockRetainUntilDate"]
        low, high = before + timedelta(days=14, seconds=-1), after + timedelta(days=14, seconds=1)
        assert low <= until <= high, key

    # Two expired base backups in S3 (and locally): one unlocked, one still locked.
    info = base_info.local_info(first)
    assert info is not None
    old = {"preskool-base-20200101_000000": None, "preskool-base-20200102_000000": "GOVERNANCE"}
    for name, mode in old.items():
        copy = backup_dir / name
        shutil.copytree(first, copy)
        shutil.copy(meta_path(first), meta_path(copy))
        extra = (
            {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": utcnow() + timedelta(days=1)}
            if mode
            else {}
        )
        for member in [*copy.iterdir(), meta_path(copy)]:
            key = f"{name}/{member.name}" if member.parent == copy else member.name
            client.put_object(
                Bucket=bucket,
                Key=f"preskool-backups/{key}",
                Body=member.read_bytes(),
                ContentMD5=base64.b64encode(hashlib.md5(member.read_bytes()).digest()).decode(),
                **extra,
            )
    # WAL before the oldest base backup left: one pushed under the lock, one without.
    size, start = info.wal_segment_size, info.start_segment.number(info.wal_segment_size)
    locked = Segment.at(info.timeline, start - 1, size).name
    unlocked = Segment.at(info.timeline + 1, start - 1, size).name
    settings = WalSettings.from_config(load_config())
    assert settings.lock_mode == "GOVERNANCE" and settings.lock_days == 14
    for name, wal in (
        (locked, settings),
        (unlocked, dataclasses.replace(settings, lock_mode=None)),
    ):
        source = tmp_path / "pg_wal" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(name.encode() * 100)
        push(source, wal)
    capsys.readouterr()
    time.sleep(1)  # a new name: backups are named by the second
    assert main(["backup", "--kind", "base"]) == 0
    out = capsys.readouterr().out
    assert "Deleted 3 old base backup(s)" in out  # both local copies, the unlocked S3 one
    assert f"Kept s3://{bucket}/preskool-backups/preskool-base-20200102_000000" in out
    assert "Removed 1 WAL file(s) from S3" in out
    assert f"Kept 1 WAL file(s) in s3://{bucket}/wal/ no base backup needs: Object Lock" in out
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"wal/{locked}" in keys and f"wal/{unlocked}" not in keys
    assert not [k for k in keys if "20200101" in k]
    assert [k for k in keys if "20200102" in k]
    markers = client.list_object_versions(Bucket=bucket).get("DeleteMarkers", [])
    assert not [m for m in markers if locked in m["Key"] or "20200102" in m["Key"]]


def test_a_multipart_upload_is_locked_too(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over boto3's 8 MiB threshold an upload is multipart; moto's server completes such an
    object without the lock its CreateMultipartUpload carried, so the upload reads the
    lock back and puts the retention on the object itself."""
    bucket = _locked_bucket(s3_server, monkeypatch)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    until = (utcnow() + timedelta(days=3)).replace(microsecond=0)
    S3Store(bucket).upload(big, lock=ObjectLock("GOVERNANCE", until))
    head = boto3.client("s3", endpoint_url=s3_server).head_object(
        Bucket=bucket, Key=S3Store(bucket).prefix + "big.bin"
    )
    assert head["ETag"].strip('"').endswith("-1")  # multipart indeed (one 16 MiB part)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] == until
