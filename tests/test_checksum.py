"""Sidecars in md5sum format and the one-pass MD5 + gzip check, on real files, cross-checked
with the real `md5sum` and `gzip` programs."""

from __future__ import annotations

import gzip
import hashlib
import random
import subprocess
import threading
from pathlib import Path

import pytest

from preskool_dr.core.base.errors import Cancelled, NotFoundError, VerificationError
from preskool_dr.core.base.events import Event, Progress
from preskool_dr.core.storage.checksum import (
    Sidecar,
    read_sidecar,
    sidecar_path,
    verify_backup,
    verify_file,
    verify_with_sidecar,
    write_sidecar,
)
from tests.support.backups import sql_text

NAME = "preskool-backup-20260220_020000.sql.gz"


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def gzip_file(path: Path, data: bytes, *, with_sidecar: bool = True) -> Path:
    """A gzip backup written with the gzip module, plus its sidecar (by `md5sum` semantics)."""
    path.write_bytes(gzip.compress(data))
    if with_sidecar:
        write_sidecar(path, md5_of(path))
    return path


def gunzip_ok(path: Path) -> bool:
    return subprocess.run(["gzip", "-t", str(path)], capture_output=True).returncode == 0


def test_sidecar_is_md5sum_format_and_real_md5sum_check_passes(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text())
    side = sidecar_path(backup)
    assert side.name == NAME + ".md5"
    assert side.read_text() == f"{md5_of(backup)}  {NAME}\n"
    check = subprocess.run(
        ["md5sum", "--check", side.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert f"{NAME}: OK" in check.stdout
    # The sidecar we write is the one md5sum itself writes.
    ours = subprocess.run(["md5sum", NAME], cwd=tmp_path, capture_output=True, text=True).stdout
    assert side.read_text() == ours


def test_read_sidecar_accepts_md5sum_variants(tmp_path: Path) -> None:
    digest = "A3F5C8D2E1B4A7F9C2E5B8D1A4F7C0E3"
    side = tmp_path / "x.md5"
    for text in (f"{digest}  {NAME}\n", f"{digest} *{NAME}\r\n", f"MD5 ({NAME}) = {digest}\n"):
        side.write_text(text)
        assert read_sidecar(side, NAME) == Sidecar(digest.lower(), NAME)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a checksum\n",
        "a3f5c8d2  " + NAME + "\n",
        "zzzzc8d2e1b4a7f9c2e5b8d1a4f7c0e3  " + NAME + "\n",
        f"{'a' * 32}  {NAME}\n{'b' * 32}  {NAME}\n",
        f"{'a' * 32}{NAME}\n",
    ],
)
def test_malformed_sidecar_is_a_verification_error(tmp_path: Path, text: str) -> None:
    side = tmp_path / (NAME + ".md5")
    side.write_text(text)
    with pytest.raises(VerificationError, match=r"must hold exactly one|malformed"):
        read_sidecar(side, NAME)


def test_binary_garbage_sidecar_is_a_verification_error(tmp_path: Path) -> None:
    side = tmp_path / (NAME + ".md5")
    side.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(VerificationError, match="not text"):
        read_sidecar(side, NAME)


def test_sidecar_for_another_file_is_rejected(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text())
    sidecar_path(backup).write_text(f"{md5_of(backup)}  preskool-backup-20250101_000000.sql.gz\n")
    with pytest.raises(VerificationError, match="another backup"):
        read_sidecar(sidecar_path(backup), NAME)
    result = verify_with_sidecar(backup)
    assert not result.ok and result.expected_md5 is None
    assert "another backup" in (result.sidecar_error or "")
    assert result.gzip_ok  # the gzip check still ran in the same read


def test_write_sidecar_refuses_a_non_digest(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_sidecar(tmp_path / NAME, "not-md5")


def test_good_backup_verifies(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text())
    result = verify_with_sidecar(backup, check_dump=True)
    assert result.ok and result.md5_ok and result.gzip_ok and result.dump_ok
    assert result.dump_checked and "Content is complete pg_dump output" in result.describe()
    assert result.size == backup.stat().st_size
    assert result.actual_md5 == md5_of(backup) == result.expected_md5
    assert result.describe().startswith("OK ")
    assert md5_of(backup) in result.describe()


def test_bit_flip_with_matching_md5_is_caught_by_gzip(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text(20000), with_sidecar=False)
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x10
    backup.write_bytes(bytes(data))
    write_sidecar(backup, md5_of(backup))  # the sidecar agrees: only gzip can notice
    assert not gunzip_ok(backup)
    result = verify_with_sidecar(backup)
    assert result.md5_ok
    assert not result.gzip_ok and not result.ok
    assert "corrupt gzip data" in (result.gzip_error or "")
    assert "Gzip integrity check failed" in result.describe()


def test_truncated_backup_is_reported_as_truncated(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text(20000), with_sidecar=False)
    backup.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    write_sidecar(backup, md5_of(backup))
    assert not gunzip_ok(backup)
    result = verify_with_sidecar(backup)
    assert result.md5_ok and not result.gzip_ok
    assert "truncated" in (result.gzip_error or "")


def test_truncated_trailer_is_caught(tmp_path: Path) -> None:
    # Only the last 4 bytes (ISIZE) missing: the deflate data is complete.
    backup = gzip_file(tmp_path / NAME, sql_text(), with_sidecar=False)
    backup.write_bytes(backup.read_bytes()[:-4])
    assert not verify_file(backup, None).gzip_ok


def test_md5_mismatch_names_both_digests(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text())
    wrong = "0" * 32
    write_sidecar(backup, wrong)
    result = verify_with_sidecar(backup)
    assert not result.md5_ok and result.gzip_ok and not result.ok
    text = result.describe()
    assert text.startswith("BAD ")
    assert wrong in text and md5_of(backup) in text


def test_missing_sidecar_fails_but_still_checks_gzip(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text(), with_sidecar=False)
    with pytest.raises(VerificationError, match="missing"):
        read_sidecar(sidecar_path(backup))
    result = verify_with_sidecar(backup)
    assert not result.ok and result.gzip_ok
    assert result.expected_md5 is None
    assert "missing" in result.describe()


def test_zero_byte_file_is_bad_gzip(tmp_path: Path) -> None:
    backup = tmp_path / NAME
    backup.write_bytes(b"")
    write_sidecar(backup, md5_of(backup))
    result = verify_with_sidecar(backup)
    assert result.md5_ok and not result.gzip_ok
    assert "empty" in (result.gzip_error or "")


def test_plain_sql_is_not_gzip(tmp_path: Path) -> None:
    backup = tmp_path / NAME
    backup.write_bytes(sql_text())
    result = verify_file(backup, None)
    assert not result.gzip_ok and "not gzip data" in (result.gzip_error or "")


def test_multi_member_gzip_is_accepted_like_gunzip(tmp_path: Path) -> None:
    backup = tmp_path / NAME
    backup.write_bytes(gzip.compress(sql_text(seed=1)) + gzip.compress(sql_text(seed=2)))
    assert gunzip_ok(backup)
    assert verify_file(backup, None).gzip_ok


def test_trailing_garbage_is_rejected(tmp_path: Path) -> None:
    backup = tmp_path / NAME
    good = gzip.compress(sql_text())
    for tail in (b"x", b"garbage after the end", b"\x1f"):
        backup.write_bytes(good + tail)
        result = verify_file(backup, None)
        assert not result.gzip_ok, tail
        assert "trailing garbage" in (result.gzip_error or ""), result.gzip_error
        assert f"at byte {len(good)}" in (result.gzip_error or "")


def test_large_highly_compressible_file_spans_many_chunks(tmp_path: Path) -> None:
    # 40 MiB of zeros compress to ~40 KiB: exercises the capped-output inflate loop, and a
    # random-data member exercises many 1 MiB input chunks.
    backup = tmp_path / NAME
    zeros = gzip.compress(bytes(40 * 1024 * 1024))
    backup.write_bytes(zeros + gzip.compress(random.randbytes(3 << 20)))
    assert gunzip_ok(backup)
    result = verify_file(backup, md5_of(backup))
    assert result.ok


def test_progress_events_cover_the_file(tmp_path: Path) -> None:
    backup = tmp_path / NAME
    backup.write_bytes(gzip.compress(random.randbytes(3 << 20)))
    events: list[Event] = []
    verify_file(backup, None, on_event=events.append, step_id="verify-step")
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0].done == 0
    assert progress[-1].done == progress[-1].total == backup.stat().st_size
    assert all(p.phase == "verify" and p.step_id == "verify-step" for p in progress)
    assert [p.done for p in progress] == sorted(p.done for p in progress)


def test_cancel_stops_verification(tmp_path: Path) -> None:
    backup = gzip_file(tmp_path / NAME, sql_text())
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        verify_file(backup, None, cancel=cancel)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        verify_file(tmp_path / NAME, None)


def test_directory_backup_checks_every_member(tmp_path: Path) -> None:
    folder = tmp_path / "preskool-base-20260220_020000"
    folder.mkdir()
    gzip_file(folder / "base.tar.gz", sql_text(seed=3))
    plain = folder / "backup_manifest"
    plain.write_bytes(b'{"PostgreSQL-Backup-Manifest-Version": 1}\n')
    write_sidecar(plain, md5_of(plain))
    results = verify_backup(folder)
    assert [r.path.name for r in results] == ["backup_manifest", "base.tar.gz"]
    assert all(r.ok for r in results)
    assert not results[0].gzip_checked and results[1].gzip_checked
    (folder / "base.tar.gz.md5").unlink()
    assert [r.ok for r in verify_backup(folder)] == [True, False]


def real_dump_shape(body: bytes, key: str = "k3yFromPgDump17") -> bytes:
    """The banners as pg_dump 15.14+/17.6+ writes them, with its `\\restrict` lines."""
    return (
        f"--\n-- PostgreSQL database dump\n--\n\n\\restrict {key}\n\n".encode()
        + body
        + f"\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict {key}\n\n".encode()
    )


def test_valid_gzip_of_something_else_is_not_a_backup(tmp_path: Path) -> None:
    for text in (b"", b"hello\n", b"SELECT 1;\n", b"-- PostgreSQL database dump\n" * 50):
        backup = gzip_file(tmp_path / NAME, text)
        assert gunzip_ok(backup)
        result = verify_backup(backup)[0]
        assert result.md5_ok and result.gzip_ok and result.dump_checked
        assert not result.dump_ok and not result.ok, text
        assert "not a pg_dump backup" in (result.dump_error or "")
        assert "Content check failed" in result.describe()


def test_dump_cut_short_at_a_line_and_compressed_again_is_caught(tmp_path: Path) -> None:
    whole = real_dump_shape(sql_text(20000))
    cut = whole[: whole.index(b"\n", len(whole) // 2) + 1]  # a clean line boundary
    backup = gzip_file(tmp_path / NAME, cut)  # gzip closed, sidecar matching
    assert gunzip_ok(backup)
    result = verify_with_sidecar(backup, check_dump=True)
    assert result.md5_ok and result.gzip_ok and not result.ok
    assert "cut short" in (result.dump_error or "")
    # Text after the closing banner is not what pg_dump wrote either.
    extra = gzip_file(tmp_path / NAME, whole + b"DROP TABLE students;\n")
    assert "cut short" in (verify_with_sidecar(extra, check_dump=True).dump_error or "")


def test_dump_banners_are_found_across_members_and_chunks(tmp_path: Path) -> None:
    # pg_dump 15.14+ closes with `\\unrestrict KEY`; the closing banner split over two gzip
    # members and the text spanning many 1 MiB input chunks must still be recognised.
    whole = real_dump_shape(random.randbytes(3 << 20).hex().encode())
    split = whole.rindex(b"dump complete") + 4
    backup = tmp_path / NAME
    backup.write_bytes(gzip.compress(whole[:split], 1) + gzip.compress(whole[split:]))
    assert gunzip_ok(backup)
    result = verify_file(backup, md5_of(backup), check_dump=True)
    assert result.ok and result.dump_checked, result.dump_error


def test_content_is_checked_only_when_asked_and_only_for_an_intact_gzip(tmp_path: Path) -> None:
    other = gzip_file(tmp_path / "other.gz", b"not a dump\n")
    unchecked = verify_with_sidecar(other)
    assert unchecked.ok and not unchecked.dump_checked  # e.g. a base backup member
    assert "Content" not in unchecked.describe()
    broken = gzip_file(tmp_path / NAME, sql_text(), with_sidecar=False)
    broken.write_bytes(broken.read_bytes()[:-100])
    result = verify_file(broken, None, check_dump=True)
    assert not result.gzip_ok and result.dump_error is None  # the gzip error says it all
    assert "Content" not in result.describe()
