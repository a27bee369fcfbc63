"""The verify gate's last link: steps 5 and 6 use exactly the bytes step 4 verified.

Step 4 records the backup's MD5 and its identity (device, inode, size, mtime, ctime:
checksum.FileIdentity) in the run journal. Before step 5 and before step 6's load the
engine opens the file once (`open_verified`) and checks that open file against the record:

- step 5 (`rehash=True`) reads the whole file again and compares the MD5. It is the last
  moment at which a refusal costs nothing but the downtime so far; MD5 alone (no gzip) reads
  at ~650 MB/s on one core, seconds for a multi-GB backup that step 4 just read (page cache),
  small beside the load that follows. The file a load started early holds
  (core/restore/steps/early_load.py: it opened it here and hashed it through the open file
  before it began) step 5 compares by identity instead, as step 6 does; the others it
  reads again.
- step 6 compares the identity: a file renamed into place has another inode, and any write
  changes ctime, which no unprivileged process can set back. Only when the identity differs
  (a copy put back, a remount) is the open file hashed again; it is loaded only when the MD5
  is still the one step 4 recorded. A resumed run goes through the same check.

The loaders then read that open file and no other: they get a path in a private folder
(<state dir>/load/<run id>/<backup name>) that is a symlink to /proc/<pid>/fd/<n>, which
the kernel resolves to the open file itself, whatever the backup's own path names by then.
psql's feeder, the parallel loader's sessions and pg_restore's -j workers (which reopen the
archive by name) all open it like any file, and their messages keep the backup's name.
After the load the open file's identity is compared again, so a write into the file during
the load (possible only for its owner) fails the step instead of passing as verified.

Why not hash while loading: psql and pg_restore commit as they go, so a mismatch found at
the end would be found after the content reached the database. (The load a headless run
starts early, steps/early_load.py, hashes its open files first, for the same reason.)
Without /proc (not Linux) the loaders get the backup's own path: the identity checks before
and after the load remain, with the time between the check and the loader's open as the
gap.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.paths import ensure_private_dir
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.checksum import FileIdentity


class GateError(DrError):
    """The file is not the one step 4 verified (exit 1): nothing is loaded from it."""


@dataclass(frozen=True)
class Pinned:
    """A verified file held open for a step."""

    path: Path  # the file's own path (what step 4 verified)
    load_path: Path  # what the loaders open: resolves to the open file
    identity: FileIdentity  # of the open file, as checked
    md5: str  # its MD5, as checked (step 4's)


@contextlib.contextmanager
def open_verified(
    path: Path,
    md5: str,
    identity: FileIdentity | None,
    folder: Path,
    *,
    rehash: bool = False,
    on_event: EventSink = ignore_events,
    step_id: str = StepId.RESTORE,
    cancel: threading.Event | None = None,
) -> Iterator[Pinned]:
    """`path` opened once and checked against step 4's `md5` and `identity` (see the module
    docstring); GateError when it is not that file. On a normal exit of the block the open
    file's identity is checked again (GateError when it was written meanwhile)."""
    try:
        # O_NONBLOCK: a pipe put at the path is refused below instead of blocking here
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise GateError(
            f"{path}, verified in step 4, is gone: put it back, or start a new run to "
            "download and verify it again"
        ) from None
    except OSError as exc:
        raise GateError(f"cannot open {path}: {exc.strerror or exc}") from None
    link: Path | None = None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise GateError(
                f"{path} is not a regular file any more (step 4 verified one): put the "
                "verified file back, or start a new run to verify and restore it"
            )
        link = link_to_fd(folder, path, fd)
        now = FileIdentity.of(opened)
        if rehash or now != identity:
            # Read the open file through the link (the same open file, and the messages keep
            # the backup's name), never through `path`, which may name another file by now.
            result = checksum.verify_file(
                link, md5, on_event=on_event, step_id=step_id, cancel=cancel, check_gzip=False
            )
            if result.actual_md5 != md5:
                raise GateError(
                    f"{path} is not the backup step 4 verified: its MD5 is now "
                    f"{result.actual_md5}, step 4 verified {md5} (it was replaced or changed "
                    "since); nothing was loaded from it - put the verified file back, or "
                    "start a new run to verify and restore it"
                )
            if result.identity is None or result.identity != FileIdentity.of(os.fstat(fd)):
                raise GateError(
                    f"{path} changed while it was checked: stop whatever writes to it, then "
                    "run the step again"
                )
            now = result.identity  # the state whose bytes were just hashed
            if identity is not None and now != identity:
                on_event(
                    Notice(
                        "info",
                        f"{path.name} is another copy than step 4 read (inode, size or times "
                        "changed) with the same MD5: it is the verified backup",
                        step_id,
                    )
                )
        yield Pinned(path, link, now, md5)
        if FileIdentity.of(os.fstat(fd)) != now:
            raise GateError(
                f"{path} was written while it was in use: the loaded content may not be what "
                "step 4 verified; stop whatever writes to it, then run the restore again"
            )
    finally:
        os.close(fd)
        if link is not None and link != path:
            link.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only once empty (the companion may still be linked)


def link_to_fd(folder: Path, path: Path, fd: int) -> Path:
    """`folder/<path's name>`: a symlink to this process's descriptor `fd` (the open file
    itself, also for child processes); without /proc, `path` is all the loaders can get."""
    target = Path(f"/proc/{os.getpid()}/fd/{fd}")
    if not target.exists():
        return path
    ensure_private_dir(folder)
    link = folder / path.name
    link.unlink(missing_ok=True)  # left by a process that was killed
    link.symlink_to(target)
    return link
