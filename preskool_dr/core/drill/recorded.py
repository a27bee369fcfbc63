"""The drill entries that run journals recorded: which line of which log each drill wrote,
so a log cut after it is caught (`drill-log verify`, `check`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.drill.entry import LogRecord
from preskool_dr.core.restore.journal import JOURNAL_FOLDERS


@dataclass(frozen=True)
class JournalEntry:
    """A drill entry a run journal says it appended to a drill log."""

    run_id: str
    journal: Path
    sha256: str
    line: int | None  # None: written before journals recorded it
    log: Path | None  # None: written before journals recorded it (then: the default log)


def journal_entries(state_dir: Path, log: Path, default_log: Path) -> list[JournalEntry]:
    """The drill entries that run journals under `state_dir` recorded in `log`.

    A journal that names no log (written before journals did) counts for `default_log`.
    """
    target = log.resolve()
    found = []
    # read as plain JSON, not through RunJournal: a journal too damaged or too new to resume
    # still names the entry its run appended
    for folder in JOURNAL_FOLDERS:
        for path in sorted((state_dir / folder).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # not a journal (or unreadable): `restore --list-runs` reports it
            if not isinstance(data, dict):
                continue
            sha = data.get("drill_log_entry")
            if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
                continue
            named = data.get("drill_log_path")
            written_to = Path(named) if isinstance(named, str) and named else None
            if (written_to or default_log).resolve() != target:
                continue
            line = data.get("drill_log_line")
            run_id = data.get("run_id")
            found.append(
                JournalEntry(
                    run_id if isinstance(run_id, str) else path.stem,
                    path,
                    sha,
                    line if isinstance(line, int) and not isinstance(line, bool) else None,
                    written_to,
                )
            )
    return found


def lost_entries(records: list[LogRecord], recorded: list[JournalEntry]) -> list[JournalEntry]:
    """The journal-recorded entries that are no (complete) line of the log."""
    present = {r.sha256 for r in records if r.complete}
    return [entry for entry in recorded if entry.sha256 not in present]
