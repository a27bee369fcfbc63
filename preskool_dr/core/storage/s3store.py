"""The S3 side of the catalog: list, upload, resumable download, Glacier restore requests.

boto3 reads AWS_* (including AWS_ENDPOINT_URL) from the environment itself, so credentials
never pass through our objects. Every failure leaves here as one DrError line naming the
bucket/key and the next action: the operator reading it is in the middle of an outage.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from preskool_dr.core.base.errors import ArchivedError, Cancelled, DrError, NotFoundError
from preskool_dr.core.base.events import EventSink, ProgressMeter, ignore_events
from preskool_dr.core.base.files import PRIVATE_FILE_MODE, fsync_dir
from preskool_dr.core.base.paths import name_problem
from preskool_dr.core.base.procs import redact
from preskool_dr.core.storage.checksum import CHUNK

ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
RESTORE_WAIT = {"GLACIER": "3-5 hours", "DEEP_ARCHIVE": "up to 12 hours"}
HEAD_THREADS = 8
RESUME_ATTEMPTS = 5  # a download broken half way goes on from its .part this often per call
_ACCESS_CODES = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}
_MISSING_KEY_CODES = {"404", "NoSuchKey", "NotFound"}
_RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalError",
}
_ONGOING = re.compile(r'ongoing-request\s*=\s*"(true|false)"')


def parse_restore_header(value: str | None) -> str | None:
    """The `Restore` (x-amz-restore) header as a state: None, "in-progress" or "available"."""
    match = _ONGOING.search(value or "")
    if match is None:
        return None
    return "in-progress" if match.group(1) == "true" else "available"


class _Interrupted(DrError):
    """A download's body stopped half way; what arrived is in the .part (resumable)."""


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    last_modified: datetime
    storage_class: str  # "STANDARD" when S3 omits it
    restore_state: str | None = None  # None, "in-progress", "available" (archived objects)
    # S3 Object Lock retention (from HEAD only; a listing does not carry it)
    lock_mode: str | None = None  # GOVERNANCE | COMPLIANCE
    lock_until: datetime | None = None

    @property
    def needs_restore(self) -> bool:
        return self.storage_class in ARCHIVED_CLASSES and self.restore_state != "available"

    def locked_at(self, now: datetime) -> bool:
        """Whether Object Lock forbids deleting this object at `now`."""
        return self.lock_mode is not None and self.lock_until is not None and self.lock_until > now


@dataclass(frozen=True)
class ObjectLock:
    """What an upload carries: `mode` retained until `until` (S3 Object Lock)."""

    mode: str
    until: datetime


def _client_config() -> BotoConfig:
    # AWS_MAX_ATTEMPTS / AWS_RETRY_MODE still win: an operator on a flaky link can raise them.
    retries: dict[str, Any] = {
        "mode": os.environ.get("AWS_RETRY_MODE") or "standard",
        "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or 5),
    }
    return BotoConfig(
        retries=retries,
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
        max_pool_connections=HEAD_THREADS * 2,
    )


class S3Store:
    """One bucket + prefix. Errors become DrError (or ArchivedError/NotFoundError) with a
    one-line message naming the bucket/key and what to do next, never a traceback."""

    def __init__(self, bucket: str, prefix: str = "preskool-backups/") -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = None
        self._client_lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def folder(self, name: str) -> S3Store:
        """The store for the members of folder `name` (a base backup's files)."""
        return S3Store(self.bucket, f"{self.prefix}{name}/")

    def name_of(self, key: str) -> str:
        """The name of a key relative to the prefix."""
        return key[len(self.prefix) :] if key.startswith(self.prefix) else key

    @property
    def client(self) -> Any:
        # Created on first use (and once): boto3 clients are thread-safe, sessions are not.
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = boto3.session.Session().client("s3", config=_client_config())
                except (botocore.exceptions.BotoCoreError, ValueError) as exc:
                    raise DrError(
                        f"cannot set up the S3 client: {redact(str(exc))}; "
                        "check AWS_DEFAULT_REGION, AWS_ENDPOINT_URL and AWS_MAX_ATTEMPTS"
                    ) from None
            return self._client

    # ------------------------------------------------------------ errors

    def error(self, exc: Exception, name: str | None, action: str) -> DrError:
        """One operator line for a boto3/botocore failure while `action`-ing `name`."""
        where = self.url(name) if name is not None else f"s3://{self.bucket}/{self.prefix}"
        if isinstance(exc, S3UploadFailedError) and isinstance(
            exc.__context__, botocore.exceptions.ClientError
        ):
            exc = exc.__context__
        if isinstance(exc, botocore.exceptions.ClientError):
            return self._client_error(exc, where, action)
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return DrError(
                f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / an instance role)"
            )
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError,
        ):
            return DrError(
                f"cannot {action} {where}: cannot reach the S3 endpoint "
                f"({redact(str(exc))}); check the network and AWS_ENDPOINT_URL/AWS_DEFAULT_REGION"
            )
        if isinstance(exc, botocore.exceptions.ReadTimeoutError):
            return DrError(
                f"cannot {action} {where}: S3 stopped answering (read timeout); try again, "
                "downloads resume where they stopped"
            )
        return DrError(f"cannot {action} {where}: {redact(str(exc))}")

    def _client_error(
        self, exc: botocore.exceptions.ClientError, where: str, action: str
    ) -> DrError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        detail = redact(str(error.get("Message") or code or status))
        if code == "NoSuchBucket":
            return NotFoundError(
                f"cannot {action} {where}: bucket {self.bucket!r} does not exist; "
                "check S3_BUCKET (or backups.s3_bucket) and AWS_ENDPOINT_URL"
            )
        if code == "InvalidObjectState":
            return ArchivedError(
                f"{where} is archived and not restored yet; run "
                f"`preskool-dr verify {where} --request-restore` and retry when it is available"
            )
        if code in _ACCESS_CODES or status == 403:
            return DrError(
                f"cannot {action} {where}: S3 denied access ({code or status}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy for "
                f"s3://{self.bucket}"
            )
        if code in _MISSING_KEY_CODES or status == 404:
            return NotFoundError(
                f"{where} does not exist; run `preskool-dr list --source s3` to see the backups"
            )
        if code in _RETRYABLE_CODES or status >= 500:
            return DrError(
                f"cannot {action} {where}: S3 kept failing after retries ({code or status}: "
                f"{detail}); wait a few minutes and run the command again"
            )
        return DrError(f"cannot {action} {where}: S3 said {code or status}: {detail}")

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

    def head(self, name: str) -> S3Object:
        """One object by name (relative to the prefix); NotFoundError when missing."""
        key = self.prefix + name
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = self.error(exc, name, "read")
            if isinstance(error, NotFoundError):
                # HEAD has no body, so a missing bucket also looks like a bare 404.
                self.check_bucket()
            raise error from None
        return S3Object(
            key=key,
            size=int(response.get("ContentLength", 0)),
            last_modified=response["LastModified"],
            storage_class=response.get("StorageClass") or "STANDARD",
            restore_state=parse_restore_header(response.get("Restore")),
            lock_mode=response.get("ObjectLockMode"),
            lock_until=response.get("ObjectLockRetainUntilDate"),
        )

    def exists(self, name: str) -> bool:
        try:
            self.head(name)
        except NotFoundError:
            return False
        return True

    def check_bucket(self) -> None:
        """NotFoundError naming the bucket when it does not exist (other errors are raised too)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 404 or exc.response.get("Error", {}).get("Code") in (
                "404",
                "NoSuchBucket",
            ):
                exc.response["Error"]["Code"] = "NoSuchBucket"
            raise self.error(exc, None, "read") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self.error(exc, None, "read") from None

    def get_bytes(self, name: str) -> bytes | None:
        """Small objects (sidecars, meta); None when missing."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            data: bytes = response["Body"].read()
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
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                self.prefix + name,
                ExtraArgs=_upload_args(storage_class, lock),
                Callback=meter.add,
                Config=TransferConfig(multipart_chunksize=16 * CHUNK),
            )
        except (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
            S3UploadFailedError,
        ) as exc:
            raise self.error(exc, name, "upload to") from None
        meter.finish()

    def download(
        self,
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
        obj = self.head(name)
        if obj.needs_restore:
            raise self.archived_error(name, obj)
        part = dest.with_name(dest.name + ".part")
        try:
            offset = part.stat().st_size if part.exists() else 0
            if offset > obj.size:
                # Left over from a different (larger) object of the same name: start again.
                part.unlink()
                offset = 0
            meter = ProgressMeter(on_event, step_id, "download", obj.size, done=offset)
            if offset < obj.size:
                self._fetch_resuming(name, part, offset, obj.size, meter, cancel)
            else:  # nothing (more) to fetch: an empty object, or a .part already complete
                os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_FILE_MODE))
                part.chmod(PRIVATE_FILE_MODE)
            meter.finish()
            got = part.stat().st_size
            if got != obj.size:
                raise DrError(
                    f"download of {self.url(name)} stopped at {got} of {obj.size} bytes; "
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
        self,
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
                self._fetch_into(name, part, offset, size, meter, cancel)
                return
            except _Interrupted:
                if attempt == RESUME_ATTEMPTS:
                    raise
                offset = part.stat().st_size

    def _fetch_into(
        self,
        name: str,
        part: Path,
        offset: int,
        size: int,
        meter: ProgressMeter,
        cancel: threading.Event | None,
    ) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + name}
        if offset:
            args["Range"] = f"bytes={offset}-"
        try:
            response = self.client.get_object(**args)
            body = response["Body"]
            if offset and not response.get("ContentRange"):
                # The server ignored Range and sends the whole object: rewrite from the start.
                offset = 0
                meter.restart()
            flags = (
                os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if offset else os.O_TRUNC)
            )
            fd = os.open(part, flags, PRIVATE_FILE_MODE)
            os.fchmod(fd, PRIVATE_FILE_MODE)  # also a .part left by an older version (0644)
            with os.fdopen(fd, "ab" if offset else "wb") as handle:
                try:
                    for chunk in body.iter_chunks(CHUNK):
                        if cancel is not None and cancel.is_set():
                            raise Cancelled(
                                f"download of {self.url(name)} cancelled at {meter.done} of "
                                f"{size} bytes; run it again to resume from {part.name}"
                            )
                        handle.write(chunk)
                        meter.add(len(chunk))
                finally:
                    handle.flush()
                    os.fsync(handle.fileno())
                    body.close()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = self.error(exc, name, "download")
            if isinstance(exc, botocore.exceptions.BotoCoreError) and meter.done > offset:
                error = _Interrupted(
                    f"download of {self.url(name)} interrupted at {meter.done} of {size} bytes "
                    f"({redact(str(exc))}); run the command again to resume from {part.name}"
                )
            raise error from None

    def archived_error(self, name: str, obj: S3Object) -> ArchivedError:
        where = self.url(name)
        wait = RESTORE_WAIT.get(obj.storage_class, "hours")
        if obj.restore_state == "in-progress":
            return ArchivedError(
                f"{where} is in {obj.storage_class} and its restore is still in progress "
                f"(takes {wait}); retry later, `preskool-dr list --source s3` shows the state"
            )
        return ArchivedError(
            f"{where} is in {obj.storage_class} and not restored yet; request a restore with "
            f"`preskool-dr verify {where} --request-restore` (or `g` on it in the TUI's "
            f"backup list), then retry in {wait}"
        )

    def request_restore(self, name: str, days: int = 7, tier: str = "Standard") -> str:
        """Ask S3 to restore an archived object; returns a one-line status for the operator."""
        obj = self.head(name)
        where = self.url(name)
        if obj.storage_class not in ARCHIVED_CLASSES:
            return f"{where} is in {obj.storage_class} storage: no restore needed"
        if obj.restore_state == "available":
            return f"{where} is already restored and can be downloaded now"
        wait = RESTORE_WAIT.get(obj.storage_class, "hours")
        if obj.restore_state == "in-progress":
            return f"restore of {where} already in progress (takes {wait}); retry later"
        try:
            self.client.restore_object(
                Bucket=self.bucket,
                Key=self.prefix + name,
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
                return f"restore of {where} already in progress (takes {wait}); retry later"
            raise self.error(exc, name, "request a restore of") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self.error(exc, name, "request a restore of") from None
        return (
            f"restore requested for {where} ({tier} tier, {obj.storage_class}: usually {wait}; "
            f"kept {days} days); check with `preskool-dr list --source s3`, then retry"
        )

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
