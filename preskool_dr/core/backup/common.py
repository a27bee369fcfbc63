"""What logical and base backups share: the result record, sizes as the seed prints them,
and the lock that lets one backup run at a time in a folder. (Which kinds go to S3, and
how: core/storage/repository.py.)"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import humanize

from preskool_dr.core.base.errors import DrError, LockedError
from preskool_dr.core.base.paths import open_private_file
from preskool_dr.core.storage.meta import BackupMeta

STEP_ID = "backup"
LOCK_NAME = ".preskool-backup.lock"


def human_size(size: int) -> str:
    """`14.0M`: the seed's `du -h` style."""
    return str(humanize.naturalsize(size, gnu=True))


@dataclass(frozen=True)
class BackupResult:
    path: Path
    meta: BackupMeta
    uploaded: tuple[str, ...]  # s3:// URLs of the backup, its sidecar and meta
    deleted: int  # old backups removed by retention (local and S3 copies counted apart)


def disk_error(path: Path, exc: OSError) -> DrError:
    return DrError(
        f"cannot write {path}: {exc.strerror or exc} - nothing was saved; free space in "
        f"{path.parent} (or fix its permissions) and run the backup again"
    )


@contextlib.contextmanager
def backup_dir_lock(backup_dir: Path) -> Iterator[None]:
    """Held for a whole backup run (logical or base): LockedError when another one holds it."""
    path = backup_dir / LOCK_NAME
    try:
        # a symlink or hard link planted at the lock's name is refused, never truncated
        fd = open_private_file(path, os.O_RDWR | os.O_CREAT, "backup lock file", own=False)
    except OSError as exc:
        raise disk_error(path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise LockedError(
                f"another backup (pid {other}) is running in {backup_dir}: "
                "wait for it to finish, then retry"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
