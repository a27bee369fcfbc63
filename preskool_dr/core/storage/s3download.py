"""Resumable S3 downloads: into `<dest>.part` with HTTP Range, going on after a broken
connection, then fsync and rename to `dest`."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import botocore.exceptions

from preskool_dr.core.base.errors import Cancelled, DrError
from preskool_dr.core.base.events import EventSink, ProgressMeter, ignore_events
from preskool_dr.core.base.files import PRIVATE_FILE_MODE, fsync_dir
from preskool_dr.core.base.procs import redact
from preskool_dr.core.storage.checksum import CHUNK
from preskool_dr.core.storage.s3archive import archived_error
from preskool_dr.core.storage.s3client import S3Client

RESUME_ATTEMPTS = 5  # a download broken half way goes on from its .part this often per call


class _Interrupted(DrError):
    """A download's body stopped half way; what arrived is in the .part (resumable)."""


def download(
    store: S3Client,
    name: str,
    dest: Path,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "download",
    cancel: threading.Event | None = None,
) -> Path:
    """Download to `dest.part` (resuming an existing .part with HTTP Range), then rename to
    `dest`. ArchivedError when the object needs a Glacier restore first.

    A resumed .part is not trusted by itself: callers verify the result (MD5 + gzip)."""
    obj = store.head(name)
    if obj.needs_restore:
        raise archived_error(store, name, obj)
    part = dest.with_name(dest.name + ".part")
    try:
        offset = part.stat().st_size if part.exists() else 0
        if offset > obj.size:
            # Left over from a different (larger) object of the same name: start again.
            part.unlink()
            offset = 0
        meter = ProgressMeter(on_event, step_id, "download", obj.size, done=offset)
        if offset < obj.size:
            _fetch_resuming(store, name, part, offset, obj.size, meter, cancel)
        else:  # nothing (more) to fetch: an empty object, or a .part already complete
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE))
            part.chmod(PRIVATE_FILE_MODE)
        meter.finish()
        got = part.stat().st_size
        if got != obj.size:
            raise DrError(
                f"download of {store.url(name)} stopped at {got} of {obj.size} bytes; "
                "run the command again to resume"
            )
        with part.open("rb+") as handle:
            os.fsync(handle.fileno())
        part.replace(dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        raise DrError(
            f"cannot write {part}: {exc.strerror or exc}; check free space and permissions "
            f"in {dest.parent}"
        ) from None
    return dest


def _fetch_resuming(
    store: S3Client,
    name: str,
    part: Path,
    offset: int,
    size: int,
    meter: ProgressMeter,
    cancel: threading.Event | None,
) -> None:
    """`_fetch_into`, going on with a Range request from what reached the .part when the
    connection breaks half way (reset, cut short), up to RESUME_ATTEMPTS times."""
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            _fetch_into(store, name, part, offset, size, meter, cancel)
            return
        except _Interrupted:
            if attempt == RESUME_ATTEMPTS:
                raise
            offset = part.stat().st_size


def _fetch_into(
    store: S3Client,
    name: str,
    part: Path,
    offset: int,
    size: int,
    meter: ProgressMeter,
    cancel: threading.Event | None,
) -> None:
    args: dict[str, Any] = {"Bucket": store.bucket, "Key": store.prefix + name}
    if offset:
        args["Range"] = f"bytes={offset}-"
    try:
        response = store.client.get_object(**args)
        body = response["Body"]
        if offset and not response.get("ContentRange"):
            # The server ignored Range and sends the whole object: rewrite from the start.
            offset = 0
            meter.restart()
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if offset else os.O_TRUNC)
        fd = os.open(part, flags, PRIVATE_FILE_MODE)
        os.fchmod(fd, PRIVATE_FILE_MODE)  # also a .part left by an older version (0644)
        with os.fdopen(fd, "ab" if offset else "wb") as handle:
            try:
                for chunk in body.iter_chunks(CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(
                            f"download of {store.url(name)} cancelled at {meter.done} of "
                            f"{size} bytes; run it again to resume from {part.name}"
                        )
                    handle.write(chunk)
                    meter.add(len(chunk))
            finally:
                handle.flush()
                os.fsync(handle.fileno())
                body.close()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        error = store.error(exc, name, "download")
        if isinstance(exc, botocore.exceptions.BotoCoreError) and meter.done > offset:
            error = _Interrupted(
                f"download of {store.url(name)} interrupted at {meter.done} of {size} bytes "
                f"({redact(str(exc))}); run the command again to resume from {part.name}"
            )
        raise error from None
