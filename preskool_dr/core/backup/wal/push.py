"""wal-push (archive_command): archive one file PostgreSQL hands over, locally and in S3,
verified, never overwriting what is archived under its name."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preskool_dr.core.backup.wal import crypt
from preskool_dr.core.backup.wal.names import check_name
from preskool_dr.core.backup.wal.s3 import NameTaken, get_chunks, head_object, object_md5, put_new
from preskool_dr.core.backup.wal.settings import ARCHIVE_DIR_MODE, FILE_MODE, WalSettings
from preskool_dr.core.backup.wal.temp_copy import file_chunks, file_md5, write_temp
from preskool_dr.core.base import age, files
from preskool_dr.core.base.errors import DrError, VerificationError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.paths import ensure_private_dir, inside
from preskool_dr.core.storage import checksum

if TYPE_CHECKING:
    from preskool_dr.core.storage.s3store import ObjectLock, S3Store

# A push's temp copy older than this was left by a killed push (one takes seconds).
STALE_TEMP_SECONDS = 3600


@dataclass(frozen=True)
class PushResult:
    name: str
    md5: str
    local: str  # "archived" or "already archived"
    s3: str | None  # "uploaded", "already in S3", or None without a bucket


def push(source: Path, settings: WalSettings) -> PushResult:
    """Archive `source` (a path PostgreSQL gives as %p) under its own name.

    Idempotent: the same content pushed again succeeds. Different content under a name
    already archived is refused (DrError): two clusters writing into one archive, or a
    damaged archive, must be looked at by a person, never overwritten. That holds for two
    pushes of one name at the same moment too: the copy is installed without replacing
    anything (os.link locally, a conditional PUT in S3), so the loser compares instead.

    With `settings.recipients`, the archived file is `<name>.age` (see crypt.py); they are
    parsed first, and an unusable one stops the push before anything is written."""
    name = check_name(source.name)
    parsed = age.recipients(settings.recipients) if settings.recipients else None
    archive = settings.archive_dir
    try:
        if os.geteuid() == 0:  # else `init` or the operator makes BACKUP_DIR, never the
            # server's OS user: the folder would be that user's, and root trusts what is in it
            ensure_private_dir(archive.parent)
        archive.mkdir(mode=ARCHIVE_DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise _archive_error(archive, exc) from None
    final = inside(archive, name)
    if parsed is not None and not final.exists():  # archived clear before: compared as such
        return _push_encrypted(source, settings, parsed)
    try:
        if final.exists():
            md5 = file_md5(source)
            local = _already_archived(md5, final)
        else:
            md5, local = _archive_locally(source, final)
    except OSError as exc:
        if exc.filename == str(source):
            raise DrError(f"cannot read {source}: {exc.strerror or exc}") from None
        raise _archive_error(Path(exc.filename or final), exc) from None
    repo = settings.repository
    remote = _push_s3(repo.s3, final, md5, lock=settings.lock(utcnow())) if repo.has_s3 else None
    return PushResult(name, md5, local, remote)


def _push_encrypted(source: Path, settings: WalSettings, recipients: list[Any]) -> PushResult:
    name = source.name
    final = inside(settings.archive_dir, crypt.stored_name(name))
    try:
        if final.exists():
            sha256 = crypt.clear_sha256(source)
            md5 = crypt.already_encrypted(sha256, final, FILE_MODE)
            local = "already archived"
        else:
            md5, sha256, local = _encrypt_locally(source, final, recipients)
    except OSError as exc:
        if exc.filename == str(source):
            raise DrError(f"cannot read {source}: {exc.strerror or exc}") from None
        raise _archive_error(Path(exc.filename or final), exc) from None
    repo = settings.repository
    lock = settings.lock(utcnow())
    remote = _push_s3(repo.s3, final, md5, sha256, lock) if repo.has_s3 else None
    return PushResult(name, md5, local, remote)


def _encrypt_locally(source: Path, final: Path, recipients: list[Any]) -> tuple[str, str, str]:
    """Encrypt `source` into the archive as `final`: (md5, sha256, "archived" or "already
    archived"). The clear digest and the md5 sidecar go in before the file, as in
    `_archive_locally`; the loser of a race compares the clear digests."""
    _remove_stale_temps(final)
    tmp, md5, sha256 = crypt.encrypt_to_temp(source, final.parent, final.name, recipients)
    try:
        if file_md5(tmp) != md5:
            raise VerificationError(
                f"re-reading the encrypted copy of {source.name} in {final.parent} gave other "
                "bytes than were written: check that disk (dmesg); PostgreSQL will retry"
            )
        tmp.chmod(FILE_MODE)
        crypt.claim_digest(final, source.name, sha256, FILE_MODE)
        if not final.exists():
            checksum.write_sidecar(final, md5, mode=FILE_MODE)
        if not files.install_new(tmp, final):
            return crypt.already_encrypted(sha256, final, FILE_MODE), sha256, "already archived"
        files.fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return md5, sha256, "archived"


def _archive_error(path: Path, exc: OSError) -> DrError:
    return DrError(
        f"cannot archive into {path}: {exc.strerror or exc}; the WAL archive must be writable "
        "by the database server's OS user (install -d -o postgres -m 0750 BACKUP_DIR/wal)"
    )


def _archive_locally(source: Path, final: Path) -> tuple[str, str]:
    """Copy `source` into the archive as `final`: (md5, "archived"), or (md5, "already
    archived") when another push installed identical bytes first. The sidecar goes in before
    the segment, so a segment under its final name always has one; both are installed with
    os.link, which fails when the name exists where a rename would replace it."""
    _remove_stale_temps(final)
    tmp, md5, _ = write_temp(file_chunks(source), final.parent, final.name)
    try:
        if file_md5(tmp) != md5:
            raise VerificationError(
                f"re-reading the copy of {source.name} in {final.parent} gave other bytes than "
                "were written: check that disk (dmesg); PostgreSQL will retry the segment"
            )
        tmp.chmod(FILE_MODE)
        wrote_sidecar = _claim_sidecar(final, md5)
        if not files.install_new(tmp, final):
            # Another push got there first: the same bytes, or refused.
            try:
                return md5, _already_archived(md5, final)
            except DrError:
                if wrote_sidecar:  # ours names bytes that are not the archived ones
                    checksum.sidecar_path(final).unlink(missing_ok=True)
                raise
        files.fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return md5, "archived"


def _remove_stale_temps(final: Path) -> None:
    """Remove the temp copies of `final` a killed push left. A young one may belong to a push
    still running (another server archiving the same name into this folder): it is left to
    finish and compare, instead of failing on a file removed under it."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
        except FileNotFoundError:
            continue


def _claim_sidecar(final: Path, md5: str) -> bool:
    """Put `final`'s sidecar in place for bytes with `md5` unless one is there; True when this
    push wrote it. One naming other bytes while `final` is not archived yet belongs to
    another push of a different file under the same name, half way: refused, never replaced."""
    if checksum.create_sidecar(final, md5, mode=FILE_MODE):
        return True
    sidecar = checksum.sidecar_path(final)
    try:
        recorded = checksum.read_sidecar(sidecar, final.name).md5
    except VerificationError:  # damaged: no push writes such a file, none can depend on it
        if final.exists():
            return False  # the segment's own check below decides (and repairs the sidecar)
        checksum.write_sidecar(final, md5, mode=FILE_MODE)
        return True
    if recorded == md5 or final.exists():
        return False  # ours from a killed attempt, or the archived segment decides
    raise DrError(
        f"{sidecar} records other content (md5 {recorded}) than the server's {final.name} "
        f"(md5 {md5}), whose copy is not archived yet: another server is archiving a different "
        f"{final.name} into {final.parent} right now, or stopped half way; refusing to "
        "overwrite it. Each cluster needs its own BACKUP_DIR"
    )


def _already_archived(md5: str, final: Path) -> str:
    """ "already archived" when `final` holds bytes with `md5` (its sidecar repaired when
    missing or wrong); DrError when it holds other bytes."""
    archived = file_md5(final)
    if archived != md5:
        raise DrError(
            f"{final} is already archived with different content (md5 {archived}, the server's "
            f"file has {md5}): refusing to overwrite it; is another cluster archiving into "
            f"{final.parent}? Each cluster needs its own BACKUP_DIR"
        )
    try:
        if checksum.read_sidecar(checksum.sidecar_path(final), final.name).md5 == md5:
            return "already archived"
    except VerificationError:
        pass
    # A push killed between sidecar and link (older versions: rename), or tampering.
    checksum.write_sidecar(final, md5, mode=FILE_MODE)
    return "already archived"


def _push_s3(
    store: S3Store,
    path: Path,
    md5: str,
    sha256: str | None = None,
    lock: ObjectLock | None = None,
) -> str:
    """Upload `path` as wal/<its name>; `sha256` (the clear segment's) for an encrypted one,
    whose copies differ in bytes and are compared by it. With `lock`, under Object Lock:
    fails (PostgreSQL retries) rather than leave an unlocked copy when the lock is not
    applied. A copy already there is compared, not locked again."""
    name = path.name
    head = head_object(store, name)
    if head is not None:
        return _already_in_s3(store, name, head, md5, sha256)
    extra = {crypt.CLEAR_DIGEST_METADATA: sha256} if sha256 else None
    try:
        put_new(store, path, md5, extra, lock)
    except DrError as exc:
        if lock is not None and "objectlock" in str(exc).lower().replace(" ", ""):
            raise DrError(
                f"{exc}; backups.object_lock needs a bucket created with Object Lock enabled "
                "(PostgreSQL retries the segment)"
            ) from None
        raise
    except NameTaken:  # another server's push of this name landed between HEAD and PUT
        head = head_object(store, name)
        if head is None:
            raise DrError(
                f"{store.url(name)} was being written by another push at the same moment; "
                "PostgreSQL will retry the segment"
            ) from None
        return _already_in_s3(store, name, head, md5, sha256)
    stored = head_object(store, name)
    if stored is None or object_md5(stored) != md5:
        raise VerificationError(
            f"{store.url(name)} does not hold what was uploaded (md5 "
            f"{object_md5(stored) if stored else 'missing'}, expected {md5}); "
            "PostgreSQL will retry the segment"
        )
    if lock is not None and stored.get("ObjectLockMode") != lock.mode:
        raise VerificationError(
            f"{store.url(name)} was stored without Object Lock {lock.mode} (the store "
            f"answered {stored.get('ObjectLockMode') or 'no lock'}): is Object Lock enabled on "
            "the bucket? PostgreSQL will retry the segment"
        )
    return "uploaded"


def _already_in_s3(
    store: S3Store, name: str, head: Mapping[str, Any], md5: str, sha256: str | None = None
) -> str:
    """ "already in S3" when wal/<name> holds bytes with `md5` (an encrypted one: the clear
    segment with `sha256`); DrError when other bytes."""
    if sha256 is not None:
        recorded = str((head.get("Metadata") or {}).get(crypt.CLEAR_DIGEST_METADATA, ""))
        if recorded != sha256:
            raise DrError(
                f"{store.url(name)} already exists holding another segment (clear sha256 "
                f"{recorded or 'not recorded'}, local {sha256}): refusing to overwrite it; is "
                "another cluster archiving into the same bucket?"
            )
        return "already in S3"
    remote = object_md5(head)
    if remote is None:  # uploaded by another tool (multipart): compare the bytes
        digest = checksum.md5_hasher()
        for chunk in get_chunks(store, name):
            digest.update(chunk)
        remote = digest.hexdigest()
    if remote != md5:
        raise DrError(
            f"{store.url(name)} already exists with different content (md5 {remote}, "
            f"local {md5}): refusing to overwrite it; is another cluster archiving into "
            "the same bucket?"
        )
    return "already in S3"
