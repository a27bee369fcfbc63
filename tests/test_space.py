"""Free space before downtime: the decision with numbers, and on the real thing a download
refused by a real (2 MiB tmpfs) disk, before anything is written."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from preskool_dr.core.base.space import MARGIN_MIN, free_bytes, shortfall, with_margin
from preskool_dr.core.storage.s3store import S3Store
from tests.support.cli import run_cli

MiB = 1024 * 1024
GiB = 1024 * MiB
NAME = "preskool-backup-20260220_020000.sql.gz"


def test_margin_is_five_percent_and_at_least_16_mib() -> None:
    assert with_margin(0) == MARGIN_MIN
    assert with_margin(100 * MiB) == 116 * MiB
    assert with_margin(20 * GiB) == 21 * GiB


def test_shortfall_names_needed_and_free() -> None:
    fix = "free space or set BACKUP_DIR to a bigger disk"
    assert shortfall(GiB, 2 * GiB, "/var/backups/preskool", fix) is None
    assert shortfall(GiB, with_margin(GiB), "/x", fix) is None  # exactly enough
    refusal = shortfall(GiB + 100 * MiB, 300 * MiB, "/var/backups/preskool", fix)
    assert refusal == (
        "needs 1.2 GiB in /var/backups/preskool, 300.0 MiB free: "
        "free space or set BACKUP_DIR to a bigger disk"
    )
    assert shortfall(0, MARGIN_MIN - 1, "/x", fix) is not None  # the margin itself counts


def test_free_bytes_of_a_folder_not_made_yet(tmp_path: Path) -> None:
    # measured on the nearest existing parent's disk; other tests write to that disk
    # between the two calls, so equal within what they may write meanwhile
    missing, existing = free_bytes(tmp_path / "not" / "yet"), free_bytes(tmp_path)
    assert existing > 0 and abs(missing - existing) < 512 * MiB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (needs root; skipped elsewhere), unmounted afterwards."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def stage_in_bucket(bucket: str, folder: Path, size: int) -> None:
    """A backup of `size` bytes (with sidecar) in S3 only; its bytes are never read."""
    path = folder / NAME
    path.write_bytes(os.urandom(size))
    sidecar = folder / (NAME + ".md5")
    sidecar.write_text(f"{'0' * 32}  {NAME}\n")
    store = S3Store(bucket, "preskool-backups/")
    store.upload(sidecar)
    store.upload(path)
    path.unlink()


def test_download_refused_on_a_full_disk_leaves_nothing(
    s3_bucket: str, small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage_in_bucket(s3_bucket, tmp_path, 3 * MiB)
    backup_dir = small_disk / "backups"  # not made yet: measured on the tmpfs
    monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
    result = run_cli("verify", NAME)
    assert result.returncode == 1, result.stderr
    message = result.stdout + result.stderr
    assert f"downloading {NAME} needs 19.0 MiB in {backup_dir}, 2.0 MiB free" in message
    assert "set BACKUP_DIR to a bigger disk" in message
    assert list(small_disk.iterdir()) == []  # no folder, no .part, no sidecar


def test_restore_and_restore_test_refuse_the_download_before_any_downtime(
    s3: str,
    small_disk: Path,
    tmp_path: Path,
    dr_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage_in_bucket(s3, tmp_path, 3 * MiB)
    monkeypatch.setenv("BACKUP_DIR", str(small_disk))
    restore = run_cli("restore", NAME, "--confirm", dr_env["DB_NAME"])
    assert restore.returncode == 1, restore.stderr
    assert f"needs 19.0 MiB in {small_disk}, 2.0 MiB free" in restore.stdout
    assert "step 1/9" not in restore.stdout  # the app was never taken offline
    assert "has not been touched" in restore.stdout
    test = run_cli("restore-test", NAME)
    assert test.returncode == 1
    assert f"needs 19.0 MiB in {small_disk}, 2.0 MiB free" in test.stdout + test.stderr
    assert list(small_disk.iterdir()) == []
