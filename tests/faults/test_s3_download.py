"""Parallel ranged downloads (core/storage/s3download.py) through the fault proxy.

Guarantee: an object larger than one part comes as parallel byte ranges, yet the `.part`
is always a prefix of the object (parts are appended in order, whatever order they arrive
in), so a download broken, cancelled or killed anywhere resumes from the `.part`'s size.
The MD5 and the gzip check are computed from the bytes as they are appended, plus the
prefix a resumed `.part` already held (read once): they are the final file's.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from preskool_dr.core.base.errors import ArchivedError, Cancelled, DrError
from preskool_dr.core.base.events import Event, Progress
from preskool_dr.core.storage import s3download
from preskool_dr.core.storage.checksum import FileIdentity, verify_file
from preskool_dr.core.storage.s3store import S3Store
from preskool_dr.core.storage.streamcheck import StreamCheck
from tests.support.s3proxy import Fault, FaultProxy

NAME = "preskool-backup-20260220_020000.sql.gz"
PART = 256 * 1024  # small parts: a 3 MiB object is a dozen ranges


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3download, "PART_SIZE", PART)


def gz_bytes(size: int = 3 * 1024 * 1024 + 12345) -> bytes:
    return gzip.compress(random.Random(11).randbytes(size), compresslevel=1)


def uploaded(tmp_path: Path, data: bytes, storage_class: str = "STANDARD") -> S3Store:
    store = S3Store(os.environ["S3_BUCKET"])
    source = tmp_path / NAME
    source.write_bytes(data)
    store.upload(source, storage_class=storage_class)
    source.unlink()
    return store


def target(tmp_path: Path) -> Path:
    folder = tmp_path / "dl"
    folder.mkdir()
    return folder / NAME


def starts(proxy: FaultProxy) -> list[int]:
    """Where each GET of the backup started (0 for one without Range), in answer order."""
    return [
        int(seen.range.removeprefix("bytes=").split("-")[0]) if seen.range else 0
        for seen in proxy.gets(NAME)
    ]


def checked_download(store: S3Store, dest: Path, **kwargs: object) -> StreamCheck:
    check = StreamCheck(check_gzip=True)
    try:
        store.download(NAME, dest, check=check, **kwargs)  # type: ignore[arg-type]
    finally:
        check.close()
    return check


def test_large_object_comes_as_parallel_ranges(bucket_proxy: FaultProxy, tmp_path: Path) -> None:
    data = gz_bytes()
    store = uploaded(tmp_path, data)
    dest = target(tmp_path)
    events: list[Event] = []
    check = checked_download(store, dest, on_event=events.append)
    assert dest.read_bytes() == data
    assert not dest.with_name(NAME + ".part").exists()
    assert dest.stat().st_mode & 0o777 == 0o600
    assert sorted(starts(bucket_proxy)) == list(range(0, len(data), PART))
    assert all(seen.range for seen in bucket_proxy.gets(NAME))
    result = check.result(dest)
    assert result.actual_md5 == hashlib.md5(data).hexdigest() and result.gzip_ok
    assert result.size == len(data)
    assert result.identity == FileIdentity.of(dest.stat())
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == len(data)


def test_parts_arriving_out_of_order_are_appended_in_order(
    bucket_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = gz_bytes()
    store = uploaded(tmp_path, data)
    # the first GET the proxy sees (one of the first ranges the threads ask for, whichever
    # thread got there first) answers after later ranges
    bucket_proxy.add(Fault("delay", NAME, seconds=1.5))
    dest = target(tmp_path)
    check = checked_download(store, dest)
    answered = starts(bucket_proxy)
    assert answered != sorted(answered)  # a later range was complete before an earlier one
    assert dest.read_bytes() == data
    assert check.result(dest).actual_md5 == hashlib.md5(data).hexdigest()


def test_a_range_cut_half_way_is_asked_for_again_from_where_it_broke(
    bucket_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = gz_bytes()
    store = uploaded(tmp_path, data)
    bucket_proxy.add(Fault("cut", NAME, after_bytes=100_000))
    dest = target(tmp_path)
    check = checked_download(store, dest)
    assert dest.read_bytes() == data
    result = check.result(dest)
    assert result.actual_md5 == hashlib.md5(data).hexdigest() and result.gzip_ok
    first = starts(bucket_proxy)
    # the cut range was asked for again from inside it (not a multiple of the part size)
    assert any(start % PART for start in first), first
    assert len(first) == len(range(0, len(data), PART)) + 1


@pytest.mark.parametrize("damaged", [False, True])
def test_a_part_left_from_before_is_hashed_and_resumed(
    bucket_proxy: FaultProxy, tmp_path: Path, damaged: bool
) -> None:
    """The prefix an earlier run left is read once into the MD5 (it is part of the final
    file); only the rest is fetched, in ranges from the `.part`'s end. A damaged prefix
    gives the MD5 of the damaged file, which step 4 then refuses."""
    data = gz_bytes()
    store = uploaded(tmp_path, data)
    dest = target(tmp_path)
    kept = 1024 * 1024 + 777
    prefix = bytearray(data[:kept])
    if damaged:
        prefix[1000] ^= 0xFF
    dest.with_name(NAME + ".part").write_bytes(bytes(prefix))
    events: list[Event] = []
    check = checked_download(store, dest, on_event=events.append)
    final = dest.read_bytes()
    assert final == bytes(prefix) + data[kept:]
    assert min(starts(bucket_proxy)) == kept
    assert next(e for e in events if isinstance(e, Progress)).done == kept
    result = check.result(dest)
    assert result.actual_md5 == hashlib.md5(final).hexdigest()
    assert (result.actual_md5 == hashlib.md5(data).hexdigest()) is not damaged


def test_cancel_keeps_a_prefix_and_the_next_run_resumes_from_it(
    bucket_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = gz_bytes()
    store = uploaded(tmp_path, data)
    dest = target(tmp_path)
    part = dest.with_name(NAME + ".part")
    cancel = threading.Event()

    class CancelAfterTwoParts(StreamCheck):
        def feed(self, chunk: bytes) -> None:
            super().feed(chunk)
            if self.size >= 2 * PART:
                cancel.set()

    check = CancelAfterTwoParts()
    with pytest.raises(Cancelled, match=f"resume from {part.name}"):
        store.download(NAME, dest, cancel=cancel, check=check)
    check.close()
    assert not dest.exists()
    kept = part.read_bytes()
    assert 2 * PART <= len(kept) < len(data) and data.startswith(kept)
    bucket_proxy.seen.clear()
    again = checked_download(store, dest)
    assert dest.read_bytes() == data
    assert min(starts(bucket_proxy)) == len(kept)
    assert again.result(dest).actual_md5 == hashlib.md5(data).hexdigest()


def test_archived_large_object_is_refused_before_anything_is_written(
    bucket_proxy: FaultProxy, tmp_path: Path
) -> None:
    store = uploaded(tmp_path, gz_bytes(), storage_class="GLACIER")
    dest = target(tmp_path)
    with pytest.raises(ArchivedError, match="--request-restore"):
        store.download(NAME, dest)
    assert list(dest.parent.iterdir()) == []
    assert bucket_proxy.gets(NAME) == []


def test_a_server_ignoring_range_gets_the_whole_object_once_more(
    bucket_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = gz_bytes()
    store = uploaded(tmp_path, data)
    dest = target(tmp_path)
    dest.with_name(NAME + ".part").write_bytes(data[:5000])
    bucket_proxy.add(Fault("norange", NAME, times=-1))
    check = checked_download(store, dest)
    assert dest.read_bytes() == data
    assert check.result(dest).actual_md5 == hashlib.md5(data).hexdigest()


def _dump_text() -> bytes:
    body = b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(200_000))
    return (
        b"--\n-- PostgreSQL database dump\n--\n\n" + body + b"\n--\n"
        b"-- PostgreSQL database dump complete\n--\n\n"
    )


@pytest.mark.parametrize(
    ("content", "fine"),
    [
        (gzip.compress(_dump_text(), compresslevel=1), True),
        (gzip.compress(b"id,name\n" * 300_000), False),  # valid gzip, not pg_dump output
        (gzip.compress(_dump_text(), compresslevel=1)[:-9], False),  # truncated
        (gzip.compress(_dump_text(), compresslevel=1) + b"garbage", False),
    ],
    ids=["dump", "not-a-dump", "truncated", "trailing-garbage"],
)
def test_the_checks_made_while_downloading_are_verify_files(
    bucket_proxy: FaultProxy, tmp_path: Path, content: bytes, fine: bool
) -> None:
    """The same findings as verify_file reading the downloaded file (step 4's own read)."""
    store = uploaded(tmp_path, content)
    dest = target(tmp_path)
    check = StreamCheck(check_gzip=True, check_dump=True)
    try:
        store.download(NAME, dest, check=check)
    finally:
        check.close()
    assert len(bucket_proxy.gets(NAME)) > 1 or len(content) <= PART
    streamed = check.result(dest)
    read = verify_file(dest, None, check_dump=True)
    fields = ("actual_md5", "size", "gzip_ok", "gzip_error", "dump_checked", "dump_error")
    assert [getattr(streamed, f) for f in fields] == [getattr(read, f) for f in fields]
    assert streamed.identity == read.identity
    assert (streamed.gzip_ok and streamed.dump_error is None) is fine


@pytest.mark.parametrize("size", [100_000, 3 * 1024 * 1024], ids=["one-get", "ranges"])
def test_an_object_that_grew_after_its_lookup_is_refused(
    bucket_proxy: FaultProxy, tmp_path: Path, size: int
) -> None:
    """The download takes the size from the lookup step 3 made (`known`); the object is
    replaced by a bigger one before the GETs: the download stops with the reason, instead of
    writing past the size the space check allowed or keeping a prefix of the new object."""
    store = uploaded(tmp_path, gz_bytes(size))
    looked_up = store.head(NAME)
    uploaded(tmp_path, gz_bytes(size * 2))
    dest = target(tmp_path)

    with pytest.raises(DrError) as refused:
        store.download(NAME, dest, known=looked_up)

    assert "changed in S3 while it downloaded" in str(refused.value)
    assert not dest.exists()
    part = dest.with_name(NAME + ".part")
    assert not part.exists() or part.stat().st_size <= looked_up.size
