"""Free space before downtime: whether a folder's disk can take what is about to be written.

A download or a restore that fills its disk half way fails after the app went offline (or
leaves a partial file behind); measured first, it is refused with the numbers instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import humanize

# Beyond the bytes themselves: the filesystem's own overhead, the WAL a load writes, and
# room for everything else on that disk (a disk filled to its last block stops the host).
MARGIN_MIN = 16 * 1024 * 1024
MARGIN_SHARE = 20  # 1/20 = 5 % of what is written


def with_margin(payload: int) -> int:
    """The free bytes `payload` bytes need: themselves plus 5 % (at least 16 MiB)."""
    return payload + max(MARGIN_MIN, payload // MARGIN_SHARE)


def size_text(n: int) -> str:
    """1288490188 -> "1.2 GiB"."""
    return humanize.naturalsize(n, binary=True, format="%.1f")


def shortfall(payload: int, free: int, where: str, fix: str) -> str | None:
    """The refusal when `free` bytes cannot take `payload` (+ margin), else None:
    "needs 1.2 GiB in /var/backups/preskool, 300.0 MiB free: <fix>"."""
    needed = with_margin(payload)
    if free >= needed:
        return None
    return f"needs {size_text(needed)} in {where}, {size_text(free)} free: {fix}"


def free_bytes(path: Path) -> int:
    """Free bytes for this user on the disk holding `path` (or its nearest existing
    parent: a folder not created yet lands on its parent's disk)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
