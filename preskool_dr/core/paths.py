"""Where preskool-dr keeps its state. One function, so tests and the demo can redirect it."""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

from preskool_dr.core.errors import DrError


def state_dir() -> Path:
    """`PRESKOOL_DR_STATE_DIR`, else `$XDG_STATE_HOME/preskool-dr`, else ~/.local/state/..."""
    explicit = os.environ.get("PRESKOOL_DR_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "preskool-dr"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed: it holds journals with hostnames and operators."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def secure_state_subdir(path: Path) -> Path:
    """`<state dir>/<name>` (runs, locks), created 0700 and checked with its state folder.

    Whoever can write to these folders can plant a symlink or a file at a lock or journal
    path before preskool-dr opens it (as root), so both must belong to this user and be
    closed to group and others. The state folder itself may be a symlink to the real one
    (the operator's choice); the subfolder may not."""
    secure_dir(path.parent, follow_symlink=True)
    return secure_dir(path, follow_symlink=False)


def secure_dir(path: Path, *, follow_symlink: bool) -> Path:
    """Create `path` (0700) if missing; DrError unless it is a folder of this user that
    group and others cannot write. The message says what is wrong and the command that
    fixes it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        pass  # a file or a dangling symlink: reported below
    except OSError as exc:
        raise DrError(
            f"cannot create the state folder {path}: {exc.strerror} - create it (mode 0700, "
            "owned by this user) or set PRESKOOL_DR_STATE_DIR to a folder of your own"
        ) from None
    try:
        info = path.stat() if follow_symlink else path.lstat()
    except OSError as exc:
        raise DrError(
            f"the state folder {path} cannot be read ({exc.strerror}): remove it (rm {path}) "
            "or set PRESKOOL_DR_STATE_DIR to a folder of your own"
        ) from None
    if stat.S_ISLNK(info.st_mode):
        raise DrError(
            f"{path} is a symbolic link, not a folder: someone may have planted it to "
            f"redirect preskool-dr's files; nothing was changed - remove it (rm {path}) "
            "and retry"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise DrError(
            f"the state folder {path} is not a folder: remove it or set "
            "PRESKOOL_DR_STATE_DIR to a folder of your own"
        )
    me = os.geteuid()
    if info.st_uid != me:
        raise DrError(
            f"the state folder {path} belongs to {_user(info.st_uid)}, not to {_user(me)} who "
            "runs preskool-dr: its owner could plant files there (a symlink at a lock or "
            f"journal path); nothing was changed - fix: chown {_user(me)} {path} (after "
            "checking its content), or set PRESKOOL_DR_STATE_DIR to a folder of your own"
        )
    if info.st_mode & 0o022:
        raise DrError(
            f"the state folder {path} can be written by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): another local user could plant files there "
            f"(a symlink at a lock or journal path); nothing was changed - fix: chmod 700 {path}"
        )
    return path


def open_private_file(path: Path, flags: int, what: str, *, own: bool = True) -> int:
    """`os.open` that never follows a symlink at `path` and refuses anything but a regular
    file (of this user, unless `own` is False: a folder shared on purpose) with one link (a
    hard link planted in the folder is another file's inode). DrError says what was found
    and how to clear it; nothing was written."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a planted FIFO
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DrError(
                f"the {what} {path} is a symbolic link: someone planted it to make "
                f"preskool-dr overwrite another file; nothing was written - remove it "
                f"(rm {path}), check who can write to {path.parent}, and retry"
            ) from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif own and info.st_uid != os.geteuid():
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})"
    elif info.st_nlink != 1:
        problem = f"has {info.st_nlink} hard links (another file's data)"
    if problem:
        os.close(fd)
        raise DrError(
            f"the {what} {path} {problem}: someone may have planted it; nothing was written "
            f"- remove it (rm {path}), check who can write to {path.parent}, and retry"
        )
    return fd


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
