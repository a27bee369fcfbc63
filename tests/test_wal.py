"""wal-push / wal-fetch as PostgreSQL runs them (a fresh `python -m preskool_dr` per
segment, exit status read by the server), against a real directory and moto's S3 server
over HTTP: atomic, verified, idempotent, refusing, and exit 1 only for a missing segment."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from preskool_dr.cli.main import main
from preskool_dr.cli.wal_cmd import EXIT_ABORT_RECOVERY
from preskool_dr.core.backup.wal.fetch import WalMissing, fetch
from preskool_dr.core.backup.wal.health import archive_health
from preskool_dr.core.backup.wal.listing import list_archive, segment_size
from preskool_dr.core.backup.wal.names import Segment, check_name, format_lsn, parse_lsn
from preskool_dr.core.backup.wal.push import push
from preskool_dr.core.backup.wal.settings import FILE_MODE, WalSettings
from preskool_dr.core.base.errors import DrError, UsageError, VerificationError
from tests.support.cli import call_cli, run_cli
from tests.support.leaks import AWS_SECRET

SEGMENT_SIZE = 16 * 1024 * 1024
SEG1 = "000000010000000000000001"
SEG2 = "000000010000000000000002"


def make_segment(folder: Path, name: str, fill: bytes = b"x") -> Path:
    """A segment-sized file whose content depends on `fill` (mostly sparse: cheap)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("wb") as handle:
        handle.write(fill * 4096)
        handle.truncate(SEGMENT_SIZE)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def archive_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> WalSettings:
    """BACKUP_DIR only (no bucket), as a server environment would give it."""
    for var in list(os.environ):
        if var.startswith("AWS_") or var == "S3_BUCKET":
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    return WalSettings.from_env()


# ---------------------------------------------------------------- names and positions


def test_segment_names_positions_and_lsns() -> None:
    last_of_log = Segment.parse("0000000100000000000000FF")
    assert last_of_log == Segment(1, 0, 255)
    following = Segment.at(1, last_of_log.number(SEGMENT_SIZE) + 1, SEGMENT_SIZE)
    assert following.name == "000000010000000100000000"
    assert Segment.for_lsn(2, "1/3000028", SEGMENT_SIZE).name == "000000020000000100000003"
    assert format_lsn(parse_lsn("A/2000100")) == "A/2000100"
    assert Segment.parse("00000001000000000000000G") is None
    for good in (SEG1, "00000002.history", f"{SEG1}.00000028.backup", f"{SEG1}.partial"):
        assert check_name(good) == good
    for bad in (
        "../../etc/passwd",
        f"{SEG1}.md5",
        "0000000100000000000000fe",
        "",
        f".{SEG1}.x.tmp",
    ):
        with pytest.raises(UsageError):
            check_name(bad)


# ---------------------------------------------------------------- local archive


def test_push_then_fetch_round_trip_with_md5sum_sidecar(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1, b"a")
    result = call_cli("wal-push", str(source))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # one quiet line per segment: none
    archived = archive_env.archive_dir / SEG1
    assert md5(archived) == md5(source)
    assert archived.with_name(SEG1 + ".md5").read_text() == f"{md5(source)}  {SEG1}\n"
    assert subprocess.run(["md5sum", "--check", SEG1 + ".md5"], cwd=archived.parent).returncode == 0
    assert oct(archived.stat().st_mode & 0o777) == oct(FILE_MODE)
    assert not list(archived.parent.glob(".*.tmp"))

    dest = tmp_path / "restore" / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir(parents=True)
    result = call_cli("wal-fetch", SEG1, str(dest))
    assert result.returncode == 0, result.stderr
    assert md5(dest) == md5(source)
    assert not list(dest.parent.glob(".*.tmp"))


def test_relative_paths_as_postgresql_passes_them(archive_env: WalSettings, tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    make_segment(datadir / "pg_wal", SEG1, b"r")
    assert run_cli("wal-push", f"pg_wal/{SEG1}", cwd=datadir).returncode == 0
    result = run_cli("wal-fetch", SEG1, "pg_wal/RECOVERYXLOG", cwd=datadir)
    assert result.returncode == 0, result.stderr
    assert md5(datadir / "pg_wal" / "RECOVERYXLOG") == md5(datadir / "pg_wal" / SEG1)


def test_the_servers_user_never_makes_backup_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wal-push runs as the server's OS user: made by it, BACKUP_DIR would be that user's,
    and root's backups and restores trust what is in it. It only makes the archive inside
    an existing BACKUP_DIR, and otherwise names the command that sets it up."""
    from preskool_dr.core.backup.wal import push as push_module

    monkeypatch.setattr(push_module.os, "geteuid", lambda: 101)  # not root
    backup_dir = tmp_path / "missing" / "backups"
    source = make_segment(tmp_path / "pg_wal", SEG1)

    with pytest.raises(DrError) as refused:
        push(source, WalSettings(backup_dir=backup_dir))

    assert "install -d" in str(refused.value)
    assert not backup_dir.exists() and not backup_dir.parent.exists()


def test_push_is_idempotent_and_refuses_different_content(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1, b"a")
    first = push(source, archive_env)
    assert first.local == "archived" and first.s3 is None
    again = push(source, archive_env)
    assert again.local == "already archived" and again.md5 == first.md5

    other = make_segment(tmp_path / "other" / "pg_wal", SEG1, b"b")
    result = call_cli("wal-push", str(other))
    assert result.returncode == 1
    assert "already archived with different content" in result.stderr
    assert "refusing to overwrite" in result.stderr
    assert md5(archive_env.archive_dir / SEG1) == md5(source)  # untouched


def test_push_repairs_a_missing_sidecar_of_an_identical_segment(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1)
    push(source, archive_env)
    sidecar = archive_env.archive_dir / (SEG1 + ".md5")
    sidecar.unlink()
    assert push(source, archive_env).local == "already archived"
    assert sidecar.read_text() == f"{md5(source)}  {SEG1}\n"


def test_push_failures(archive_env: WalSettings, tmp_path: Path) -> None:
    missing = call_cli("wal-push", str(tmp_path / "pg_wal" / SEG1))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    not_wal = tmp_path / "postgresql.conf"
    not_wal.write_text("x")
    bad_name = call_cli("wal-push", str(not_wal))
    assert bad_name.returncode == 1 and "not a WAL file name" in bad_name.stderr
    bad_fetch = call_cli("wal-fetch", "../../etc/passwd", str(tmp_path / "x"))
    assert bad_fetch.returncode == EXIT_ABORT_RECOVERY and "not a WAL file name" in bad_fetch.stderr
    assert not archive_env.archive_dir.exists() or not any(archive_env.archive_dir.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_push_into_an_unwritable_archive_says_who_must_own_it(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    archive_env.archive_dir.mkdir(parents=True)
    archive_env.archive_dir.chmod(0o500)
    source = make_segment(tmp_path / "pg_wal", SEG1)
    try:
        result = call_cli("wal-push", str(source))
    finally:
        archive_env.archive_dir.chmod(0o700)
    assert result.returncode == 1 and "writable by the database server's OS user" in result.stderr


def test_fetch_missing_segment_exits_1_and_writes_nothing(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    dest = tmp_path / "RECOVERYXLOG"
    result = call_cli("wal-fetch", "00000002.history", str(dest))
    assert result.returncode == 1
    assert "00000002.history is not in the WAL archive" in result.stderr
    assert not dest.exists()
    with pytest.raises(WalMissing):
        fetch(SEG2, dest, archive_env)


def test_fetch_of_a_damaged_segment_stops_recovery_instead_of_ending_it(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1)
    push(source, archive_env)
    archived = archive_env.archive_dir / SEG1
    with archived.open("r+b") as handle:  # one flipped byte in the middle
        handle.seek(SEGMENT_SIZE // 2)
        handle.write(b"\x01")
    dest = tmp_path / "RECOVERYXLOG"
    result = call_cli("wal-fetch", SEG1, str(dest))
    assert result.returncode == EXIT_ABORT_RECOVERY > 125  # PostgreSQL aborts on > 125
    assert "fails its checksum" in result.stderr
    # One line: what happened, why it stops the recovery, what to do.
    (line,) = [ln for ln in result.stderr.splitlines() if "fails its checksum" in ln]
    assert f"so PostgreSQL stops the recovery at {SEG1} instead of ending it early" in line
    assert f"put an intact copy of {SEG1} (with its .md5) into the archive" in line
    assert not dest.exists() and not list(tmp_path.glob(".RECOVERYXLOG.*"))

    archived.with_name(SEG1 + ".md5").unlink()
    no_sidecar = call_cli("wal-fetch", SEG1, str(dest))
    assert no_sidecar.returncode == EXIT_ABORT_RECOVERY
    assert "checksum file" in no_sidecar.stderr and "missing" in no_sidecar.stderr


def test_truncated_segment_is_caught(archive_env: WalSettings, tmp_path: Path) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1)
    push(source, archive_env)
    os.truncate(archive_env.archive_dir / SEG1, SEGMENT_SIZE // 3)
    with pytest.raises(VerificationError, match="fails its checksum"):
        fetch(SEG1, tmp_path / "out", archive_env)


def test_wal_commands_start_without_boto3_or_textual(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    source = make_segment(tmp_path / "pg_wal", SEG1)
    probe = (
        "import sys; from preskool_dr.cli.main import main; "
        f"rc = main(['wal-push', {str(source)!r}]); "
        "heavy = [m for m in ('boto3', 'botocore', 'textual', 'psycopg') if m in sys.modules]; "
        "print(rc, heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "0 []", result.stderr


# ---------------------------------------------------------------- S3


def test_push_uploads_verified_and_fetch_falls_back_to_s3(
    s3: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = WalSettings.from_env()
    assert settings.bucket == s3
    source = make_segment(tmp_path / "pg_wal", SEG1, b"s")
    assert main(["wal-push", str(source)]) == 0
    client = boto3.client("s3")
    head = client.head_object(Bucket=s3, Key=f"wal/{SEG1}")
    assert head["Metadata"]["md5"] == md5(source)
    assert head["ContentLength"] == SEGMENT_SIZE
    assert push(source, settings).s3 == "already in S3"

    # A fresh DR host: nothing local, everything in the bucket.
    (settings.archive_dir / SEG1).unlink()
    dest = tmp_path / "RECOVERYXLOG"
    assert main(["wal-fetch", SEG1, str(dest)]) == 0
    assert md5(dest) == md5(source)

    # A damaged local copy: the good S3 copy is used, and the operator is told.
    push(source, settings)
    with (settings.archive_dir / SEG1).open("r+b") as handle:
        handle.write(b"damaged")
    dest.unlink()
    result = fetch(SEG1, dest, settings)
    assert result.source == "s3" and "fails its checksum" in (result.warning or "")
    assert md5(dest) == md5(source)
    assert main(["wal-fetch", SEG2, str(tmp_path / "nothing")]) == 1
    out, err = capfd.readouterr()
    assert "s3://" in err and AWS_SECRET not in out + err


def test_s3_refuses_different_content_and_rejects_a_damaged_object(s3: str, tmp_path: Path) -> None:
    settings = WalSettings.from_env()
    client = boto3.client("s3")
    other = make_segment(tmp_path / "other", SEG1, b"o")
    client.put_object(Bucket=s3, Key=f"wal/{SEG1}", Body=other.read_bytes())  # no metadata
    source = make_segment(tmp_path / "pg_wal", SEG1, b"s")
    with pytest.raises(DrError, match="already exists with different content"):
        push(source, settings)
    assert md5(settings.archive_dir / SEG1) == md5(source)  # local archived before S3

    # Same content uploaded by another tool (no md5 metadata): compared byte for byte.
    client.put_object(Bucket=s3, Key=f"wal/{SEG1}", Body=source.read_bytes())
    assert push(source, settings).s3 == "already in S3"

    # An object whose bytes no longer match the MD5 it was stored with.
    bad = make_segment(tmp_path / "bad", SEG2, b"b")
    client.put_object(
        Bucket=s3, Key=f"wal/{SEG2}", Body=bad.read_bytes(), Metadata={"md5": "0" * 32}
    )
    dest = tmp_path / "RECOVERYXLOG"
    with pytest.raises(VerificationError, match="fails its checksum"):
        fetch(SEG2, dest, settings)
    assert not dest.exists()


def test_missing_bucket_fails_push_with_the_bucket_named(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_BUCKET", s3 + "-gone")
    source = make_segment(tmp_path / "pg_wal", SEG1)
    result = call_cli("wal-push", str(source))
    assert result.returncode == 1
    assert f"bucket '{s3}-gone' does not exist" in result.stderr
    assert AWS_SECRET not in result.stderr + result.stdout
    # A restore_command that cannot reach its archive must stop recovery, not end it.
    fetch = call_cli("wal-fetch", SEG2, str(tmp_path / "RECOVERYXLOG"))
    assert fetch.returncode == EXIT_ABORT_RECOVERY and "does not exist" in fetch.stderr


# ---------------------------------------------------------------- listing and health


def age(path: Path, hours: float) -> None:
    stamp = (datetime.now(UTC) - timedelta(hours=hours)).timestamp()
    os.utime(path, (stamp, stamp))


def test_health_reports_absent_fresh_late_stalled_and_gaps(
    archive_env: WalSettings, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    status, summary = archive_health(archive_env, now).verdict(1.0, now)
    assert status == "OK" and "not set up" in summary

    names = [Segment.at(1, n, SEGMENT_SIZE).name for n in range(254, 259)]  # crosses a log id
    for name in names:
        push(make_segment(tmp_path / "pg_wal", name, name[-1].encode()), archive_env)
    health = archive_health(archive_env, now)
    assert health.segments == 5 and health.missing == ()
    assert health.verdict(1.0, now)[0] == "OK"

    for name in names:
        age(archive_env.archive_dir / name, 1.5)
    assert archive_health(archive_env, now).verdict(1.0, now)[0] == "WARNING"
    for name in names:
        age(archive_env.archive_dir / name, 3)
    status, summary = archive_health(archive_env, now).verdict(1.0, now)
    assert status == "CRITICAL" and "stalled" in summary

    (archive_env.archive_dir / names[2]).unlink()
    status, summary = archive_health(archive_env, now).verdict(1.0, now)
    assert status == "CRITICAL" and f"first {names[2]}" in summary
    # Counted from a base backup that starts after the gap: no gap that matters.
    since = Segment.parse(names[3])
    assert archive_health(archive_env, now, since).missing == ()
    # A base backup whose first segment is gone is a gap, too.
    assert archive_health(archive_env, now, Segment.parse(names[2])).missing == (names[2],)


def test_listing_merges_local_and_s3(s3: str, tmp_path: Path) -> None:
    settings = WalSettings.from_env()
    push(make_segment(tmp_path / "pg_wal", SEG1), settings)
    push(make_segment(tmp_path / "pg_wal", SEG2), settings)
    (settings.archive_dir / SEG1).unlink()
    listed = list_archive(settings)
    assert (listed[SEG1].local, listed[SEG1].s3) == (False, True)
    assert (listed[SEG2].local, listed[SEG2].s3) == (True, True)
    assert segment_size(listed.values()) == SEGMENT_SIZE
    health = archive_health(settings, datetime.now(UTC))
    assert health.segments == 2 and health.not_in_s3 == 0
