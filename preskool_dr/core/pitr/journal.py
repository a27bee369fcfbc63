"""A pitr run's journal: `<state dir>/pitr/<run_id>.json` (0600, atomic), written at each
step transition; a killed or interrupted run resumes from it (`pitr --resume RUN_ID`)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import NotFoundError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.core.restore.journal import parse_time
from preskool_dr.core.storage import catalog

# ---------------------------------------------------------------- the journal


@dataclass
class PitrState:
    """`<state dir>/pitr/<run_id>.json`: what was asked, chosen and reached."""

    run_id: str
    created_at: datetime
    operator: str
    target: datetime
    incident: datetime
    data_dir: str
    port: int
    base_backup: str
    range_start: datetime
    range_end: datetime | None
    server_log: str
    steps: dict[str, str]  # step id -> pending/running/done/failed
    details: dict[str, str] = field(default_factory=dict)
    result: str = "running"  # running | done | failed | interrupted
    server_running: bool = False
    stop_point: datetime | None = None  # the first transaction after the target: not replayed
    recovery_end: datetime | None = None  # the last transaction replayed
    timeline: int | None = None
    rpo_seconds: float | None = None
    finished_at: datetime | None = None
    notes: list[str] = field(default_factory=list)
    mode: str = "pitr"
    version: int = 1
    backup_md5: str | None = None  # of the base backup's base.tar.gz (its meta.json's md5)
    tool_host: str = ""
    declared_at: datetime | None = None  # the run started (incident declared): RTO from here
    accepting_at: datetime | None = None  # the recovered server took read-write connections
    step_seconds: dict[str, float] = field(default_factory=dict)
    drill: bool = False
    validation: list[dict[str, Any]] = field(default_factory=list)  # drill: restore-test checks
    drill_log_entry: str | None = None  # sha256 of the drill-log line written for this run
    drill_log_line: int | None = None  # its line number, and the log it went to: so a log
    drill_log_path: str | None = None  # cut after it is caught (drill-log verify, check)
    server_python: str = ""  # what restore_command runs wal-fetch with
    pid: int | None = None  # the preskool-dr process running it, to refuse a second resume

    @property
    def rto_seconds(self) -> float:
        start = self.declared_at or self.created_at
        end = self.accepting_at or self.finished_at or utcnow()
        return max(0.0, (end - start).total_seconds())

    def failed_step(self) -> str | None:
        return next((s for s, status in self.steps.items() if status == "failed"), None)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: catalog.iso_utc(v) if isinstance(v, datetime) else v for k, v in data.items()}

    @classmethod
    def from_json(cls, data: Any) -> PitrState:
        """TypeError/ValueError when `data` is not a journal this version wrote."""
        if not isinstance(data, dict) or data.get("mode") != "pitr":
            raise ValueError("not a pitr journal")
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {
            key: parse_time(value) if key in _STATE_TIMES and isinstance(value, str) else value
            for key, value in data.items()
            if key in names  # a newer version's extra fields: ignored, as for restore journals
        }
        state = cls(**values)
        if set(state.steps) != {sid for sid, _ in STEPS}:
            raise ValueError("its steps are not the seven this version runs")
        return state


_STATE_TIMES = {
    "created_at",
    "target",
    "incident",
    "range_start",
    "range_end",
    "stop_point",
    "recovery_end",
    "finished_at",
    "declared_at",
    "accepting_at",
}
_RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")  # fullmatch: `$` allows a trailing newline


def journal_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "pitr" / f"{run_id}.json"


def load_state(state_dir: Path, run_id: str) -> PitrState:
    """A pitr run's journal; NotFoundError (exit 2) naming the folder when there is none."""
    folder = state_dir / "pitr"
    if not _RUN_ID.fullmatch(run_id):
        raise NotFoundError(f"{run_id!r} is not a pitr run id (the journals are in {folder})")
    path = journal_path(state_dir, run_id)
    try:
        return PitrState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise NotFoundError(f"no pitr run {run_id!r} in {folder}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise NotFoundError(
            f"pitr journal {path} is unreadable ({exc}): it cannot be resumed; empty its data "
            "directory and start a new pitr"
        ) from None


def resume_command(state: PitrState) -> str:
    return f"preskool-dr pitr --resume {state.run_id} --confirm {shlex.quote(state.data_dir)}"
