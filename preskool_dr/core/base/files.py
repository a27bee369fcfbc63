"""Durable file writes: a reader never sees half a file, a crash never leaves one under the
final name, and a name that exists is not replaced when the caller says so. Every state,
journal, meta, sidecar and log file the tool writes goes through here."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# Backups hold the whole database: what the tool writes is readable by its owner only.
PRIVATE_FILE_MODE = 0o600


def atomic_write(
    path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE, *, overwrite: bool = True
) -> bool:
    """Write `data` to `path` via temp file + fsync + rename, so readers never see half a file.

    `overwrite=False` installs with a hard link instead, which fails when `path` exists (a
    rename would replace it): returns False, and `path` is left as it was.

    mkstemp creates the temp file with O_CREAT|O_EXCL|O_NOFOLLOW, and its mode is set
    through the descriptor: a symlink swapped in under the temp name is never followed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            tmp.replace(path)
        elif not install_new(tmp, path):
            return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


# errno of link(2) on a file system without hard links (vfat, some SMB and FUSE mounts)
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def install_new(tmp: Path, path: Path) -> bool:
    """Give the finished temp file `tmp` the name `path` unless that name exists: os.link
    fails when it does, where a rename would replace it; False then, `path` untouched.
    `tmp` may remain: the caller removes it. On a file system without hard links: a check
    and a rename (a small race window), rather than no install at all."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if path.exists():
            return False
        tmp.replace(path)
    return True


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
