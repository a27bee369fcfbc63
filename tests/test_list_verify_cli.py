"""`preskool-dr list` and `preskool-dr verify` as an operator or a script runs them: a real
subprocess, real files, moto's S3 server over HTTP; exit codes and output checked."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from preskool_dr.core.base.config import load_config
from preskool_dr.core.storage.backup_names import backup_name
from preskool_dr.core.storage.checksum import sidecar_path, write_sidecar
from tests.support.backups import make_backup, pg_dump_shaped, s3_store, upload_backup
from tests.support.cli import call_cli
from tests.support.leaks import AWS_SECRET as SECRET

pytestmark = pytest.mark.usefixtures("s3_bucket")

NOW = datetime.now(UTC).replace(microsecond=0)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`preskool-dr ARGS` in-process: these tests read what list and verify print."""
    result = call_cli(*args)
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def backup_dir() -> Path:
    return load_config().backups.dir


def test_list_json_shape_and_table() -> None:
    config = load_config()
    store = s3_store(config)
    local = make_backup(backup_dir(), NOW - timedelta(hours=3), "daily")
    upload_backup(store, local)
    staging = backup_dir().parent / "staging"
    staging.mkdir()
    weekly = make_backup(staging, NOW - timedelta(days=2), "weekly", seed=2)
    upload_backup(store, weekly, "GLACIER")

    result = cli("list", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["name"] for r in records] == [local.name, weekly.name]
    required = {"name", "kind", "time", "size", "locations", "storage_class", "has_md5"}
    for record in records:
        assert required <= record.keys()
        assert list(record) == sorted(record)  # stable, sorted keys
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0)
        assert record["time"].endswith("Z")
    first, second = records
    assert first["time"] == (NOW - timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    assert first["locations"] == ["local", "s3"] and first["kind"] == "daily"
    assert first["size"] == local.stat().st_size and first["has_md5"] is True
    assert second["locations"] == ["s3"] and second["storage_class"] == "GLACIER"
    assert second["kind"] == "weekly" and second["restore_state"] is None
    assert second["needs_restore"] is True

    assert json.loads(cli("list", "--json", "--source", "local").stdout)[0]["name"] == local.name
    assert len(json.loads(cli("list", "--json", "--source", "s3").stdout)) == 2

    table = cli("list")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "KIND"]
    assert local.name in lines[1] and "3 hours ago" in lines[1] and "KiB" in lines[1]
    assert "local+s3" in lines[1] and "yes" in lines[1]
    assert weekly.name in lines[2] and "GLACIER" in lines[2] and "needs restore" in lines[2]
    assert f"preskool-dr verify {weekly.name} --request-restore" in table.stdout


def test_list_empty_and_bad_source() -> None:
    result = cli("list")
    assert result.returncode == 0 and "No backups found" in result.stdout
    assert cli("list", "--json").stdout.strip() == "[]"
    assert cli("list", "--source", "ftp").returncode == 2


def test_list_with_unreachable_bucket_still_shows_local(monkeypatch: pytest.MonkeyPatch) -> None:
    local = make_backup(backup_dir(), NOW - timedelta(hours=1))
    monkeypatch.setenv("S3_BUCKET", "preskool-no-such-bucket")
    result = cli("list", "--json")
    assert result.returncode == 0
    assert [r["name"] for r in json.loads(result.stdout)] == [local.name]
    assert "warning:" in result.stderr and "preskool-no-such-bucket" in result.stderr


def test_verify_good_local_backup() -> None:
    path = make_backup(backup_dir(), NOW - timedelta(hours=1))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    for spec in ("latest", path.name, str(path)):
        result = cli("verify", spec)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"[OK]    MD5: {md5} matches the sidecar" in result.stdout
        assert "[OK]    Gzip integrity check passed" in result.stdout
        assert "[FAIL]" not in result.stdout
    report = json.loads(cli("verify", "latest", "--json").stdout)
    assert report["ok"] is True and report["status"] == "ok"
    assert report["files"][0]["actual_md5"] == report["files"][0]["expected_md5"] == md5


def test_verify_bit_flip_is_exit_1() -> None:
    path = make_backup(backup_dir(), NOW - timedelta(hours=1))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    write_sidecar(path, hashlib.md5(data).hexdigest())
    result = cli("verify", path.name)
    assert result.returncode == 1
    assert "[OK]    MD5:" in result.stdout
    assert "[FAIL]  Gzip integrity check failed: corrupt gzip data" in result.stdout
    assert "[FAIL]  Backup is NOT usable" in result.stdout


def test_verify_truncated_is_exit_1() -> None:
    path = make_backup(backup_dir(), NOW - timedelta(hours=1))
    path.write_bytes(path.read_bytes()[:-100])
    write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
    result = cli("verify", "latest", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "bad" and "truncated" in report["files"][0]["gzip_error"]


def test_verify_gzip_that_is_not_a_whole_dump_is_exit_1() -> None:
    path = make_backup(backup_dir(), NOW - timedelta(hours=1))
    text = gzip.decompress(path.read_bytes())
    for content, why in (
        (b"name,grade\nAda,A\n", "not a pg_dump backup"),  # a valid gzip of something else
        (text[: text.index(b"\n", len(text) // 2) + 1], "cut short"),  # cut at a line, re-gzipped
    ):
        path.write_bytes(gzip.compress(content))
        write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
        result = cli("verify", path.name)
        assert result.returncode == 1, result.stdout
        assert "[OK]    Gzip integrity check passed" in result.stdout
        assert "[FAIL]  Content check failed: " in result.stdout and why in result.stdout
        assert "[FAIL]  Backup is NOT usable" in result.stdout
        report = json.loads(cli("verify", path.name, "--json").stdout)
        assert report["status"] == "bad" and report["files"][0]["md5_ok"] is True
        assert report["files"][0]["dump_ok"] is False and why in report["files"][0]["dump_error"]


def test_verify_md5_mismatch_names_both_digests() -> None:
    path = make_backup(backup_dir(), NOW - timedelta(hours=1))
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    write_sidecar(path, "f" * 32)
    result = cli("verify", path.name)
    assert result.returncode == 1
    assert f"[FAIL]  MD5 mismatch: expected {'f' * 32} (sidecar), actual {actual}" in result.stdout
    assert "[OK]    Gzip integrity check passed" in result.stdout


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        (None, "is missing"),
        ("garbage\n", "malformed"),
        (f"{'a' * 32}  {backup_name('daily', datetime(2020, 1, 1))}\n", "another backup"),
    ],
)
def test_verify_sidecar_problems_are_exit_1(sidecar: str | None, message: str) -> None:
    path = make_backup(backup_dir(), NOW - timedelta(hours=1))
    if sidecar is None:
        sidecar_path(path).unlink()
    else:
        sidecar_path(path).write_text(sidecar)
    result = cli("verify", path.name)
    assert result.returncode == 1
    assert "[FAIL]  MD5:" in result.stdout and message in result.stdout


def test_verify_zero_byte_backup_is_exit_1() -> None:
    path = backup_dir() / backup_name("daily", NOW)
    path.write_bytes(b"")
    write_sidecar(path, hashlib.md5(b"").hexdigest())
    result = cli("verify", "latest")
    assert result.returncode == 1 and "empty file" in result.stdout


def test_verify_not_found_is_exit_2() -> None:
    for spec in ("latest", "preskool-backup-20990101_000000.sql.gz", "/no/such/file.sql.gz"):
        result = cli("verify", spec)
        assert result.returncode == 2, spec
        assert result.stderr.startswith("preskool-dr: error: ")
        assert len(result.stderr.strip().splitlines()) == 1
    assert cli("verify").returncode == 2  # usage


def test_verify_downloads_an_s3_only_backup() -> None:
    config = load_config()
    store = s3_store(config)
    staging = backup_dir().parent / "staging"
    staging.mkdir()
    staged = make_backup(staging, NOW - timedelta(hours=2), "daily")
    upload_backup(store, staged)
    result = cli("verify", store.url(staged.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"downloaded from {store.url(staged.name)}" in result.stdout
    local = backup_dir() / staged.name
    assert local.read_bytes() == staged.read_bytes()
    assert sidecar_path(local).exists()
    assert "\r" not in result.stderr  # no progress line when stderr is not a terminal


@pytest.mark.slow
def test_verify_archived_backup_exit_3_and_restore_request() -> None:
    config = load_config()
    store = s3_store(config)
    staging = backup_dir().parent / "staging"
    staging.mkdir()
    staged = make_backup(staging, NOW - timedelta(days=3), "weekly")
    upload_backup(store, staged, "DEEP_ARCHIVE")

    result = cli("verify", staged.name)
    assert result.returncode == 3
    assert "DEEP_ARCHIVE" in result.stderr and "not restored yet" in result.stderr
    assert f"preskool-dr verify {store.url(staged.name)} --request-restore" in result.stderr
    report = json.loads(cli("verify", staged.name, "--json").stdout)
    assert report["status"] == "archived" and report["ok"] is False

    requested = cli("verify", staged.name, "--request-restore")
    assert requested.returncode == 3
    assert requested.stdout.startswith("[RESTORE] restore requested for")
    # Moto completes restores at once: the next verify downloads and checks it.
    result = cli("verify", staged.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[OK]    Backup verified" in result.stdout
    again = cli("verify", staged.name, "--request-restore")
    assert again.returncode == 0 and "needs no restore" in again.stdout


def test_verify_gzip_with_wrong_name_still_verifies_content() -> None:
    # An operator's renamed copy: resolved as a path, checked the same way.
    copy = backup_dir().parent / "copy-of-backup.sql.gz"
    copy.write_bytes(gzip.compress(pg_dump_shaped(b"SELECT 1;\n")))
    write_sidecar(copy, hashlib.md5(copy.read_bytes()).hexdigest())
    assert cli("verify", str(copy)).returncode == 0
