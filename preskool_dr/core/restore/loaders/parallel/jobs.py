"""The unit of work of the parallel load, shared by the scanner (which makes jobs), the
scheduler (which orders them) and the sessions (which run them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from preskool_dr.core.restore.loaders.parallel.pieces import Checkpoint

COPY = "copy"  # the group of a COPY part
SERIAL = "serial"  # the group of a post-data entry that runs alone, in file order


class Stopped(Exception):
    """Another thread failed or the operator cancelled: stop quietly."""


@dataclass(eq=False)
class Job:
    """A unit of work for one session: a COPY part, or post-data entries."""

    seq: int
    label: str  # what the operator reads: the table, or the entry's name
    group: str  # COPY, "build", "trigger", "fk" or SERIAL
    stage: int  # post-data: entries of a lower stage finish first
    settings: bytes  # session settings in force where the entry starts (tablespace, ...)
    keys: frozenset[int] = frozenset()  # table trees it touches
    shared: bool = False  # its lock lets others of its kind run on the same tables
    text: list[bytes] = field(default_factory=list)  # post-data SQL
    header: bytes = b""  # COPY: the block's `COPY ... FROM stdin;` line
    block: int = 0  # COPY: the seq of the block's first part
    part: int = 1  # COPY: which part of the block, from 1
    cut: bool = False  # COPY: it ends where the next part starts, not at the block's end
    checkpoint: Checkpoint | None = None  # COPY: where its rows start
    start: int = 0  # COPY: compressed offsets of the part, for progress
    end: int | None = None
    pos: int = 0
    size: int = 0  # COPY: decompressed bytes of the part known so far
    state: str = "pending"  # pending | running | done
    seconds: float = 0.0
