"""COPY blocks -> COPY parts, as the scanner passes their rows without reading them.

A block's first part starts at its first row; with `split_bytes`, a part ends at the first
row end after that many bytes and the next part starts there (the session loading a part
finds the same row end on its own). Each part carries a Checkpoint: the zlib state from
which a session inflates its rows. Pure code: no PostgreSQL, no processes, no threads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from preskool_dr.core.base import deflate
from preskool_dr.core.base.deflate import Decompress
from preskool_dr.core.restore.loaders.parallel.jobs import COPY, Job
from preskool_dr.core.restore.loaders.parallel.pieces import Checkpoint, Piece


class PartSink(Protocol):
    """Where the COPY parts go (the load's scheduler)."""

    def add_copy(self, job: Job) -> None:
        """A new part, in file order (may wait while too many are waiting)."""

    def part_scanned(self, job: Job, offset: int) -> None:
        """The scanner passed the end of this part, at compressed `offset`."""

    def block_grew(self, block: int, size: int) -> None:
        """SQL bytes of the block scanned so far."""

    def block_closed(self, block: int) -> None:
        """The scanner passed the end of the block: it has all its parts."""


@dataclass(frozen=True)
class _Snap:
    sql_pos: int  # decompressed offset where the piece starts
    offset: int  # compressed offset of its input
    state: Decompress


class CopyParts:
    """The parallel COPY block the scanner is in, cut into parts."""

    def __init__(self, sink: PartSink, split_bytes: int, next_seq: Callable[[], int]) -> None:
        self._sink = sink
        self._split = split_bytes
        self._next_seq = next_seq
        self._snaps: deque[_Snap] = deque()
        self.scan_offset = 0  # compressed offset after the pieces routed so far
        self.in_block = False  # inside a parallel COPY block (the scanner skips its rows)
        self.block: Job | None = None  # the part of it being skipped; None: none follows
        self.label = ""  # the block's table
        self.block_seq = 0  # the seq of its first part
        self.block_at = 0  # decompressed offset of its first row
        self.part_at = 0  # decompressed offset of that part's first row
        self.pending = False  # the part is cut off but its first bytes may be the terminator

    def remember(self, piece: Piece, sql_pos: int, keep_from: int) -> None:
        """The zlib state before `piece`, which starts at decompressed `sql_pos`; states
        before the one in force at `keep_from` (the first byte not routed) are dropped."""
        assert piece.before is not None
        self._snaps.append(_Snap(sql_pos, piece.start, piece.before))
        while len(self._snaps) > 1 and self._snaps[1].sql_pos <= keep_from:
            self._snaps.popleft()

    def last_label(self) -> str:
        return self.label or "a table"

    def open(
        self, table: bytes, header: bytes, rows_at: int, key: int | None, settings: bytes
    ) -> None:
        """A parallel COPY block whose first row is at decompressed `rows_at`."""
        seq = self._next_seq()
        self.in_block = True
        self.block_seq = seq
        self.label = table.decode("utf-8", "replace")
        self.part_at = self.block_at = rows_at
        self.block = self._part(seq, 1, seq, header)
        self.block.keys = frozenset({key if key is not None else -seq})
        self.block.settings = settings
        self._sink.add_copy(self.block)

    def _part(self, seq: int, part: int, block: int, header: bytes) -> Job:
        """A COPY part whose rows start at `part_at`."""
        at = self.part_at
        snap = next(s for s in reversed(self._snaps) if s.sql_pos <= at)
        start = max(snap.offset, self.scan_offset)  # the part before ends at scan_offset
        return Job(
            seq=seq,
            label=self.label,
            group=COPY,
            stage=0,
            settings=b"",
            header=header,
            block=block,
            part=part,
            checkpoint=Checkpoint(snap.offset, deflate.copy_state(snap.state), at - snap.sql_pos),
            start=start,
            pos=start,
        )

    def skip_rows(self, buf: bytes, base: int, pos: int, stop: int, end: int | None) -> None:
        """The scanner passed the rows buf[pos:stop] of the block (buf[0] is at decompressed
        `base`), and its terminator, which ends at `end`, when that is not None. The next
        part starts only once the bytes after a cut show that they are not the terminator."""
        sink, split = self._sink, self._split
        while True:
            if self.pending:
                if end is not None and base + end - 3 == self.part_at:
                    self.block = None  # the rows ended exactly at the cut: no part follows
                    self.pending = False
                    break
                if base + stop - self.part_at < 3:
                    break  # which it is shows in the next piece
                assert self.block is not None
                self.pending = False
                sink.add_copy(self.block)
            if not split:
                break
            limit = self.part_at + split - 1 - base  # the row end is at or after this
            cut = buf.find(b"\n", max(pos, limit), stop) if limit < stop else -1
            if cut < 0 or (end is not None and cut >= end - 4):  # no cut, or the terminator's
                break
            part = self.block
            assert part is not None
            part.size = base + cut + 1 - self.part_at
            sink.part_scanned(part, self.scan_offset)
            self.part_at = base + cut + 1
            self.block = self._part(self._next_seq(), part.part + 1, part.block, part.header)
            self.block.keys, self.block.settings = part.keys, part.settings
            self.pending = True
            pos = cut + 1
        sink.block_grew(self.block_seq, base + stop - self.block_at)
        part = self.block
        if part is not None and not self.pending:
            part.size = base + (end if end is not None else stop) - self.part_at
            if end is not None:
                sink.part_scanned(part, self.scan_offset)
        if end is not None:
            sink.block_closed(self.block_seq)
            self.in_block = False
            self.block = None
