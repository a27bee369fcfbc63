"""Where preskool-dr keeps its state, and the one gate every local path made from a remote
name goes through. `state_dir` is one function, so tests and the demo can redirect it."""

from __future__ import annotations

import os
from pathlib import Path

from preskool_dr.core.errors import VerificationError

PRIVATE_DIR_MODE = 0o700  # backups and journals hold the whole database, hostnames, operators


def state_dir() -> Path:
    """`PRESKOOL_DR_STATE_DIR`, else `$XDG_STATE_HOME/preskool-dr`, else ~/.local/state/..."""
    explicit = os.environ.get("PRESKOOL_DR_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "preskool-dr"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` and every missing folder above it with mode 0700 (`mkdir -p` gives the
    parents the umask's mode, often 0755). Folders that exist are left as they are."""
    missing: list[Path] = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
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
