"""The archive's objects in S3 (wal/<name>): their MD5, their bytes, and a PUT that never
replaces an object already there. boto3 is imported only when a bucket is used."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.storage import checksum

if TYPE_CHECKING:
    from preskool_dr.core.storage.s3store import ObjectLock, S3Store

_MD5_RE = re.compile(r"[0-9a-f]{32}")
_PLAIN_ETAG = re.compile(r'"?([0-9a-f]{32})"?')


def head_object(store: S3Store, name: str) -> dict[str, Any] | None:
    """HEAD of wal/<name>; None when it does not exist."""
    import botocore.exceptions

    try:
        response: dict[str, Any] = store.client.head_object(
            Bucket=store.bucket, Key=store.prefix + name
        )
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("404", "NoSuchKey", "NotFound") or status == 404:
            store.check_bucket()  # a missing bucket also answers HEAD with a bare 404
            return None
        raise store.error(exc, name, "read") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise store.error(exc, name, "read") from None
    return response


def object_md5(head: Mapping[str, Any]) -> str | None:
    """The MD5 we stored in the metadata, else a plain (single-part, unencrypted) ETag."""
    stored = str((head.get("Metadata") or {}).get("md5", "")).lower()
    if _MD5_RE.fullmatch(stored):
        return stored
    match = _PLAIN_ETAG.fullmatch(str(head.get("ETag", "")))
    return match.group(1) if match else None


def get_chunks(store: S3Store, name: str) -> Iterator[bytes]:
    import botocore.exceptions

    try:
        body = store.client.get_object(Bucket=store.bucket, Key=store.prefix + name)["Body"]
        try:
            yield from body.iter_chunks(checksum.CHUNK)
        finally:
            body.close()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise store.error(exc, name, "download") from None


class NameTaken(Exception):
    """A conditional PUT found the key already there (HTTP 412, or 409 for a concurrent one)."""


def put_new(
    store: S3Store,
    path: Path,
    md5: str,
    metadata: Mapping[str, str] | None = None,
    lock: ObjectLock | None = None,
) -> None:
    """PUT wal/<name> only if no object has that key (`If-None-Match: *`, which S3 checks
    atomically): the HEAD before it cannot stop two servers from both seeing no object.
    With `lock`, under S3 Object Lock retention (refused by a bucket without Object Lock)."""
    import botocore.exceptions

    args: dict[str, Any] = {
        "Bucket": store.bucket,
        "Key": store.prefix + path.name,
        "ContentMD5": base64.b64encode(bytes.fromhex(md5)).decode(),
        "Metadata": {**(metadata or {}), "md5": md5},
    }
    if lock is not None:
        args["ObjectLockMode"] = lock.mode
        args["ObjectLockRetainUntilDate"] = lock.until
    try:
        _put(store, path, {**args, "IfNoneMatch": "*"})
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            raise NameTaken from None
        if code != "NotImplemented" and status != 501:
            raise store.error(exc, path.name, "upload to") from None
        # An S3-compatible store without conditional writes: a plain PUT after the HEAD
        # above, as before, rather than stopping archiving (pg_wal would fill the disk).
        try:
            _put(store, path, args)
        except botocore.exceptions.ClientError as again:
            raise store.error(again, path.name, "upload to") from None


def _put(store: S3Store, path: Path, args: dict[str, Any]) -> None:
    """One put_object of `path`; ClientError goes to the caller, the rest becomes DrError."""
    import botocore.exceptions

    try:
        with path.open("rb") as body:
            store.client.put_object(Body=body, **args)
    except botocore.exceptions.BotoCoreError as exc:
        raise store.error(exc, path.name, "upload to") from None
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror or exc}") from None
