"""S3Store against moto's S3 server over real HTTP: pagination, storage classes, Glacier
restore flow, resumable download, and the operator's messages for the usual failures."""

from __future__ import annotations

import gzip
import hashlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from preskool_dr.core.base.errors import ArchivedError, Cancelled, DrError, NotFoundError
from preskool_dr.core.base.events import Event, Progress
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.storage.checksum import verify_file
from preskool_dr.core.storage.s3store import (
    S3Store,
    parse_restore_header,
    parse_s3_url,
    store_for_url,
)
from tests.support.moto import moto_checks_credentials, restores_stay_in_progress_briefly

SECRET = "aws-secret-MARKER-42"
NAME = "preskool-backup-20260220_020000.sql.gz"


def backup_bytes(size: int = 3 * 1024 * 1024 + 12345) -> bytes:
    return gzip.compress(random.Random(7).randbytes(size), compresslevel=1)


def test_parse_restore_header() -> None:
    assert parse_restore_header(None) is None
    assert parse_restore_header('ongoing-request="true"') == "in-progress"
    expiry = 'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'
    assert parse_restore_header(expiry) == "available"


def test_s3_urls() -> None:
    assert parse_s3_url("s3://b/p/q/name.gz") == ("b", "p/q/name.gz")
    store, name = store_for_url("s3://b/preskool-backups/x.sql.gz")
    assert (store.bucket, store.prefix, name) == ("b", "preskool-backups/", "x.sql.gz")
    with pytest.raises(ValueError):
        parse_s3_url("https://b/x")


@pytest.mark.slow
def test_upload_and_list_more_than_a_thousand_objects(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    client = boto3.client("s3")
    names = [f"obj-{i:05d}" for i in range(1105)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        puts = pool.map(
            lambda n: client.put_object(Bucket=s3_bucket, Key=store.prefix + n, Body=b"x"), names
        )
        assert len(list(puts)) == len(names)
    client.put_object(Bucket=s3_bucket, Key="elsewhere/outside-the-prefix", Body=b"x")
    backup = tmp_path / NAME
    backup.write_bytes(backup_bytes())
    events: list[Event] = []
    store.upload(backup, on_event=events.append, step_id="upload-step")
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == backup.stat().st_size
    assert {p.phase for p in progress} == {"upload"}

    objects = store.list_objects()
    assert len(objects) == 1106
    assert {store.name_of(o.key) for o in objects} == {*names, NAME}
    uploaded = next(o for o in objects if o.key.endswith(NAME))
    assert uploaded.size == backup.stat().st_size
    assert uploaded.storage_class == "STANDARD" and not uploaded.needs_restore
    assert store.head(NAME).size == uploaded.size


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archived_object_restore_flow(s3_bucket: str, tmp_path: Path, storage_class: str) -> None:
    store = S3Store(s3_bucket)
    backup = tmp_path / NAME
    backup.write_bytes(backup_bytes(200_000))
    store.upload(backup, storage_class=storage_class)
    store.upload(backup, name="standard-copy.sql.gz")

    listed = {store.name_of(o.key): o for o in store.list_objects()}
    assert listed[NAME].storage_class == storage_class
    assert listed[NAME].restore_state is None and listed[NAME].needs_restore
    assert listed["standard-copy.sql.gz"].restore_state is None

    dest = tmp_path / "dl" / NAME
    dest.parent.mkdir()
    with pytest.raises(ArchivedError) as archived:
        store.download(NAME, dest)
    assert archived.value.exit_code == 3
    assert storage_class in str(archived.value)
    assert "--request-restore" in str(archived.value) and store.url(NAME) in str(archived.value)
    assert not dest.exists()

    assert "no restore needed" in store.request_restore("standard-copy.sql.gz")
    with restores_stay_in_progress_briefly():
        message = store.request_restore(NAME, days=2)
        assert message.startswith("restore requested") and store.url(NAME) in message
        in_progress = store.head(NAME)
        assert in_progress.restore_state == "in-progress" and in_progress.needs_restore
        assert "still in progress" in str(store.archived_error(NAME, in_progress))
        listed = {store.name_of(o.key): o for o in store.list_objects()}
        assert listed[NAME].restore_state == "available" and not listed[NAME].needs_restore
    assert "already restored" in store.request_restore(NAME)
    store.download(NAME, dest)
    assert dest.read_bytes() == backup.read_bytes()


def test_resumed_download_is_complete_and_verifies(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    source = tmp_path / NAME
    source.write_bytes(backup_bytes())
    store.upload(source)
    dest = tmp_path / "dl" / NAME
    dest.parent.mkdir()
    part = dest.with_name(NAME + ".part")
    first = 1024 * 1024 + 777
    part.write_bytes(source.read_bytes()[:first])

    events: list[Event] = []
    assert store.download(NAME, dest, on_event=events.append) == dest
    assert not part.exists()
    assert dest.read_bytes() == source.read_bytes()
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0].done == first  # resumed, not restarted
    assert progress[-1].done == source.stat().st_size
    assert verify_file(dest, hashlib.md5(source.read_bytes()).hexdigest()).ok


def test_a_resumed_part_is_only_as_good_as_the_verify(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    source = tmp_path / NAME
    source.write_bytes(backup_bytes())
    store.upload(source)
    dest = tmp_path / "dl" / NAME
    dest.parent.mkdir()
    damaged = bytearray(source.read_bytes()[:500_000])
    damaged[1000] ^= 0xFF  # a .part from a bad disk: resuming cannot know
    dest.with_name(NAME + ".part").write_bytes(bytes(damaged))
    store.download(NAME, dest)
    assert dest.stat().st_size == source.stat().st_size
    assert not verify_file(dest, hashlib.md5(source.read_bytes()).hexdigest()).ok


def test_oversized_part_is_discarded(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    source = tmp_path / NAME
    source.write_bytes(backup_bytes(50_000))
    store.upload(source)
    dest = tmp_path / "dl" / NAME
    dest.parent.mkdir()
    dest.with_name(NAME + ".part").write_bytes(b"x" * (source.stat().st_size + 10))
    store.download(NAME, dest)
    assert dest.read_bytes() == source.read_bytes()


def test_cancelled_download_keeps_part_and_resumes(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    source = tmp_path / NAME
    source.write_bytes(backup_bytes())
    store.upload(source)
    dest = tmp_path / "dl" / NAME
    dest.parent.mkdir()
    cancel = threading.Event()
    with pytest.raises(Cancelled, match="resume"):
        store.download(NAME, dest, cancel=cancel, on_event=lambda _event: cancel.set())
    assert dest.with_name(NAME + ".part").exists() and not dest.exists()
    store.download(NAME, dest)
    assert dest.read_bytes() == source.read_bytes()


def test_missing_bucket_is_named(s3_bucket: str) -> None:
    store = S3Store("preskool-no-such-bucket")
    for call in (store.list_objects, lambda: store.head(NAME), lambda: store.get_bytes(NAME)):
        with pytest.raises(NotFoundError) as missing:
            call()
        assert "bucket 'preskool-no-such-bucket' does not exist" in str(missing.value)
        assert "S3_BUCKET" in str(missing.value)


def test_missing_object(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    with pytest.raises(NotFoundError) as missing:
        store.head(NAME)
    assert str(missing.value) == (
        f"{store.url(NAME)} does not exist; run `preskool-dr list --source s3` to see the backups"
    )
    assert missing.value.exit_code == 2
    assert store.get_bytes(NAME + ".md5") is None
    with pytest.raises(NotFoundError):
        store.download(NAME, tmp_path / NAME)
    assert not store.exists(NAME)


def test_wrong_credentials_give_one_clear_line(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    source = tmp_path / NAME
    source.write_bytes(b"x")
    with moto_checks_credentials():
        for call in (
            store.list_objects,
            lambda: store.head(NAME),
            lambda: store.upload(source),
            lambda: store.get_bytes(NAME),
        ):
            with pytest.raises(DrError) as denied:
                call()
            text = str(denied.value)
            assert "S3 denied access" in text and "AWS_ACCESS_KEY_ID" in text, text
            assert f"s3://{s3_bucket}" in text
            assert "\n" not in text and SECRET not in text


def test_unreachable_endpoint(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DrError, match="cannot reach the S3 endpoint") as unreachable:
        S3Store(s3_bucket).list_objects()
    assert "AWS_ENDPOINT_URL" in str(unreachable.value)


def test_delete_and_get_bytes(s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(s3_bucket)
    side = tmp_path / (NAME + ".md5")
    side.write_text("a" * 32 + "  " + NAME + "\n")
    store.upload(side)
    assert store.get_bytes(side.name) == side.read_bytes()
    store.delete(side.name)
    assert store.get_bytes(side.name) is None


def test_no_credentials_at_all(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(DrError, match="no AWS credentials found; set AWS_ACCESS_KEY_ID"):
        S3Store(s3_bucket).list_objects()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, "S3 kept failing after retries (SlowDown"),
        ("InternalError", 500, "S3 kept failing after retries"),
        ("SignatureDoesNotMatch", 403, "S3 denied access (SignatureDoesNotMatch)"),
        ("InvalidObjectState", 403, "is archived and not restored yet"),
        ("Weird", 400, "S3 said Weird: went wrong"),
    ],
)
def test_error_codes_become_operator_lines(code: str, status: int, expected: str) -> None:
    # Codes moto cannot be made to return; the mapping is a pure function of the response.
    response: Any = {
        "Error": {"Code": code, "Message": "went wrong"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = S3Store("b").error(botocore.exceptions.ClientError(response, "GetObject"), NAME, "read")
    assert expected in str(error)
    assert "s3://b/preskool-backups/" + NAME in str(error)
    assert error.exit_code == (3 if code == "InvalidObjectState" else 1)
