"""Making a backup in S3 local: the Glacier restore request an archived one needs first,
and the (resumable) download of the backup with its sidecar, meta and companion into
BACKUP_DIR; and removing such a download again."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from preskool_dr.core.base import age
from preskool_dr.core.base.errors import (
    Cancelled,
    DrError,
    NoSpaceError,
    NotFoundError,
    UsageError,
)
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.paths import (
    UnsafeNameError,
    ensure_private_dir,
    inside,
    trusted_folder,
)
from preskool_dr.core.base.settings import Config
from preskool_dr.core.base.space import free_bytes, shortfall
from preskool_dr.core.storage.backup_names import PART_SUFFIX
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.checksum import (
    SIDECAR_SUFFIX,
    VerifyResult,
    sidecar_path,
    verify_file,
)
from preskool_dr.core.storage.layout import (
    META_SUFFIX,
    companion_name,
    meta_path,
    remove_local,
)
from preskool_dr.core.storage.meta import read_meta
from preskool_dr.core.storage.s3_classes import ARCHIVED_CLASSES
from preskool_dr.core.storage.s3_groups import S3Group, s3_group_for
from preskool_dr.core.storage.streamcheck import StreamCheck

NOTHING = "nothing was downloaded"

if TYPE_CHECKING:  # boto3 loads when a backup is fetched from S3, not for a local one
    from preskool_dr.core.storage.s3store import S3Object, S3Store


def request_restore(record: BackupRecord, days: int = 7) -> str:
    """Ask S3 to restore an archived backup (and any archived sidecar/meta beside it);
    returns the operator's line about the backup itself."""
    if record.s3_url is None:
        raise UsageError(f"{record.name} is not in S3: no restore needed")
    from preskool_dr.core.storage.s3store import store_for_url

    store, name = store_for_url(record.s3_url)
    group = s3_group_for(store, name)
    if group.main is not None:
        message = store.request_restore(name, days)
    else:
        folder = store.folder(name)
        messages = [folder.request_restore(folder.name_of(o.key), days) for o in group.members]
        message = messages[0]
    for suffix in (SIDECAR_SUFFIX, META_SUFFIX):
        try:
            if store.head(name + suffix).storage_class in ARCHIVED_CLASSES:
                store.request_restore(name + suffix, days)
        except NotFoundError:
            continue
    return message


def ensure_dir(directory: Path) -> None:
    """mkdir -p with mode 0700 for every folder made (backups hold the whole database), with
    the fix in the error when BACKUP_DIR cannot be created."""
    try:
        ensure_private_dir(directory)
    except OSError as exc:
        raise DrError(
            f"cannot create {directory}: {exc.strerror or exc}; set BACKUP_DIR to a writable folder"
        ) from None


def _save_small(store: S3Store, name: str, dest: Path) -> None:
    """The S3 object `name` (a sidecar or meta) at `dest`; when S3 has none, no local copy
    either (one left from another time, or planted, would be taken for the bucket's)."""
    data = store.get_bytes(name)
    try:
        if data is None:
            dest.unlink(missing_ok=True)
        else:
            atomic_write(dest, data)
    except OSError as exc:
        raise DrError(f"cannot write {dest}: {exc.strerror or exc}") from None


def fetch_backup(
    config: Config,
    backup: BackupRecord | str,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "download",
    cancel: threading.Event | None = None,
    with_companion: bool = False,
    checked: Callable[[VerifyResult], None] | None = None,
    companion_ready: Callable[[Path, int], bool] | None = None,
) -> Path:
    """Make the backup, its sidecar and meta local in BACKUP_DIR (download when only in S3,
    resumable); returns the local path. ArchivedError when a Glacier restore is needed.
    `backup`: a catalog record, or the s3:// URL of one (step 3 has the URL step 2
    recorded); either way the S3 objects are looked up here, and that lookup decides
    (missing: NotFoundError, archived, unsafe names).
    `with_companion` also fetches a logical backup's custom-format companion (`.dump` and
    its `.md5`) when S3 has one, before the backup itself; a companion that cannot be
    fetched is reported and left out (the plain backup restores without it), never a
    failure of the fetch. Once it is here with the MD5 the backup's meta records (hashed as
    it was written, or found whole from an earlier run), `companion_ready` is told the
    backup's local path and the bytes its download still writes there, before that
    download starts; it answers True when the companion is what will be loaded.
    `checked`: a single-file backup that is downloaded (and not encrypted) is also hashed
    and gzip/content-checked in the download's one pass (only hashed when the companion
    is loaded instead: its gzip and content are read if it is ever loaded), and the
    findings (without the sidecar comparison, which is the caller's) are handed to it."""
    if isinstance(backup, str):
        s3_url = backup
    elif backup.local_path is not None:
        return backup.local_path
    elif backup.s3_url is None:
        raise NotFoundError(f"{backup.name} has no local copy and no S3 copy")
    else:
        s3_url = backup.s3_url
    from preskool_dr.core.storage.s3store import store_for_url

    store, name = store_for_url(s3_url)
    group = s3_group_for(store, name)
    if group.bad is not None and group.main is None:
        raise UnsafeNameError(
            f"{s3_url} is refused: {group.bad}; nothing was downloaded. Someone with "
            "write access to the bucket may have put it there: check the bucket, and use "
            "another backup (`preskool-dr list`)"
        )
    for obj in group.data_objects():
        if obj.needs_restore:
            raise store.archived_error(store.name_of(obj.key), obj)
    directory = config.backups.dir
    dest = inside(directory, name)  # every local path made from a remote name: see paths
    _check_download_space(store, group, dest, with_companion)
    ensure_dir(directory)
    trusted_folder(directory, "BACKUP_DIR", follow=True, nothing=NOTHING)
    if group.main is not None:
        _save_small(store, name + SIDECAR_SUFFIX, sidecar_path(dest))
        _save_small(store, name + META_SUFFIX, meta_path(dest))
        deep = True  # what verify_backup checks: MD5, gzip and content
        if with_companion and group.companion is not None:
            kept = _fetch_companion(store, group.companion, dest, on_event, step_id, cancel)
            if kept and companion_ready is not None:
                deep = not companion_ready(dest, max(0, group.main.size - _part_size(dest)))
        check = None
        if checked is not None and not age.is_encrypted_name(name):
            check = StreamCheck(check_gzip=deep, check_dump=deep)
        try:
            store.download(
                name,
                dest,
                on_event=on_event,
                step_id=step_id,
                cancel=cancel,
                check=check,
                known=group.main,
            )
            if check is not None and checked is not None:
                checked(check.result(dest))
        finally:
            if check is not None:
                check.close()
        return dest
    folder = store.folder(name)
    for obj in group.members:
        member = folder.name_of(obj.key)
        target = inside(dest, member)
        ensure_dir(target.parent)
        parts = Path(member).parts[:-1]
        for depth in range(len(parts) + 1):  # the backup's folder and each one below it
            level = dest.joinpath(*parts[:depth])
            trusted_folder(level, "the backup's folder", follow=False, nothing=NOTHING)
        folder.download(
            member, target, on_event=on_event, step_id=step_id, cancel=cancel, known=obj
        )
    _save_small(store, name + META_SUFFIX, meta_path(dest))
    return dest


def _check_download_space(store: S3Store, group: S3Group, dest: Path, with_companion: bool) -> None:
    """NoSpaceError, before anything is written, when BACKUP_DIR's disk cannot take the
    download: the backup (less what a `.part` already holds), its companion when one is
    fetched (less what is already here of it), and the sidecar and meta (inside the
    margin)."""
    if group.main is not None:
        wanted = [(group.main.size, _part_size(dest))]
        if with_companion and group.companion is not None:
            companion = dest.with_name(companion_name(dest.name))
            # it may be here whole (kept when the backup's download failed after it)
            wanted.append((group.companion.size, _have(companion)))
    else:
        folder = store.folder(dest.name)
        wanted = [
            (obj.size, _part_size(inside(dest, folder.name_of(obj.key)))) for obj in group.members
        ]
    payload = sum(max(0, size - already) for size, already in wanted)
    problem = shortfall(
        payload,
        free_bytes(dest.parent),
        str(dest.parent),
        "free space or set BACKUP_DIR to a bigger disk; nothing was downloaded",
    )
    if problem is not None:
        raise NoSpaceError(f"downloading {dest.name} {problem}")


def _part_size(target: Path) -> int:
    """What an interrupted download of `target` already holds (it resumes from there)."""
    try:
        return target.with_name(target.name + PART_SUFFIX).stat().st_size
    except OSError:
        return 0


def _have(target: Path) -> int:
    """What is already here of `target`: the whole file (a regular file with one link: what
    removing it would free), else its `.part`."""
    try:
        info = os.lstat(target)
    except OSError:
        return _part_size(target)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return info.st_size
    return _part_size(target)


def _already_whole(companion: Path, expected: str, cancel: threading.Event | None) -> bool:
    """Whether the companion is here whole with the MD5 `expected` (a run whose backup
    download failed after it kept it; a `.part` of it beside it is removed). Only our own
    regular file, with one link and writable by no one else, is read; anything else at
    that name is removed, and the download writes it afresh."""
    try:
        info = os.lstat(companion)
    except FileNotFoundError:
        return False
    ours = (
        stat.S_ISREG(info.st_mode)
        and info.st_uid == os.geteuid()
        and info.st_nlink == 1
        and not info.st_mode & 0o022
    )
    if ours and verify_file(companion, expected, check_gzip=False, cancel=cancel).md5_ok:
        with contextlib.suppress(OSError):  # a download of it left behind: nothing resumes it
            companion.with_name(companion.name + PART_SUFFIX).unlink(missing_ok=True)
        return True
    companion.unlink()
    return False


def _fetch_companion(
    store: S3Store,
    obj: S3Object,
    dest: Path,
    on_event: EventSink,
    step_id: str,
    cancel: threading.Event | None,
) -> bool:
    """Download the companion of `dest` (its S3 object `obj`, as the lookup found it)
    beside it (resumable like the backup) when the
    backup's meta records its MD5, and keep it only when it has that MD5 (its own sidecar
    comes from the same bucket and proves nothing), hashed as it is written; True when it is
    kept. One already here with that MD5 (an earlier run stopped after it came down) is
    kept as it is (`_already_whole`). Otherwise say so and leave no companion under its
    final name."""
    companion = inside(dest.parent, companion_name(dest.name))
    meta = read_meta(dest)
    expected = meta.companion_md5 if meta is not None else None
    if expected is None:
        on_event(
            Notice(
                "warn",
                f"custom-format companion {companion.name} not downloaded: {dest.name} "
                "records no MD5 for it in its .meta.json (a backup from an older version); "
                "the plain backup will be restored",
                step_id,
            )
        )
        return False
    check = StreamCheck(check_gzip=False)
    try:
        _save_small(store, companion.name + SIDECAR_SUFFIX, sidecar_path(companion))
        if _already_whole(companion, expected, cancel):
            return True
        store.download(
            companion.name,
            companion,
            on_event=on_event,
            step_id=step_id,
            cancel=cancel,
            check=check,
            known=obj,
        )
        actual = check.result(companion).actual_md5
        if actual != expected:
            raise DrError(f"its MD5 {actual} is not the {expected} recorded in {dest.name}'s meta")
        return True
    except Cancelled:
        raise
    except (DrError, OSError) as exc:  # archived, gone, a broken transfer, a bad file here:
        # the plain backup still restores
        for path in (companion, sidecar_path(companion)):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        on_event(
            Notice(
                "warn",
                f"custom-format companion {companion.name} not downloaded ({exc}); "
                "the plain backup will be restored",
                step_id,
            )
        )
        return False
    finally:
        check.close()


def discard_download(dest: Path) -> None:
    """Remove what `fetch_backup` put in BACKUP_DIR for `dest`: the file (or folder), its
    sidecar, meta and companion. For a downloaded copy that failed verification: under its
    final name the next run would take it for a good local backup and never fetch the S3
    original again; moved back to `.part` it would be resumed as complete and renamed
    straight back. Removed, the next fetch starts from byte 0. The S3 objects stay."""
    remove_local(dest)
