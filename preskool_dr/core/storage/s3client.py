"""The S3 client of one bucket + prefix, its objects' metadata, and boto3 errors as one line.

boto3 reads AWS_* (including AWS_ENDPOINT_URL) from the environment itself, so credentials
never pass through our objects. Every failure leaves here as one DrError line naming the
bucket/key and the next action: the operator reading it is in the middle of an outage.
S3Store (s3store.py) builds listing, transfers and restore requests on this.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config as BotoConfig

from preskool_dr.core.base.errors import ArchivedError, DrError, NotFoundError
from preskool_dr.core.base.procs import redact
from preskool_dr.core.storage.s3_classes import ARCHIVED_CLASSES as ARCHIVED_CLASSES
from preskool_dr.core.storage.s3_classes import HEAD_THREADS as HEAD_THREADS

RESTORE_WAIT = {"GLACIER": "3-5 hours", "DEEP_ARCHIVE": "up to 12 hours"}
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


# botocore's data (the S3 service model, endpoints, partitions), parsed once per process:
# a client made from a fresh session parses it again (~0.1 s of CPU), and one restore
# reaches S3 through several stores (the catalog's, the backup's, a folder's). Only this
# data is shared: each store's own session still finds the credentials, region, proxies
# and endpoint in the environment as it is then.
_LOADERS: dict[str | None, Any] = {}
_LOADERS_LOCK = threading.Lock()


def _new_client() -> Any:
    core = botocore.session.get_session()
    path = core.get_config_variable("data_path")
    with _LOADERS_LOCK:
        loader = _LOADERS.get(path)
        if loader is None:
            loader = _LOADERS[path] = botocore.loaders.create_loader(path)
        core.register_component("data_loader", loader)
        session = boto3.session.Session(botocore_session=core)
        # every boto3 session appends its own data folder to the (shared) search path
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))
    return session.client("s3", config=_client_config())


class S3Client:
    """One bucket + prefix: the boto3 client, names and keys, HEAD, and the error lines.
    Errors become DrError (or ArchivedError/NotFoundError) with a one-line message naming
    the bucket/key and what to do next, never a traceback."""

    def __init__(self, bucket: str, prefix: str = "preskool-backups/") -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = None
        self._client_lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def name_of(self, key: str) -> str:
        """The name of a key relative to the prefix."""
        return key[len(self.prefix) :] if key.startswith(self.prefix) else key

    @property
    def client(self) -> Any:
        # Created on first use (and once): boto3 clients are thread-safe, sessions are not.
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = _new_client()
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
