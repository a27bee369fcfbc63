"""The S3 side of the catalog: list, upload, resumable download, Glacier restore requests.

S3Store is the one object callers use for a bucket + prefix. Its jobs live beside it:
the client, HEAD and the error lines in s3client.py, downloads (Range, resume) in
s3download.py, archived objects and restore requests in s3archive.py.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import botocore.exceptions
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig

from preskool_dr.core.base.errors import ArchivedError, DrError
from preskool_dr.core.base.events import EventSink, ProgressMeter, ignore_events
from preskool_dr.core.base.paths import name_problem
from preskool_dr.core.storage import s3archive, s3download
from preskool_dr.core.storage.checksum import CHUNK
from preskool_dr.core.storage.meta import META_MAX_BYTES
from preskool_dr.core.storage.s3client import (
    _MISSING_KEY_CODES,
    ARCHIVED_CLASSES,
    HEAD_THREADS,
    RESTORE_WAIT,
    ObjectLock,
    S3Client,
    S3Object,
    parse_restore_header,
)
from preskool_dr.core.storage.streamcheck import StreamCheck

__all__ = [
    "ARCHIVED_CLASSES",
    "HEAD_THREADS",
    "RESTORE_WAIT",
    "ObjectLock",
    "S3Object",
    "S3Store",
    "parse_restore_header",
    "parse_s3_url",
    "store_for_url",
]


class S3Store(S3Client):
    """One bucket + prefix. Errors become DrError (or ArchivedError/NotFoundError) with a
    one-line message naming the bucket/key and what to do next, never a traceback."""

    def folder(self, name: str) -> S3Store:
        """The store for the members of folder `name` (a base backup's files)."""
        return S3Store(self.bucket, f"{self.prefix}{name}/")

    # ------------------------------------------------------------ reading

    def list_objects(self, with_restore_state: bool = True) -> list[S3Object]:
        """Every object under the prefix (paginated); restore state from HEAD for archived ones."""
        objects: list[S3Object] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    objects.append(
                        S3Object(
                            key=item["Key"],
                            size=int(item["Size"]),
                            last_modified=item["LastModified"],
                            storage_class=item.get("StorageClass") or "STANDARD",
                        )
                    )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self.error(exc, None, "list") from None
        if not with_restore_state:
            return objects
        archived = [i for i, o in enumerate(objects) if o.storage_class in ARCHIVED_CLASSES]
        if archived:
            # The listing does not carry restore state; one HEAD per archived object does.
            with ThreadPoolExecutor(max_workers=HEAD_THREADS) as pool:
                heads = pool.map(lambda i: self.head(self.name_of(objects[i].key)), archived)
                for index, head in zip(archived, heads, strict=True):
                    objects[index] = replace(objects[index], restore_state=head.restore_state)
        return objects

    def get_bytes(self, name: str) -> bytes | None:
        """Small objects (sidecars, meta); None when missing. At most META_MAX_BYTES + 1
        bytes are read (a bigger object is not ours: whoever parses it refuses it by its
        size), so a bucket cannot fill memory or the disk through them."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            body = response["Body"]
            try:
                data: bytes = body.read(META_MAX_BYTES + 1)
            finally:
                body.close()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                return None
            raise self.error(exc, name, "read") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self.error(exc, name, "read") from None
        return data

    # ------------------------------------------------------------ writing

    def upload(
        self,
        path: Path,
        name: str | None = None,
        *,
        storage_class: str = "STANDARD",
        on_event: EventSink = ignore_events,
        step_id: str = "upload",
        lock: ObjectLock | None = None,
    ) -> None:
        """Upload `path` as prefix+name (default its basename), with Progress events; with
        `lock`, under S3 Object Lock retention (the bucket must have Object Lock enabled)."""
        name = name or path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DrError(f"cannot upload {path}: {exc.strerror or exc}") from None
        meter = ProgressMeter(on_event, step_id, "upload", size)
        transfer = TransferConfig(multipart_chunksize=16 * CHUNK)
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                self.prefix + name,
                ExtraArgs=_upload_args(storage_class, lock),
                Callback=meter.add,
                Config=transfer,
            )
            if lock is not None and size >= transfer.multipart_threshold:
                self._confirm_lock(name, lock)
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            S3UploadFailedError,
        ) as exc:
            raise self.error(exc, name, "upload to") from None
        meter.finish()

    def _confirm_lock(self, name: str, lock: ObjectLock) -> None:
        """A multipart upload's lock is read back: a store can take the lock headers of
        CreateMultipartUpload and still complete the object unlocked (moto's server does).
        Then the retention is put on the object itself; a store that refuses that fails the
        upload, never leaving a copy that only looks locked."""
        key = self.prefix + name
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        if head.get("ObjectLockMode") == lock.mode and head.get("ObjectLockRetainUntilDate"):
            return
        self.client.put_object_retention(
            Bucket=self.bucket,
            Key=key,
            Retention={"Mode": lock.mode, "RetainUntilDate": lock.until},
        )

    def download(
        self,
        name: str,
        dest: Path,
        *,
        on_event: EventSink = ignore_events,
        step_id: str = "download",
        cancel: threading.Event | None = None,
        check: StreamCheck | None = None,
        known: S3Object | None = None,
    ) -> Path:
        """Download to `dest.part` (resuming an existing .part; parallel ranged GETs for a
        large object), then rename to `dest`. ArchivedError when the object needs a Glacier
        restore first. `check` is fed the final file's bytes in the same pass (s3download);
        `known`: the object as a lookup just found it, not asked for again.

        A resumed .part is not trusted by itself: callers verify the result (MD5 + gzip)."""
        return s3download.download(
            self,
            name,
            dest,
            on_event=on_event,
            step_id=step_id,
            cancel=cancel,
            check=check,
            known=known,
        )

    def archived_error(self, name: str, obj: S3Object) -> ArchivedError:
        return s3archive.archived_error(self, name, obj)

    def request_restore(self, name: str, days: int = 7, tier: str = "Standard") -> str:
        """Ask S3 to restore an archived object; returns a one-line status for the operator."""
        return s3archive.request_restore(self, name, days, tier)

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self.error(exc, name, "delete") from None


def _upload_args(storage_class: str, lock: ObjectLock | None) -> dict[str, Any]:
    args: dict[str, Any] = {"StorageClass": storage_class}
    if lock is not None:
        args["ObjectLockMode"] = lock.mode
        args["ObjectLockRetainUntilDate"] = lock.until
    return args


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); ValueError when it is not one, or when the key
    could name a path outside BACKUP_DIR once downloaded (`..`, `.` or empty segments,
    backslashes, control characters): such a URL is refused, not cleaned up."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", url, flags=re.DOTALL)
    if match is None:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    bucket, key = match.group(1), match.group(2)
    problem = name_problem(bucket) or name_problem(key)
    if problem is not None:
        raise ValueError(
            f"{url!r} is refused: {problem}; give the backup's plain URL as "
            "`preskool-dr list --source s3` shows it"
        )
    return bucket, key


def store_for_url(url: str) -> tuple[S3Store, str]:
    """An S3Store whose prefix is the key's folder, and the key's name within it."""
    bucket, key = parse_s3_url(url)
    folder, _, name = key.rpartition("/")
    return S3Store(bucket, f"{folder}/" if folder else ""), name
