"""Encrypted WAL: wal-push with age recipients (PRESKOOL_DR_AGE_RECIPIENTS, or the runbook's
`encryption.recipients`) archives `<name>.age` and no clear byte of the segment; wal-fetch
decrypts it with the identity (exit 255, which stops recovery, without one); the stock `age`
tool decrypts it by hand; a re-push compares clear digests; listing and pruning see it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from preskool_dr.cli.wal_cmd import EXIT_ABORT_RECOVERY
from preskool_dr.core.backup.wal.listing import list_archive, segment_size
from preskool_dr.core.backup.wal.push import push
from preskool_dr.core.backup.wal.settings import RECIPIENTS_ENV, WalSettings, push_recipients
from preskool_dr.core.base.age import IDENTITY_ENV
from preskool_dr.core.base.errors import DrError
from tests.support.age_keys import AgeKey, make_key
from tests.support.cli import run_cli
from tests.support.runbook import write_runbook

SEGMENT_SIZE = 16 * 1024 * 1024
SEG1 = "000000010000000000000001"
SEG2 = "000000010000000000000002"
MARKER = b"PRESKOOL-CLEAR-WAL-BYTES-"


def make_segment(folder: Path, name: str, fill: bytes = b"x") -> Path:
    """A segment-sized file with a recognisable clear text at its start."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("wb") as handle:
        handle.write((MARKER + fill) * 4096)
        handle.write(os.urandom(65536))
        handle.truncate(SEGMENT_SIZE)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def archive_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> WalSettings:
    """BACKUP_DIR only (no bucket, no runbook, no identity): a server's environment."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "PRESKOOL_DR_")) or var == "S3_BUCKET":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    return WalSettings.from_env()


@pytest.fixture
def key(tmp_path: Path) -> AgeKey:
    return make_key(tmp_path / "keys")


def assert_no_clear_text(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), f"clear WAL bytes in {path}"


def test_push_encrypts_and_fetch_decrypts_with_the_identity(
    archive_env: WalSettings, key: AgeKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1, b"a")
    monkeypatch.setenv(RECIPIENTS_ENV, key.recipient)
    result = run_cli("wal-push", str(source))
    assert result.returncode == 0, result.stderr
    archive = archive_env.archive_dir
    assert sorted(p.name for p in archive.iterdir()) == [
        f"{SEG1}.age",
        f"{SEG1}.age.md5",
        f"{SEG1}.age.sha256",
    ]
    assert_no_clear_text(archive)
    assert (archive / f"{SEG1}.age").read_bytes().startswith(b"age-encryption.org/v1\n")
    assert (
        subprocess.run(["md5sum", "--check", "--quiet", f"{SEG1}.age.md5"], cwd=archive).returncode
        == 0
    )

    # the stock tool decrypts by hand, and the .sha256 checks what it gives
    manual = tmp_path / "manual"
    manual.mkdir()
    subprocess.run(
        [
            "age",
            "-d",
            "-i",
            str(key.identity),
            "-o",
            str(manual / SEG1),
            str(archive / f"{SEG1}.age"),
        ],
        check=True,
    )
    (manual / f"{SEG1}.sha256").write_bytes((archive / f"{SEG1}.age.sha256").read_bytes())
    assert subprocess.run(["sha256sum", "--check", f"{SEG1}.sha256"], cwd=manual).returncode == 0

    # the same segment again (PostgreSQL retrying after a crash): other ciphertext, same segment
    again = run_cli("wal-push", str(source))
    assert again.returncode == 0, again.stderr
    # another cluster's segment under the same name: refused, the archive untouched
    before = (archive / f"{SEG1}.age").read_bytes()
    other = make_segment(tmp_path / "other", SEG1, b"b")
    refused = run_cli("wal-push", str(other))
    assert refused.returncode == 1 and "different segment" in refused.stderr
    assert (archive / f"{SEG1}.age").read_bytes() == before

    # fetch with the identity: the very bytes; without one: exit 255 (recovery stops)
    dest = tmp_path / "restore" / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir(parents=True)
    monkeypatch.delenv(RECIPIENTS_ENV)
    missing = run_cli("wal-fetch", SEG1, str(dest))
    assert missing.returncode == EXIT_ABORT_RECOVERY
    assert "no identity was given" in missing.stderr and IDENTITY_ENV in missing.stderr
    assert not dest.exists() and not list(dest.parent.iterdir())
    fetched = run_cli("--identity", str(key.identity), "wal-fetch", SEG1, str(dest))
    assert fetched.returncode == 0, fetched.stderr
    assert dest.read_bytes() == source.read_bytes()

    wrong = make_key(tmp_path / "other-keys")
    monkeypatch.setenv(IDENTITY_ENV, str(wrong.identity))
    dest.unlink()
    bad = run_cli("wal-fetch", SEG1, str(dest))
    assert bad.returncode == EXIT_ABORT_RECOVERY and "matches none" in bad.stderr
    assert not list(dest.parent.iterdir())
    # a segment that is not archived at all is still exit 1 (the end of the archive)
    assert run_cli("wal-fetch", SEG2, str(dest)).returncode == 1


def test_recipients_from_the_runbook_and_failing_closed(
    archive_env: WalSettings, key: AgeKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1, b"r")
    assert push_recipients() == ((), "")  # no runbook anywhere: clear, as before
    for folder in ("site", "broken"):
        (tmp_path / folder).mkdir()
    runbook = write_runbook(tmp_path / "site", encryption={"recipients": [key.recipient]})
    assert push_recipients(runbook) == ((key.recipient,), str(runbook))

    # an unusable recipient: exit 1 and nothing written (not even the archive folder)
    broken = write_runbook(tmp_path / "broken", encryption={"recipients": ["age1notakey"]})
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(broken))
    result = run_cli("wal-push", str(source))
    assert result.returncode == 1 and "unusable" in result.stderr
    assert not archive_env.backup_dir.exists()
    # a runbook that cannot be read may configure encryption: refused too
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(tmp_path / "missing.yaml"))
    result = run_cli("wal-push", str(source))
    assert result.returncode == 1 and "nothing was archived" in result.stderr
    assert not archive_env.backup_dir.exists()

    monkeypatch.delenv("PRESKOOL_DR_RUNBOOK")
    result = run_cli("--runbook", str(runbook), "wal-push", str(source))
    assert result.returncode == 0, result.stderr
    assert (archive_env.archive_dir / f"{SEG1}.age").is_file()
    assert not (archive_env.archive_dir / SEG1).exists()
    assert_no_clear_text(archive_env.archive_dir)


def test_listing_segment_size_and_encrypted_s3_copies(
    s3_bucket: str, key: AgeKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(IDENTITY_ENV, raising=False)
    settings = WalSettings.from_env()
    settings = WalSettings(settings.backup_dir, s3_bucket, recipients=(key.recipient,))
    first = make_segment(tmp_path / "pg_wal", SEG1, b"1")
    second = make_segment(tmp_path / "pg_wal", SEG2, b"2")
    assert push(first, settings).s3 == "uploaded"
    assert push(second, settings).s3 == "uploaded"
    assert push(first, settings).s3 == "already in S3"
    keys = {
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="wal/")["Contents"]
    }
    assert keys == {f"wal/{SEG1}.age", f"wal/{SEG2}.age"}

    files = list_archive(settings)
    assert set(files) == {SEG1, SEG2}
    assert all(f.encrypted and f.local and f.s3 for f in files.values())
    assert segment_size(files.values()) == SEGMENT_SIZE

    # the local copy gone: fetched from S3 and decrypted
    for path in settings.archive_dir.iterdir():
        path.unlink()
    dest = tmp_path / "RECOVERYXLOG"
    with_key = WalSettings(settings.backup_dir, s3_bucket, identity=key.identity)
    from preskool_dr.core.backup.wal.fetch import fetch

    assert fetch(SEG2, dest, with_key).source == "s3"
    assert dest.read_bytes() == second.read_bytes()

    # another cluster's segment under an archived name: refused by the clear digest
    local_lost = make_segment(tmp_path / "other", SEG1, b"other")
    with pytest.raises(DrError, match="another segment"):
        push(local_lost, settings)
