"""Repairing a torn drill log: the last line of an interrupted append, finished or set aside."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.events import utcnow
from preskool_dr.core.drill.append import read_all
from preskool_dr.core.drill.entry import ZERO_SHA256, parse_log, require_log


@dataclass(frozen=True)
class RepairResult:
    path: Path
    line: int
    fragment_bytes: int
    moved_to: Path | None  # None: the line was whole and only lacked its newline

    def describe(self) -> str:
        if self.moved_to is None:
            return f"line {self.line} of {self.path} was complete; added its missing newline"
        return (
            f"moved the torn line {self.line} ({self.fragment_bytes} bytes) of {self.path} "
            f"to {self.moved_to}"
        )


def repair_log(path: Path, *, dry_run: bool = False) -> RepairResult | None:
    """Fix a torn tail: finish a whole line missing its newline, else set the fragment
    aside in `<log>.torn-<time>` and cut it off. None when there is nothing to repair."""
    require_log(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        content = read_all(fd)
        records = parse_log(content)
        if not records or records[-1].complete:
            return None
        last = records[-1]
        expected_prev = records[-2].sha256 if len(records) > 1 else ZERO_SHA256
        whole = last.data is not None and last.data.get("prev_sha256") == expected_prev
        moved_to = None if whole else path.with_name(f"{path.name}.torn-{utcnow():%Y%m%dT%H%M%SZ}")
        result = RepairResult(path, last.number, len(last.raw), moved_to)
        if dry_run:
            return result
        if moved_to is None:
            os.write(fd, b"\n")
        else:
            _write_new_file(moved_to, last.raw)
            os.ftruncate(fd, len(content) - len(last.raw))
        os.fsync(fd)
        return result
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
