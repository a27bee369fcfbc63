"""Resumable S3 downloads: into `<dest>.part`, then fsync and rename to `dest`.

An object larger than one PART_SIZE is fetched as byte ranges by DOWNLOAD_THREADS threads
(one connection rarely fills the link to S3). The `.part` is nevertheless always a
contiguous prefix of the object: a part that arrives before the ones ahead of it waits in
memory (at most DOWNLOAD_THREADS + _AHEAD parts are in flight) and parts are appended in
order. So resuming is what it always was: go on from the `.part`'s size. A small object is
one GET (`Range: bytes=N-` when a `.part` is resumed). A range broken half way is asked for
again from where it broke (RESUME_ATTEMPTS times); a server that ignores Range gets the
whole object fetched again from byte 0.

With a StreamCheck (streamcheck.py) every byte appended, and the prefix of a resumed
`.part` read once first, is also hashed and gzip-tested in the same pass: restore step 4
then does not read the file again.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import botocore.exceptions

from preskool_dr.core.base.errors import Cancelled, DrError
from preskool_dr.core.base.events import EventSink, ProgressMeter, ignore_events
from preskool_dr.core.base.files import PRIVATE_FILE_MODE, fsync_dir
from preskool_dr.core.base.paths import open_private_file
from preskool_dr.core.base.procs import redact
from preskool_dr.core.storage.checksum import CHUNK, FileIdentity
from preskool_dr.core.storage.s3archive import archived_error
from preskool_dr.core.storage.s3client import S3Client, S3Object
from preskool_dr.core.storage.streamcheck import StreamCheck

RESUME_ATTEMPTS = 5  # a range broken half way goes on from where it broke this often per call
PART_SIZE = 8 * CHUNK  # one ranged GET; an object no larger is fetched with one plain GET
DOWNLOAD_THREADS = 4  # ranged GETs at once
_AHEAD = 2  # parts fetched beyond the threads' own while an earlier part is still coming


class _Interrupted(DrError):
    """A response body stopped half way: `got` bytes of it arrived (resumable)."""

    def __init__(self, message: str, got: int) -> None:
        super().__init__(message)
        self.got = got


class _RangeIgnored(Exception):
    """A ranged GET was answered with the whole object."""


class _Stopped(Exception):
    """Another part failed or the download was cancelled: this part gives up."""


@dataclass
class _Transfer:
    """One download in progress: the object, the open `.part` and what it holds."""

    store: S3Client
    name: str
    part: Path
    size: int
    handle: BinaryIO
    meter: ProgressMeter
    cancel: threading.Event | None
    check: StreamCheck | None
    written: int = 0  # the `.part`'s size: always a prefix of the object
    stop: threading.Event = field(default_factory=threading.Event)

    def append(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.written += len(chunk)
        if self.check is not None:
            self.check.feed(chunk)

    def rewind(self) -> None:
        """Start the file (and its check) again from byte 0."""
        self.handle.seek(0)
        self.handle.truncate()
        self.written = 0
        self.meter.restart()
        if self.check is not None:
            self.check.reset()

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise self.cancelled()
        if self.stop.is_set():
            raise _Stopped

    def cancelled(self) -> Cancelled:
        return Cancelled(
            f"download of {self.store.url(self.name)} cancelled at {self.written} of "
            f"{self.size} bytes; run it again to resume from {self.part.name}"
        )

    def changed(self, size_now: int | None = None) -> DrError:
        """The object is not the size it had when it was looked up: another object."""
        now = "sends more bytes than" if size_now is None else f"is {size_now} bytes, not"
        return DrError(
            f"{self.store.url(self.name)} changed in S3 while it downloaded (it {now} the "
            f"{self.size} bytes it had when it was looked up): nothing of it is used; run "
            "the command again, and check who writes to the bucket"
        )

    def interrupted(self, exc: Exception, got: int) -> _Interrupted:
        """A body that broke after `got` of its bytes arrived."""
        return _Interrupted(
            f"download of {self.store.url(self.name)} interrupted at {self.written} of "
            f"{self.size} bytes ({redact(str(exc))}); run the command again to resume from "
            f"{self.part.name}",
            got,
        )


def download(
    store: S3Client,
    name: str,
    dest: Path,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "download",
    cancel: threading.Event | None = None,
    check: StreamCheck | None = None,
    known: S3Object | None = None,
) -> Path:
    """Download to `dest.part` (resuming an existing .part), then rename to `dest`.
    ArchivedError when the object needs a Glacier restore first. With `check`, the final
    file's bytes are fed to it in order and `check.identity` is set to the renamed file.
    `known`: the object as the caller's lookup just found it (its HEAD), not asked again.

    A resumed .part is not trusted by itself: callers verify the result (MD5 + gzip)."""
    obj = known or store.head(name)
    if obj.needs_restore:
        raise archived_error(store, name, obj)
    part = dest.with_name(dest.name + ".part")
    try:
        # what is resumed, chmodded, truncated and renamed into place as root must be our
        # own file: not a symlink, a hard link to another file, a pipe or another user's
        fd = open_private_file(part, os.O_RDWR | os.O_CREAT, "download's .part")
        if os.fstat(fd).st_mode & 0o022:
            os.close(fd)
            raise DrError(
                f"the download's .part {part} can be written by group or others: someone "
                f"may have written into it; nothing was downloaded - remove it (rm {part}), "
                f"check who can write to {part.parent}, and retry"
            )
        os.fchmod(fd, PRIVATE_FILE_MODE)  # also a .part left by an older version (0644)
        with os.fdopen(fd, "r+b") as handle:
            offset = os.fstat(fd).st_size
            if offset > obj.size:
                # Left over from a different (larger) object of the same name: start again.
                handle.truncate(0)
                offset = 0
            meter = ProgressMeter(on_event, step_id, "download", obj.size, done=offset)
            transfer = _Transfer(store, name, part, obj.size, handle, meter, cancel, check)
            try:
                _take_prefix(transfer, offset)
                if obj.size - offset > PART_SIZE:
                    _fetch_parts(transfer)
                elif offset < obj.size:
                    _fetch_rest(transfer)
            except Cancelled:
                raise  # the .part stays, even empty: the operator resumes from it
            except BaseException:
                handle.flush()
                if os.fstat(fd).st_size == 0:
                    part.unlink(missing_ok=True)  # S3 sent nothing: nothing to resume
                raise
            finally:
                handle.flush()
                os.fsync(fd)
            meter.finish()
            if transfer.written != obj.size:
                raise DrError(
                    f"download of {store.url(name)} stopped at {transfer.written} of "
                    f"{obj.size} bytes; run the command again to resume"
                )
            part.replace(dest)
            fsync_dir(dest.parent)
            if check is not None:
                check.finish(FileIdentity.of(os.fstat(fd)))
    except OSError as exc:
        raise DrError(
            f"cannot write {part}: {exc.strerror or exc}; check free space and permissions "
            f"in {dest.parent}"
        ) from None
    return dest


def _take_prefix(transfer: _Transfer, offset: int) -> None:
    """What the `.part` already holds: read once into the check (when there is one), and
    the file position put at its end."""
    handle, check = transfer.handle, transfer.check
    if check is None:
        transfer.written = offset
    while check is not None and transfer.written < offset:
        transfer.check_cancel()
        chunk = handle.read(min(CHUNK, offset - transfer.written))
        if not chunk:
            break  # shorter than it was a moment ago: go on from what was hashed
        check.feed(chunk)
        transfer.written += len(chunk)
    handle.seek(transfer.written)


def _fetch_rest(transfer: _Transfer) -> None:
    """One GET for everything from the `.part`'s end (`Range: bytes=N-` unless N is 0),
    written as it arrives, going on after a break up to RESUME_ATTEMPTS times."""
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        start = transfer.written
        try:
            _get(transfer, start, None, transfer.append)
            return
        except _RangeIgnored:
            # The server ignored Range and sends the whole object: rewrite from the start.
            transfer.rewind()
            _get(transfer, 0, None, transfer.append)
            return
        except _Interrupted:
            if attempt == RESUME_ATTEMPTS:
                raise
        finally:
            transfer.handle.flush()


def _fetch_parts(transfer: _Transfer) -> None:
    """The rest of the object as PART_SIZE ranges, fetched in parallel, appended in order.
    Anything failing stops the other threads; the `.part` keeps the prefix appended so far."""
    ranges = collections.deque(
        (first, min(first + PART_SIZE, transfer.size) - 1)
        for first in range(transfer.written, transfer.size, PART_SIZE)
    )
    pending: collections.deque[Future[list[bytes]]] = collections.deque()
    with ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="s3-range") as pool:

        def submit() -> None:
            if ranges:
                pending.append(pool.submit(_get_range, transfer, *ranges.popleft()))

        try:
            for _ in range(DOWNLOAD_THREADS + _AHEAD):
                submit()
            while pending:
                chunks = pending.popleft().result()
                submit()  # before appending: the next range is on its way meanwhile
                transfer.check_cancel()
                for chunk in chunks:
                    transfer.append(chunk)
        except _RangeIgnored:
            transfer.stop.set()
            _drain(pending)
            transfer.stop.clear()
            transfer.rewind()
            _fetch_rest(transfer)
        except BaseException:
            transfer.stop.set()
            _drain(pending)
            raise


def _drain(pending: collections.deque[Future[list[bytes]]]) -> None:
    """Cancel the ranges not started and wait for the running ones to give up."""
    for future in pending:
        future.cancel()
    for future in pending:
        if not future.cancelled():
            future.exception()
    pending.clear()


def _get_range(transfer: _Transfer, first: int, last: int) -> list[bytes]:
    """Bytes `first`..`last` (inclusive) in memory, asking again for the rest of the range
    when the connection breaks half way (RESUME_ATTEMPTS times)."""
    chunks: list[bytes] = []
    got = 0
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            _get(transfer, first + got, last, chunks.append)
            return chunks
        except _Interrupted as exc:
            got += exc.got
            if attempt == RESUME_ATTEMPTS:
                raise
    return chunks  # not reached


def _get(transfer: _Transfer, first: int, last: int | None, sink: Callable[[bytes], None]) -> None:
    """One GET of bytes `first`..`last` (None: to the end; no Range at all for the whole
    object) into `sink`. _RangeIgnored when a Range was asked for and the whole object
    comes; _Interrupted when the body breaks after some bytes arrived."""
    store = transfer.store
    args: dict[str, Any] = {"Bucket": store.bucket, "Key": store.prefix + transfer.name}
    if first or last is not None:
        args["Range"] = f"bytes={first}-{'' if last is None else last}"
    # no more than was asked for, or than the object had when it was looked up: a bigger
    # object is another one, and its bytes would pass the space check (and memory) unbounded
    wanted = (transfer.size - 1 if last is None else last) - first + 1
    got = 0
    try:
        response = store.client.get_object(**args)
        body = response["Body"]
        try:
            if "Range" in args and not response.get("ContentRange"):
                raise _RangeIgnored
            total = str(response.get("ContentRange", "")).rpartition("/")[2]
            if total.isdigit() and int(total) != transfer.size:  # "bytes 0-99/<size now>"
                raise transfer.changed(int(total))
            for chunk in body.iter_chunks(CHUNK):
                transfer.check_cancel()
                if got + len(chunk) > wanted:
                    raise transfer.changed()
                sink(chunk)
                got += len(chunk)
                transfer.meter.add(len(chunk))
        finally:
            body.close()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if isinstance(exc, botocore.exceptions.BotoCoreError) and got:
            raise transfer.interrupted(exc, got) from None
        raise store.error(exc, transfer.name, "download") from None
