"""Storage: a full disk, an unreadable backup folder, a backup that vanishes, an interrupted
download.

Guarantee: no file ever carries a final backup name unless it is complete (dumps and
downloads are written under `.part` names and renamed at the end). A full disk stops the
backup or the download with the path, the system's reason and what to free; a backup
leaves nothing behind, a download keeps its `.part` and resumes it with an HTTP Range
request once there is room; the resumed file is verified like any other (a damaged `.part`
is caught, not trusted). An unreadable backup folder is named with the fix. A backup that
disappears after step 2 fails the step that needs it; another backup is never substituted.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.events import StepStatus, utcnow
from preskool_dr.core.restore.engine import Engine, RunOptions
from tests.support.backups import s3_only_backup
from tests.support.checks import (
    FINAL_NAME,
    assert_no_partial_backups,
    assert_says,
    the_error,
    wait_for_size,
)
from tests.support.child import Child
from tests.support.cli import cli_argv, run, without_dac_override
from tests.support.s3proxy import Fault, FaultProxy
from tests.support.site import Site

LIMIT = 3 << 19  # 1.5 MiB: room for a first 1 MiB chunk of the download, not the whole


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real file system that fills up: tmpfs of `size` mounted on `folder` (needs root)."""
    folder.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the rlimit case runs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def grow(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def limit_file_size() -> None:
    """preexec_fn: writes past LIMIT fail with EFBIG (SIGXFSZ ignored, as Python does)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
@pytest.mark.slow
def test_disk_full_while_downloading_keeps_the_part_and_resumes(
    site: Site, s3_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Disk full while downloading: step 3 fails naming the .part and free space, the app is
    still up; after room is made, --resume continues the .part with an HTTP Range request.
    A disk that is already too small (tmpfs) is refused before a byte is written, naming
    what is needed and free (the space check, tests/test_space.py); a limit the space check
    cannot see (RLIMIT_FSIZE) fills up mid-download."""
    backup = s3_only_backup(site)
    mount = site.root / "full"
    with contextlib.ExitStack() as stack:
        if how == "tmpfs":
            stack.enter_context(small_tmpfs(mount, "1536k"))
            monkeypatch.setenv("BACKUP_DIR", str(mount))
            failed = site.restore(backup.name)
        else:
            argv = cli_argv("restore", backup.name, "--confirm", site.db.name, runbook=site.runbook)
            failed = run(argv, site.env(), preexec_fn=limit_file_size)
        reason = "File too large"  # (rlimit: the tmpfs case is refused up front)

        assert failed.returncode == 1, failed.stdout + failed.stderr
        line = the_error(failed)
        part = site.backup_dir / (backup.name + ".part")
        if how == "tmpfs":
            assert_says(line, "[FAIL]  Download from S3 failed:", "needs", "free")
            assert not part.exists()
        else:
            assert_says(line, "[FAIL]  Download from S3 failed:", reason, "check free space")
            assert part.is_file() and part.stat().st_size >= 1 << 20
        assert not (site.backup_dir / backup.name).exists()
        assert "has not been touched" in failed.stdout and site.calls() == []
        state = site.the_run()
        assert state.step("download").status is StepStatus.FAILED

        if how == "tmpfs":
            grow(mount, "64m")
        kept = part.stat().st_size if part.exists() else 0
        resumed = site.resume(state.run_id)

        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        if kept:
            assert proxy_ranges(s3_proxy, backup.name)[-1] == f"bytes={kept}-"
        assert not part.exists()
        assert_no_partial_backups(site.backup_dir)
        site.assert_no_leak(failed, resumed)


def proxy_ranges(proxy: FaultProxy, name: str) -> list[str | None]:
    return [seen.range for seen in proxy.gets(name)]


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_while_writing_a_backup_leaves_nothing(
    site: Site, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Disk full while writing a backup: exit 1, one line with the reason and the folder to
    free, no file left under any name; the next backup with room succeeds."""
    mount = site.root / "full"
    with contextlib.ExitStack() as stack:
        if how == "tmpfs":
            stack.enter_context(small_tmpfs(mount, "32k"))
            monkeypatch.setenv("BACKUP_DIR", str(mount))
            result = site.cli("backup", "--no-upload")
        else:
            monkeypatch.setenv("BACKUP_DIR", str(mount))
            mount.mkdir()

            def tiny_files() -> None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (32 << 10, 32 << 10))

            result = run(cli_argv("backup", "--no-upload"), site.env(), preexec_fn=tiny_files)
        reason = "No space left on device" if how == "tmpfs" else "File too large"

        assert result.returncode == 1, result.stdout + result.stderr
        line = the_error(result)
        assert_says(line, "[FAIL]  cannot write", reason, "nothing was saved", "free space in")
        assert [p.name for p in mount.iterdir()] == [".preskool-backup.lock"]
        if how == "tmpfs":
            grow(mount, "64m")
        again = site.cli("backup", "--no-upload")
        assert again.returncode == 0, again.stdout + again.stderr
        assert len([p for p in mount.iterdir() if FINAL_NAME.match(p.name)]) == 1
        assert_no_partial_backups(mount)
        site.assert_no_leak(result, again)


@pytest.mark.parametrize("kind", ["chmod-000", "a-file"])
def test_unreadable_backup_dir_is_named_with_the_fix(site: Site, kind: str) -> None:
    """BACKUP_DIR unreadable (mode 000, as a user without root's override) or not a folder:
    list, verify, restore and backup each say which folder and what to fix; nothing runs."""
    site.backup()
    folder = site.backup_dir
    env = site.env()
    if kind == "chmod-000":
        folder.chmod(0)
        site.cleanups.append(lambda: folder.chmod(0o700))
        reason = "Permission denied"
    else:
        env["BACKUP_DIR"] = str(site.root / "runbook.yaml")  # a file, not a folder
        reason = "Not a directory"
    prefix = without_dac_override()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run(prefix + cli_argv(*args, runbook=site.runbook), env)

    listed = cli("list")
    verified = cli("verify", "latest")
    restored = cli("restore", "latest", "--confirm", site.db.name)
    backed_up = cli("backup", "--no-upload")
    for result in (listed, verified, restored):
        assert result.returncode == 1, result.stdout + result.stderr
        line = the_error(result)
        assert_says(line, "preskool-dr: error: cannot read backup directory", reason)
        assert "fix its permissions" in line or "BACKUP_DIR" in line, line
    assert backed_up.returncode == 1, backed_up.stdout + backed_up.stderr
    line = the_error(backed_up)
    assert_says(line.lower(), "[fail]  ", reason.lower(), "nothing was saved")
    assert site.calls() == []
    assert not (site.state_dir / "runs").exists() or not list((site.state_dir / "runs").iterdir())
    site.assert_no_leak(listed, verified, restored, backed_up)


def test_backup_deleted_after_it_was_chosen_is_not_replaced(site: Site) -> None:
    """The backup chosen in step 2 disappears before step 3: the step fails naming it; an
    older backup is never substituted behind the operator's back."""
    config = site.config()
    run_backup(config, "daily", upload=False, at=utcnow() - timedelta(hours=2))
    newest = site.backup()
    engine = Engine.start(config, RunOptions(backup_spec="latest", operator="ops"))
    try:
        assert engine.state.backup and engine.state.backup.name == newest.name
        newest.unlink()
        record = engine.run_step("download")
        assert record.status is StepStatus.FAILED, record.detail
        assert newest.name in record.detail and "\n" not in record.detail
        assert engine.state.backup.name == newest.name
        assert engine.blocked_reason("recreate_db") is not None
    finally:
        engine.close()


def test_backup_deleted_between_download_and_verify(site: Site) -> None:
    """The backup vanishes after step 3: step 4 fails with a one-line reason, step 5 stays
    blocked, production untouched."""
    backup = site.backup()
    before = site.checksum()
    engine = Engine.start(site.config(), RunOptions(backup_spec=backup.name, operator="ops"))
    try:
        assert engine.run_step("download").status is StepStatus.DONE
        backup.unlink()
        record = engine.run_step("verify")
        assert record.status is StepStatus.FAILED
        assert backup.name in record.detail and "\n" not in record.detail
        assert engine.blocked_reason("recreate_db") is not None
    finally:
        engine.close()
    assert site.checksum() == before


def kill_download_half_way(site: Site, proxy: FaultProxy, backup: Path) -> Path:
    """Start `verify` of an S3-only backup, SIGKILL it once 1 MiB is in the .part."""
    proxy.add(Fault("stall", backup.name, after_bytes=(1 << 20) + 4096))
    child = Child(cli_argv("verify", backup.name, runbook=site.runbook), site.env())
    site.cleanups.append(child.kill)
    part = site.backup_dir / (backup.name + ".part")
    wait_for_size(part, 1 << 20)
    child.signal(signal.SIGKILL)
    killed = child.finish()
    proxy.release()
    assert killed.returncode == -signal.SIGKILL
    assert not (site.backup_dir / backup.name).exists()
    return part


def test_killed_download_part_is_resumed_with_range(site: Site, s3_proxy: FaultProxy) -> None:
    """A download killed (SIGKILL) half way leaves only a .part; the next verify resumes it
    with an HTTP Range request and verifies the result."""
    backup = s3_only_backup(site)
    part = kill_download_half_way(site, s3_proxy, backup)
    kept = part.stat().st_size

    again = site.cli("verify", backup.name)

    assert again.returncode == 0, again.stdout + again.stderr
    assert proxy_ranges(s3_proxy, backup.name)[-1] == f"bytes={kept}-"
    assert "[OK]    Backup verified" in again.stdout
    assert_no_partial_backups(site.backup_dir)
    site.assert_no_leak(again)


@pytest.mark.slow
def test_damaged_part_is_not_trusted(site: Site, s3_proxy: FaultProxy) -> None:
    """A .part damaged on disk is resumed, then caught by the checksum: the restore stops at
    step 4 with the app up and production untouched."""
    backup = s3_only_backup(site)
    before = site.checksum()
    part = kill_download_half_way(site, s3_proxy, backup)
    data = bytearray(part.read_bytes())
    data[1000] ^= 0x01  # the disk returned other bytes than were written
    part.write_bytes(bytes(data))

    result = site.restore(backup.name)

    assert result.returncode == 1, result.stdout + result.stderr
    assert proxy_ranges(s3_proxy, backup.name)[-1] == f"bytes={len(data)}-"
    line = the_error(result)
    assert_says(line, "[FAIL]  Verify checksum failed:", "MD5 mismatch")
    assert "has not been touched" in result.stdout and site.calls() == []
    assert site.checksum() == before
    site.assert_no_leak(result)


@pytest.mark.slow
def test_damaged_part_that_failed_verify_is_downloaded_afresh(
    site: Site, s3_proxy: FaultProxy
) -> None:
    """A resumed download that fails verification does not stay under the final name (a
    retry would verify the same bad bytes forever): it is removed, and the next verify
    downloads the S3 original from byte 0 and passes."""
    backup = s3_only_backup(site)
    part = kill_download_half_way(site, s3_proxy, backup)
    data = bytearray(part.read_bytes())
    data[1000] ^= 0x01
    part.write_bytes(bytes(data))

    bad = site.cli("verify", backup.name)

    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert_says(bad.stdout, "MD5 mismatch", "[WARN]  Removed the downloaded copy", "afresh")
    assert not (site.backup_dir / backup.name).exists() and not part.exists()
    again = site.cli("verify", backup.name)
    assert again.returncode == 0, again.stdout + again.stderr
    assert proxy_ranges(s3_proxy, backup.name)[-1] is None  # whole object, no Range
    assert_no_partial_backups(site.backup_dir)
    site.assert_no_leak(bad, again)
