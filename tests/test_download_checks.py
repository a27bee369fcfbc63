"""Step 4 of a backup that step 3 downloaded in this process: the MD5, gzip and content
checks were made while the bytes were appended (core/storage/streamcheck.py), so step 4
does not read the file again; it still compares with the sidecar, still fails and removes a
bad download, and reads the file again when it is no longer the one step 3 wrote."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.storage import checksum, s3download
from tests.support.backups import padded, s3_store, upload_backup
from tests.support.site import Site


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file verify_file reads (step 4's read, the verify gate's re-hash)."""
    seen: list[Path] = []
    real: Callable[..., checksum.VerifyResult] = checksum.verify_file

    def counted(path: Path, *args: Any, **kwargs: Any) -> checksum.VerifyResult:
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checksum, "verify_file", counted)
    return seen


@pytest.fixture
def s3_backup(s3: str, site: Site, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ~4 MiB backup only in the bucket; parts of 1 MiB so step 3 uses ranged GETs."""
    monkeypatch.setattr(s3download, "PART_SIZE", 1 << 20)
    backup = site.backup()
    padded(backup, 4 << 20)
    upload_backup(s3_store(site.config()), backup)
    for member in backup.parent.iterdir():
        member.unlink()
    return backup


@pytest.fixture
def engine(site: Site, s3_backup: Path) -> Iterator[Engine]:
    engine = Engine.start(site.config(), RunOptions(backup_spec=s3_backup.name, operator="ops"))
    try:
        yield engine
    finally:
        engine.close()


def test_step_4_uses_the_checks_made_while_downloading(
    engine: Engine, s3_backup: Path, reads: list[Path]
) -> None:
    assert engine.run_step("download").status is StepStatus.DONE
    assert s3_backup.stat().st_size > 2 << 20  # several ranges
    record = engine.run_step("verify")
    assert record.status is StepStatus.DONE, record.detail
    assert "not read again" in record.detail and "matches the sidecar" in record.detail
    assert "Content is complete pg_dump output" in record.detail
    assert reads == []  # step 4 read nothing
    # what the verify gate pins: this file's MD5 and identity
    choice = engine.state.backup
    assert choice is not None
    assert choice.md5 == hashlib.md5(s3_backup.read_bytes()).hexdigest()
    assert choice.identity == checksum.FileIdentity.of(s3_backup.stat())
    assert engine.state.verify is not None and engine.state.verify.md5_ok


def test_a_download_whose_md5_is_not_the_sidecars_is_refused_and_removed(
    s3: str, site: Site, engine: Engine, s3_backup: Path, reads: list[Path]
) -> None:
    key = site.config().backups.s3_prefix + checksum.sidecar_path(s3_backup).name
    boto3.client("s3").put_object(
        Bucket=s3, Key=key, Body=f"{'0' * 32}  {s3_backup.name}\n".encode()
    )
    assert engine.run_step("download").status is StepStatus.DONE
    record = engine.run_step("verify")
    assert record.status is StepStatus.FAILED
    assert "MD5 mismatch: expected " + "0" * 32 in record.detail
    assert "run step 3" in record.detail
    assert reads == []
    assert not s3_backup.exists() and not checksum.sidecar_path(s3_backup).exists()
    assert engine.step("download").status is StepStatus.PENDING


def test_a_download_changed_after_step_3_is_read_again(
    engine: Engine, s3_backup: Path, reads: list[Path]
) -> None:
    assert engine.run_step("download").status is StepStatus.DONE
    with s3_backup.open("ab") as handle:
        handle.write(b"appended after the download")
    record = engine.run_step("verify")
    assert reads == [s3_backup]  # the file is not the one step 3 checked: read again
    assert record.status is StepStatus.FAILED and "MD5 mismatch" in record.detail
    assert "not read again" not in record.detail
