"""Where preskool-dr keeps its state, and the one gate every local path made from a remote
name goes through. `state_dir` is one function, so tests and the demo can redirect it."""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path

from preskool_dr.core.base.errors import DrError, VerificationError

PRIVATE_DIR_MODE = 0o700  # backups and journals hold the whole database, hostnames, operators
# A state folder shared with its group (a system install: root, group preskool-dr, 2750):
# what `check` run as the monitoring user must read is written group-readable, never more.
SHARED_DIR_MODE = 0o750
SHARED_FILE_MODE = 0o640


def state_dir() -> Path:
    """`PRESKOOL_DR_STATE_DIR`, else `$XDG_STATE_HOME/preskool-dr`, else ~/.local/state/..."""
    explicit = os.environ.get("PRESKOOL_DR_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "preskool-dr"


def state_modes(state: Path) -> tuple[int, int]:
    """(folder mode, file mode) for what is written into the state folder `state`: 0750 and
    0640 when the folder is shared with its group (its group may read and enter it, others
    nothing: `init` as root makes it so), else 0700 and 0600."""
    try:
        mode = state.stat().st_mode
    except OSError:
        return PRIVATE_DIR_MODE, 0o600
    if mode & 0o050 == 0o050 and not mode & 0o007:
        return SHARED_DIR_MODE, SHARED_FILE_MODE
    return PRIVATE_DIR_MODE, 0o600


def ensure_private_dir(path: Path, mode: int = PRIVATE_DIR_MODE) -> Path:
    """Create `path` and every missing folder above it with mode 0700 (`mkdir -p` gives the
    parents the umask's mode, often 0755), or `mode` (0750 in a shared state folder: set
    whatever the umask, keeping the set-group-ID bit a folder inherits from its parent, so
    its files stay in the shared group). Folders that exist are left as they are."""
    missing: list[Path] = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        if mode != PRIVATE_DIR_MODE:
            os.chmod(folder, mode | (folder.stat().st_mode & stat.S_ISGID))
    return path


class UnsafeNameError(VerificationError):
    """A remote name (an S3 key, a folder member) that would not stay under its folder."""


def name_problem(relative: str) -> str | None:
    """Why `relative`, a name that came from outside (an S3 key below a prefix, a member of
    a folder backup), cannot be used as a path below a local folder; None when it can.

    Only plain `/`-separated names pass: no empty, `.` or `..` segment (so no leading `/`),
    no backslash, no NUL or other control character."""
    if not relative:
        return "it is empty"
    if "\\" in relative:
        return "it holds a backslash"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in relative):
        return "it holds a control character (newline, NUL...)"
    for segment in relative.split("/"):
        if segment == "":
            return "it holds an empty path segment (a leading, doubled or trailing `/`)"
        if segment in (".", ".."):
            return f"it holds a {segment!r} path segment"
    return None


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, only when that stays under `root`, symlinks resolved; otherwise
    UnsafeNameError (exit 1), and nothing is written. Every download goes through here."""
    problem = name_problem(relative)
    path = root / relative
    if problem is None:
        base = root.resolve()
        resolved = path.resolve()
        if resolved != base and base not in resolved.parents:
            problem = f"it leads to {resolved}, outside {base} (through a symbolic link)"
    if problem is not None:
        raise UnsafeNameError(
            f"refusing the remote name {relative!r}: {problem}, so it could be written outside "
            f"{root}; nothing was written. Someone with write access to the bucket may have put "
            "it there: check the bucket, and use another backup (`preskool-dr list`)"
        )
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
    """Create `path` (0700) if missing; DrError unless it is a folder of this user (or of
    root: a system install's /var/lib/preskool-dr, shared read-only with a group) that group
    and others cannot write. The message says what is wrong and the command that fixes it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        pass  # a file or a dangling symlink: reported below
    except OSError as exc:
        shared = _root_shared(path.parent) if isinstance(exc, PermissionError) else False
        fix = (
            f"{path.parent} is root's, shared read-only with its group (a system install): "
            "run this as root (sudo preskool-dr ...)"
            if shared
            else "create it (mode 0700, owned by this user)"
        )
        raise DrError(
            f"cannot create the state folder {path}: {exc.strerror} - {fix}, or set "
            "PRESKOOL_DR_STATE_DIR to a folder of your own"
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
    if info.st_uid not in (me, 0):  # root can plant anything anywhere: trusting it costs nothing
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


def trusted_folder(path: Path, what: str, *, follow: bool, nothing: str) -> None:
    """DrError unless `path` is a folder of root or this user that group and others cannot
    write: preskool-dr writes there as root, and anyone else who can write to it could plant
    a backup or swap a path for a symbolic link between our check and our write. `follow`:
    `path` may be a symbolic link to such a folder (BACKUP_DIR on a bigger disk); else a
    link is refused. `nothing` says what did not happen ("nothing was downloaded")."""
    try:
        info = path.stat() if follow else path.lstat()
    except OSError as exc:
        raise DrError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    me = os.geteuid()
    if not stat.S_ISDIR(info.st_mode):
        problem, fix = "is not a folder (a symbolic link or a file)", f"remove it (rm {path})"
    elif info.st_uid not in (0, me):
        problem = f"belongs to {_user(info.st_uid)} (uid {info.st_uid}), not to {_user(me)} or root"
        fix = f"chown {_user(me)} {path} after checking what is in it"
    elif info.st_mode & 0o022:
        problem = f"can be written by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
        fix = f"chmod go-w {path}"
    else:
        return
    raise DrError(
        f"{what} {path} {problem}: another local user could plant files there or swap them "
        f"for symbolic links; {nothing} - {fix}, and retry"
    )


def _root_shared(folder: Path) -> bool:
    """`folder` is root's and this user is not root (a system install's state folder)."""
    try:
        return folder.stat().st_uid == 0 and os.geteuid() != 0
    except OSError:
        return False


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
