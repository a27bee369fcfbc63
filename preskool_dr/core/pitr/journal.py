"""A pitr run's journal: `<state dir>/pitr/<run_id>.json` (0600, atomic), written at each
step transition; a killed or interrupted run resumes from it (`pitr --resume RUN_ID`)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.events import utcnow
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.core.restore.journal import PITR_FOLDER, RunJournal, from_json

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


class PitrJournal(RunJournal[PitrState]):
    """The point-in-time recoveries' journals, `<state dir>/pitr/`."""

    folder = PITR_FOLDER
    what = "pitr journal"
    not_a_run_id = "{run_id!r} is not a pitr run id (the journals are in {folder})"
    missing = "no pitr run {run_id!r} in {folder}"
    unreadable = (
        "pitr journal {path} is unreadable ({error}): it cannot be resumed; empty its data "
        "directory and start a new pitr"
    )

    def decode(self, data: Any) -> PitrState:
        if not isinstance(data, dict) or data.get("mode") != "pitr":
            raise ValueError("not a pitr journal")
        state = from_json(PitrState, data)
        if set(state.steps) != {sid for sid, _ in STEPS}:
            raise ValueError("its steps are not the seven this version runs")
        return state


def journal_path(state_dir: Path, run_id: str) -> Path:
    return PitrJournal(state_dir).path(run_id)


def resume_command(state: PitrState) -> str:
    return f"preskool-dr pitr --resume {state.run_id} --confirm {shlex.quote(state.data_dir)}"
