"""The incident timeline for the postmortem, built from a run's journal.

`preskool-dr restore --report RUN_ID` prints it (markdown or JSON) and the TUI writes it
to `<state dir>/reports/<run_id>.md` when a run finishes. Everything here is read from the
journal (RunState), which holds no secret; child output is redacted once more anyway, as a
report is the file most likely to be pasted into a ticket.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.paths import open_private_file, secure_state_subdir
from preskool_dr.core.base.procs import redact
from preskool_dr.core.base.settings import Thresholds
from preskool_dr.core.restore.journal import RunState, StepRecord

OUTPUT_TAIL_LINES = 3  # of a step's child output: enough to see why it failed


@dataclass
class StepLine:
    """One row of the timeline."""

    id: str
    number: int
    title: str
    started_at: str | None  # ISO-8601 UTC
    finished_at: str | None
    elapsed_seconds: float | None
    result: str  # the step's status: done, failed, skipped, running, pending
    performed_by: str
    detail: str
    skip_reason: str | None
    output_tail: list[str]


@dataclass
class RunReport:
    """The whole timeline; `to_json()` is the contract's JSON form."""

    run_id: str
    mode: str  # restore | drill
    drill: bool
    result: str
    operator: str
    tool_host: str
    target: str  # db@host:port
    incident_declared_at: str
    app_accessible_at: str | None
    finished_at: str | None
    backup: str | None  # the backup's name (as in the drill log)
    backup_md5: str | None
    backup_time: str | None
    backup_location: str | None
    rto_seconds: float
    rto_target_seconds: float
    rto_met: bool
    rpo_seconds: float | None
    rpo_target_seconds: float
    rpo_met: bool | None
    recreate_mode: str  # aside | drop
    aside_db: str | None
    aside_state: str | None
    drill_log_entry: str | None
    drill_log_path: str | None
    drill_log_line: int | None
    notes: list[str]
    steps: list[StepLine]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_report(state: RunState, thresholds: Thresholds) -> RunReport:
    rto_target = thresholds.rto_minutes * 60
    rpo_target = thresholds.rpo_hours * 3600
    rpo = state.rpo_seconds
    backup = state.backup
    return RunReport(
        run_id=state.run_id,
        mode=state.mode,
        drill=state.mode == "drill",
        result=state.result,
        operator=state.operator,
        tool_host=state.tool_host,
        target=state.target_label,
        incident_declared_at=_iso(state.incident_declared_at),
        app_accessible_at=_iso_or_none(state.app_accessible_at),
        finished_at=_iso_or_none(state.finished_at),
        backup=backup.name if backup else None,
        backup_md5=backup.md5 if backup else None,
        backup_time=_iso(backup.time) if backup else None,
        backup_location=(backup.location or backup.local_path or backup.s3_url) if backup else None,
        rto_seconds=round(state.rto_seconds, 3),
        rto_target_seconds=rto_target,
        rto_met=state.app_accessible_at is not None and state.rto_seconds <= rto_target,
        rpo_seconds=None if rpo is None else round(rpo, 3),
        rpo_target_seconds=rpo_target,
        rpo_met=None if rpo is None else rpo <= rpo_target,
        recreate_mode=state.recreate_mode,
        aside_db=state.aside_db,
        aside_state=state.aside_state,
        drill_log_entry=state.drill_log_entry,
        drill_log_path=state.drill_log_path,
        drill_log_line=state.drill_log_line,
        notes=[redact(note) for note in state.notes],
        steps=[_step_line(record, state.operator) for record in state.steps],
    )


def _step_line(record: StepRecord, operator: str) -> StepLine:
    elapsed = record.elapsed_seconds if record.finished_at else None
    return StepLine(
        id=record.id,
        number=record.number,
        title=record.title,
        started_at=_iso_or_none(record.started_at),
        finished_at=_iso_or_none(record.finished_at),
        elapsed_seconds=None if elapsed is None else round(elapsed, 3),
        result=record.status.value,
        # The journal names one operator per run: whoever ran it ran every step.
        performed_by=operator,
        detail=redact(record.detail),
        skip_reason=record.skip_reason,
        output_tail=[redact(line) for line in record.output[-OUTPUT_TAIL_LINES:]],
    )


# ---------------------------------------------------------------- markdown


def to_markdown(report: RunReport) -> str:
    kind = "Drill" if report.drill else "Restore"
    lines = [
        f"# {kind} run {report.run_id}: {report.result}",
        "",
        f"- Target: {report.target} ({_recreate_text(report)})",
        f"- Operator: {report.operator or '(not recorded)'} on {report.tool_host}",
        f"- Drill: {'yes' if report.drill else 'no'}",
        f"- Incident declared: {_utc(report.incident_declared_at)}",
        f"- App accessible: {_utc(report.app_accessible_at)}",
        f"- Backup: {_backup_text(report)}",
        f"- RTO: {_rto_text(report)}",
        f"- RPO: {_rpo_text(report)}",
        f"- Old database: {_aside_text(report)}",
    ]
    if report.drill:
        lines.append(f"- Drill log: {_drill_log_text(report)}")
    lines += [
        "",
        "## Timeline (UTC)",
        "",
        "| # | Step | Started | Finished | Took | By | Result | Summary |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in report.steps:
        took = "" if step.elapsed_seconds is None else clock(step.elapsed_seconds)
        lines.append(
            f"| {step.number} | {_cell(step.title)} | {_human(step.started_at, '')} "
            f"| {_human(step.finished_at, '')} | {took} | {_cell(step.performed_by)} "
            f"| {step.result} | {_cell(_summary(step))} |"
        )
    failed = [s for s in report.steps if s.result == "failed" and s.output_tail]
    for step in failed:
        lines += ["", f"### Step {step.number} output (last lines)", "", "```"]
        lines += step.output_tail
        lines.append("```")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def clock(seconds: float) -> str:
    """`1:02:03`: the runbook states the RTO in hours and minutes."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _backup_text(report: RunReport) -> str:
    if report.backup is None:
        return "none chosen"
    text = f"`{report.backup}` (MD5 {report.backup_md5 or 'not verified'}"
    if report.backup_time:
        text += f", taken {_utc(report.backup_time)}"
    if report.backup_location:
        text += f", from {report.backup_location}"
    return text + ")"


def _rto_text(report: RunReport) -> str:
    target = f"against a target of {clock(report.rto_target_seconds)}"
    if report.app_accessible_at is None:  # RTO counts until the app is back
        over = " (MISSED)" if report.rto_seconds > report.rto_target_seconds else ""
        return f"{clock(report.rto_seconds)} and the app is not back, {target}{over}"
    return f"{clock(report.rto_seconds)} {target} ({'met' if report.rto_met else 'MISSED'})"


def _rpo_text(report: RunReport) -> str:
    if report.rpo_seconds is None:
        return f"unknown (no backup chosen), target {clock(report.rpo_target_seconds)}"
    verdict = "met" if report.rpo_met else "MISSED"
    return (
        f"{clock(report.rpo_seconds)} of data at most against a target of "
        f"{clock(report.rpo_target_seconds)} ({verdict})"
    )


def _recreate_text(report: RunReport) -> str:
    if report.recreate_mode == "aside":
        return "old database kept aside"
    return "old database dropped"


def _aside_text(report: RunReport) -> str:
    if report.aside_db is None:
        return "not kept aside" if report.recreate_mode == "drop" else "nothing set aside yet"
    return f"`{report.aside_db}` ({report.aside_state or 'planned'})"


def _drill_log_text(report: RunReport) -> str:
    if report.drill_log_entry is None:
        return "not recorded yet"
    where = f"{report.drill_log_path}, line {report.drill_log_line}"
    return f"entry {report.drill_log_entry[:16]}… ({where})"


def _summary(step: StepLine) -> str:
    if step.result == "skipped" and step.skip_reason:
        return f"skipped: {step.skip_reason}"
    return step.detail


def _cell(text: str) -> str:
    """A table cell: one line, no column break."""
    return " ".join(text.split()).replace("|", "\\|")


# ---------------------------------------------------------------- the file the TUI writes


def report_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "reports" / f"{run_id}.md"


def write_markdown(state_dir: Path, state: RunState, thresholds: Thresholds) -> Path:
    """`<state dir>/reports/<run_id>.md`, mode 0600, replaced when written again (a resumed
    run that finishes later). Refuses a symlink or a foreign file planted at that name."""
    path = report_path(state_dir, state.run_id)
    secure_state_subdir(path.parent)
    text = to_markdown(build_report(state, thresholds)).encode()
    fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "run report")
    with os.fdopen(fd, "wb") as handle:
        handle.write(text)
    return path


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


def _utc(iso: str | None) -> str:
    return "not yet" if iso is None else f"{_human(iso)} UTC"


def _human(iso: str | None, missing: str = "not yet") -> str:
    """`2026-02-20 04:12:33`: the table says UTC once in its heading."""
    return missing if iso is None else iso.replace("T", " ").removesuffix("Z")
