"""wal-fetch (restore_command): copy one archived file to where PostgreSQL asks, verified
against its MD5, from the local archive or else from S3; an encrypted one (`<name>.age`,
see crypt.py) is decrypted on the way with the identity in the settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.backup.wal import crypt
from preskool_dr.core.backup.wal.names import check_name
from preskool_dr.core.backup.wal.s3 import get_chunks, head_object, object_md5
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.backup.wal.temp_copy import file_chunks, write_temp
from preskool_dr.core.base import files
from preskool_dr.core.base.age import AGE_SUFFIX, DecryptionError, IdentityMissing, need_identities
from preskool_dr.core.base.errors import DrError, VerificationError
from preskool_dr.core.base.paths import inside
from preskool_dr.core.storage import checksum


class WalMissing(DrError):
    """The archive has no such file. Exit 1: PostgreSQL reads that as the end of the archive."""

    exit_code = 1


@dataclass(frozen=True)
class FetchResult:
    name: str
    source: str  # "local" or "s3"
    md5: str
    warning: str | None = None  # e.g. the local copy was damaged and S3's was used


def fetch(name: str, dest: Path, settings: WalSettings) -> FetchResult:
    """Copy archived `name` to `dest` (PostgreSQL's %p), verified against its MD5, atomically.

    WalMissing when neither the local archive nor S3 has it; VerificationError when a copy
    exists but does not match its checksum (and no good copy exists elsewhere)."""
    check_name(name)
    damaged: DrError | None = None
    for stored in (name, crypt.stored_name(name)):
        local = inside(settings.archive_dir, stored)
        if not local.is_file():
            continue
        try:
            expected = checksum.read_sidecar(checksum.sidecar_path(local), stored).md5
            _restore(file_chunks(local), dest, expected, str(local), stored, settings)
            return FetchResult(name, "local", expected)
        except (IdentityMissing, DecryptionError) as exc:
            if isinstance(exc, IdentityMissing) or exc.wrong_key:
                raise  # the S3 copy would need the same key
            damaged = exc
        except DrError as exc:
            damaged = exc
        except OSError as exc:
            damaged = DrError(f"cannot read {local}: {exc.strerror or exc}")
        break
    repo = settings.repository
    if repo.has_s3:
        store = repo.s3
        for stored in (name, crypt.stored_name(name)):
            head = head_object(store, stored)
            if head is None:
                continue
            expected_remote = object_md5(head)
            if expected_remote is None:
                raise VerificationError(
                    f"{store.url(stored)} carries no MD5 (not uploaded by wal-push): "
                    "it cannot be verified"
                )
            _restore(
                get_chunks(store, stored),
                dest,
                expected_remote,
                store.url(stored),
                stored,
                settings,
            )
            warning = f"used the S3 copy: {damaged}" if damaged else None
            return FetchResult(name, "s3", expected_remote, warning)
    if damaged is not None:
        raise damaged
    raise WalMissing(f"{name} is not in the WAL archive ({settings.where})")


def _restore(
    chunks: Iterable[bytes],
    dest: Path,
    expected: str,
    source: str,
    stored: str,
    settings: WalSettings,
) -> None:
    if stored != stored.removesuffix(AGE_SUFFIX):
        identities = need_identities(settings.identity, f"archived WAL file {stored}")
        tmp = crypt.decrypt_to_temp(chunks, dest, expected, source, identities)
        try:
            _install(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    try:
        tmp, md5, _ = write_temp(chunks, dest.parent, dest.name)
    except OSError as exc:
        raise DrError(f"cannot write {dest}: {exc.strerror or exc}") from None
    try:
        if md5 != expected:
            raise VerificationError(
                f"{source} fails its checksum (md5 {md5}, expected {expected}): the archived "
                "segment is damaged; recovery cannot continue past it"
            )
        _install(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _install(tmp: Path, final: Path) -> None:
    tmp.replace(final)
    files.fsync_dir(final.parent)
