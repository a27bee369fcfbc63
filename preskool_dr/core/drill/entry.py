"""One line of the DR drill log: its format, canonical bytes and hash, and reading lines back.

The log is JSON Lines, append-only and hash-chained: every line names the SHA-256 of the
line before it (`prev_sha256`) and carries an SSH signature over its canonical JSON (the
contract's "Drill log"). Drill entries are `"type": "drill"`; a late signature (`"sign"`)
and the ops lead's countersignature (`"countersign"`) are lines of their own that name the
entry's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import DrError, NotFoundError, UsageError

LOG_VERSION = 1
ZERO_SHA256 = "0" * 64
DRILL, SIGN, COUNTERSIGN = "drill", "sign", "countersign"
# What the contract requires of a drill entry besides what append_entry adds itself.
DRILL_FIELDS = (
    "performed_by",
    "backup",
    "backup_md5",
    "incident_declared_at",
    "app_accessible_at",
    "rto_seconds",
    "rpo_seconds",
    "result",
    "steps",
)
ADDED_FIELDS = ("type", "version", "prev_sha256", "signer", "signature")
REQUIRED_FIELDS = {
    DRILL: ("version", "date", *DRILL_FIELDS, "prev_sha256", "signer", "signature"),
    SIGN: ("entry_sha256", "date", "prev_sha256", "signer", "signature"),
    COUNTERSIGN: ("entry_sha256", "date", "prev_sha256", "signer", "signature"),
}


@dataclass(frozen=True)
class LogRecord:
    """One line of the log as read: its bytes (without newline), hash and parsed object."""

    number: int  # 1-based
    raw: bytes
    sha256: str
    data: dict[str, Any] | None  # None when the line is not a JSON object
    error: str | None = None  # why data is None
    complete: bool = True  # False: the file ends without a newline after this line

    @property
    def type(self) -> str | None:
        value = self.data.get("type") if self.data else None
        return value if isinstance(value, str) else None

    def get(self, name: str) -> Any:
        return self.data.get(name) if self.data else None


def canonical_bytes(entry: Mapping[str, Any]) -> bytes:
    """What a signature covers: the entry without its `signature` key, canonical JSON."""
    body = {k: v for k, v in entry.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parse_log(content: bytes) -> list[LogRecord]:
    records: list[LogRecord] = []
    lines = content.split(b"\n")
    complete_count = len(lines) - 1  # the piece after the last newline is incomplete
    for index, raw in enumerate(lines):
        if index == complete_count and not raw:
            break
        data, error = _parse_line(raw)
        records.append(
            LogRecord(index + 1, raw, sha256_hex(raw), data, error, index < complete_count)
        )
    return records


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not raw.strip():
        return None, "empty line"
    try:
        data = json.loads(raw, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would let the bytes say one thing and the parsed entry another.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def read_log(path: Path) -> list[LogRecord]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"no drill log at {path}: a drill (`preskool-dr restore BACKUP --drill ...`) "
            "creates it; pass --drill-log PATH for another file"
        ) from None
    except OSError as exc:
        raise DrError(f"cannot read the drill log {path}: {exc.strerror}") from None
    return parse_log(content)


def require_log(path: Path) -> None:
    """Signing and repair need the log to exist already (they never create an empty one)."""
    if not path.exists():
        read_log(path)  # raises the NotFoundError with its hint


def find_entry(path: Path, records: list[LogRecord], ref: str) -> LogRecord:
    """A drill entry by line number (`3`, `#3`) or by a unique sha256 prefix (6+ hex)."""
    text = ref.strip().lstrip("#").lower()
    if text.isdigit() and len(text) < 6:
        number = int(text)
        if not 1 <= number <= len(records):
            raise NotFoundError(f"{path} has no line {number} (it has {len(records)} lines)")
        record = records[number - 1]
    elif re.fullmatch(r"[0-9a-f]{6,64}", text):
        matches = [r for r in records if r.sha256.startswith(text)]
        if not matches:
            raise NotFoundError(f"no line of {path} has a sha256 starting with {text}")
        if len(matches) > 1:
            lines = ", ".join(str(r.number) for r in matches)
            raise UsageError(f"sha256 prefix {text} matches lines {lines}: give more digits")
        record = matches[0]
    else:
        raise UsageError(
            f"ENTRY {ref!r} is neither a line number nor 6+ hex digits of an entry's sha256 "
            "(`preskool-dr drill-log show` prints both)"
        )
    if record.type != DRILL:
        what = f"a {record.type!r} line" if record.type else "not a valid entry"
        raise UsageError(f"line {record.number} of {path} is {what}, not a drill entry")
    return record


def signature_lines(records: list[LogRecord], target: LogRecord, kind: str) -> list[LogRecord]:
    """The `kind` lines (sign or countersign) that name `target`."""
    return [r for r in records if r.type == kind and r.get("entry_sha256") == target.sha256]


def log_head(records: list[LogRecord]) -> str | None:
    """The sha256 of the last complete line (what `--expect-head` is compared with)."""
    complete = [r for r in records if r.complete]
    return complete[-1].sha256 if complete else None


def iso(value: datetime) -> str:
    """ISO-8601 UTC to the second, with a Z: how the log writes times."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON values, so what is signed is exactly what a reader parses back."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return iso(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"drill entry value {value!r} is not JSON")

    result: dict[str, Any] = json.loads(json.dumps(dict(fields), default=convert, allow_nan=False))
    return result
