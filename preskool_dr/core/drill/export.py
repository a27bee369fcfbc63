"""The drill log read back for people: one summary per drill, and the seed runbook's
"DR Drill Log" Markdown table (`drill-log show` and `drill-log export`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from preskool_dr.core.base.safe_text import escape_control
from preskool_dr.core.drill.entry import COUNTERSIGN, DRILL, SIGN, LogRecord, signature_lines

MARKDOWN_HEADER = "| Date | Performed By | Backup Used | RTO Achieved | RPO Window | Result |"
MARKDOWN_SEPARATOR = "|------|-------------|-------------|--------------|------------|--------|"


@dataclass(frozen=True)
class DrillSummary:
    """A drill entry with who signed it, as recorded (see verify.verify_log for what holds)."""

    line: int
    sha256: str
    entry: dict[str, Any]
    signed_by: str | None  # own signature, or the signer of a later `sign` line
    countersigned_by: tuple[str, ...]

    def get(self, name: str) -> Any:
        return self.entry.get(name)

    @property
    def rto_seconds(self) -> float | None:
        return _seconds(self.entry.get("rto_seconds"))

    @property
    def rpo_seconds(self) -> float | None:
        return _seconds(self.entry.get("rpo_seconds"))


def summarize(records: list[LogRecord]) -> list[DrillSummary]:
    result = []
    for record in records:
        if record.type != DRILL or record.data is None:
            continue
        signed_by = record.data.get("signer") if record.data.get("signature") else None
        if signed_by is None:
            late = signature_lines(records, record, SIGN)
            signed_by = late[0].get("signer") if late else None
        counter = tuple(str(r.get("signer")) for r in signature_lines(records, record, COUNTERSIGN))
        result.append(DrillSummary(record.number, record.sha256, record.data, signed_by, counter))
    return result


def format_duration(seconds: float | None) -> str:
    """`1 h 12 m`, `42 m`, `35 s`; whole units, rounded down (never flatters an RTO)."""
    if seconds is None:
        return "n/a"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m"
    return f"{secs} s"


def entry_day(entry: Mapping[str, Any]) -> str:
    """The entry's `date` as YYYY-MM-DD (UTC), or the text as written if it is not a time."""
    text = str(entry.get("date") or "")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).strftime("%Y-%m-%d")


def export_markdown(records: list[LogRecord]) -> str:
    """The seed runbook's DR Drill Log table, one row per drill, ready to paste."""
    rows = [MARKDOWN_HEADER, MARKDOWN_SEPARATOR]
    for drill in summarize(records):
        cells = (
            _cell(entry_day(drill.entry)),
            _cell(drill.get("performed_by")),
            _cell(drill.get("backup")),
            format_duration(drill.rto_seconds),
            format_duration(drill.rpo_seconds),
            _cell(drill.get("result")),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(value: Any) -> str:
    # The log's fields are untrusted text: one line, no `|` breaking the table, and no
    # control characters (an escape sequence would repaint the terminal showing it).
    text = "" if value is None else str(value)
    return escape_control(" ".join(text.split()).replace("|", "\\|"))


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
