"""WAL file names as PostgreSQL archives them: segments (timeline, log id, segment number),
timeline history, backup history and .partial files; and LSNs, the byte positions in the WAL."""

from __future__ import annotations

import re
from dataclasses import dataclass

from preskool_dr.core.base.errors import UsageError

_LOG_SPAN = 0x1_0000_0000  # bytes of WAL per "log id" (the middle 8 hex digits of a name)
# Patterns are used with fullmatch only: `$` would also match before a trailing newline.
_SEGMENT_RE = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
# Segments, timeline history files, backup history files, and the .partial segment a
# promotion leaves: everything archive_command is ever given.
NAME_RE = re.compile(r"[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history")


def check_name(name: str) -> str:
    """A WAL file name as PostgreSQL archives it; anything else (e.g. `../x`) is refused."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a WAL file name (24 hex digits, a .history, .backup or .partial "
            "file): pass %p to wal-push and %f %p to wal-fetch"
        )
    return name


def parse_lsn(text: str) -> int:
    """`0/3000028` -> byte position in the WAL."""
    high, _, low = text.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r}") from None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment file name, `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, log id, segment."""

    timeline: int
    log: int
    seg: int

    @classmethod
    def parse(cls, name: str) -> Segment | None:
        match = _SEGMENT_RE.fullmatch(name)
        if match is None:
            return None
        return cls(*(int(group, 16) for group in match.groups()))

    @classmethod
    def at(cls, timeline: int, number: int, segment_size: int) -> Segment:
        per_log = _LOG_SPAN // segment_size
        return cls(timeline, number // per_log, number % per_log)

    @classmethod
    def for_lsn(cls, timeline: int, lsn: str, segment_size: int) -> Segment:
        """The segment holding the byte at `lsn`."""
        return cls.at(timeline, parse_lsn(lsn) // segment_size, segment_size)

    @staticmethod
    def timeline_of(name: str) -> int:
        """The timeline of a segment name (the first 8 hex digits)."""
        return int(name[:8], 16)

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    def number(self, segment_size: int) -> int:
        """Position in the WAL counted in segments, independent of the timeline."""
        return self.log * (_LOG_SPAN // segment_size) + self.seg
