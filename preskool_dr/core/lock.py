"""One run per target database at a time.

An flock on `<state dir>/locks/<host>_<port>_<db>.lock`: the kernel releases it when the
holder dies (even by SIGKILL), so a stale lock from a dead process is never a problem;
the file's content only names the holder for the message the second operator reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path
from types import TracebackType

from preskool_dr.core.errors import LockedError
from preskool_dr.core.events import utcnow
from preskool_dr.core.paths import ensure_private_dir


def lock_path(state_dir: Path, host: str, port: int, dbname: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{host}_{port}_{dbname}")
    return state_dir / "locks" / f"{safe}.lock"


class TargetLock:
    def __init__(self, path: Path, *, run_id: str, operator: str) -> None:
        self.path = path
        self.run_id = run_id
        self.operator = operator
        self._fd: int | None = None

    def acquire(self) -> TargetLock:
        ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another run holds the lock on this target: run {holder.get('run_id', '?')} by "
                f"{holder.get('operator', '?')} (pid {holder.get('pid', '?')}, started "
                f"{holder.get('since', '?')}); wait for it, or stop it and resume it "
                "with `preskool-dr restore --resume RUN_ID`"
            ) from None
        info = {
            "run_id": self.run_id,
            "operator": self.operator,
            "pid": os.getpid(),
            "since": utcnow().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> TargetLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, str]:
    try:
        data = os.pread(fd, 4096, 0)
        parsed = json.loads(data.decode() or "{}")
        return parsed if isinstance(parsed, dict) else {}
    except (OSError, ValueError):
        return {}
