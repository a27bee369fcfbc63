"""The gzip file in decompressed pieces, and where a COPY block's rows end.

The scanner inflates the whole file once and keeps a copy of the zlib state before every
piece (`snapshots`), so that a session can later inflate one COPY part on its own from a
`Checkpoint`. Pure code: no PostgreSQL, no processes, no threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from preskool_dr.core.base import deflate
from preskool_dr.core.base.deflate import Decompress
from preskool_dr.core.base.errors import VerificationError
from preskool_dr.core.restore.loaders.stream import PIECE, READ_CHUNK

TERMINATOR = b"\n\\.\n"  # ends a COPY block; its first newline may be the header's own


@dataclass(frozen=True)
class Checkpoint:
    """Where a session starts inflating a COPY part on its own."""

    offset: int  # compressed byte to read from
    inflater: Decompress  # the zlib state before that byte (a private copy)
    skip: int  # decompressed bytes to drop before the part's first row


@dataclass(frozen=True)
class Piece:
    data: bytes
    start: int  # compressed offset of the input this piece came from
    end: int  # compressed offset after it
    before: Decompress | None  # the zlib state at `start` (scanner only)


def inflate(
    f: IO[bytes], inflater: Decompress, offset: int, name: str, *, snapshots: bool
) -> Iterator[Piece]:
    """Decompressed pieces of at most PIECE bytes from compressed `offset` on, member after
    member (like gunzip). VerificationError on corrupt or truncated data."""
    in_member = False
    while chunk := f.read(READ_CHUNK):
        chunk_end = offset + len(chunk)
        data = chunk
        while data:
            if inflater.eof:
                inflater = deflate.decompressor()
            in_member = True
            start = chunk_end - len(data)
            before = deflate.copy_state(inflater) if snapshots else None
            try:
                out = inflater.decompress(data, PIECE)
            except deflate.error as exc:
                raise VerificationError(
                    f"{name} is corrupt at compressed byte {start:,} ({exc}): the load was "
                    "stopped; check it with `preskool-dr verify` and restore another backup"
                ) from None
            if inflater.eof:
                in_member = False
                data = inflater.unused_data
            else:
                data = inflater.unconsumed_tail
            yield Piece(out, start, chunk_end - len(data), before)
        offset = chunk_end
    if in_member:
        raise VerificationError(
            f"{name} ends in the middle of its gzip data (truncated at {offset:,} bytes): the "
            "load was stopped; pick another backup (`preskool-dr list`) and run the restore again"
        )


class BlockEnd:
    """Finds the COPY terminator, also when it is split between pieces. `after_newline`:
    the first byte searched starts a line (a part's first row), so `\\.` there ends it."""

    def __init__(self, *, after_newline: bool = False) -> None:
        self._tail = b"\n" if after_newline else b""  # the last bytes searched

    def find(self, data: bytes, start: int = 0) -> int:
        """The index in `data` just after the terminator (searching from `start`), or -1."""
        if self._tail:
            joined = self._tail + data[start : start + len(TERMINATOR) - 1]
            i = joined.find(TERMINATOR)
            if i >= 0:
                end = start + i + len(TERMINATOR) - len(self._tail)
                self._tail = b""
                return end
        i = data.find(TERMINATOR, start)
        if i >= 0:
            self._tail = b""
            return i + len(TERMINATOR)
        keep = len(TERMINATOR) - 1
        self._tail = (self._tail + data[max(start, len(data) - keep) :])[-keep:]
        return -1
