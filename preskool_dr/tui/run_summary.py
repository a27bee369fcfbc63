"""What a run came to, in words: the end-of-run summary panel's lines and the two or three
lines printed to the shell when the TUI exits. Read from the journal (RunState) only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.settings import Thresholds
from preskool_dr.core.restore.engine import HEADLESS_ORDER
from preskool_dr.core.restore.journal import Journal, RunState
from preskool_dr.core.restore.report import build_report, report_path
from preskool_dr.tui.format import clock, hms, hours_minutes, step_line

SETTLED_OR_FAILED = (StepStatus.DONE, StepStatus.SKIPPED, StepStatus.FAILED)


@dataclass(frozen=True)
class RunFiles:
    """Where the run is written down: its journal, and its report once one was written."""

    journal: Path
    report: Path | None

    @classmethod
    def of(cls, state_dir: Path, run_id: str) -> RunFiles:
        report = report_path(state_dir, run_id)
        return cls(Journal(state_dir).path(run_id), report if report.exists() else None)


def _met(ok: bool | None) -> str:
    return "met" if ok else "MISSED" if ok is not None else "not measured"


def rto_line(state: RunState, thresholds: Thresholds) -> str:
    report = build_report(state, thresholds)
    return (
        f"RTO {hms(state.rto_seconds)}, target {clock(report.rto_target_seconds)}: "
        f"{_met(report.rto_met)}"
    )


def rpo_line(state: RunState, thresholds: Thresholds) -> str:
    report = build_report(state, thresholds)
    if state.rpo_seconds is None:
        return "RPO not known (no backup chosen)"
    return (
        f"RPO {hours_minutes(state.rpo_seconds)}, target {thresholds.rpo_hours:g} h: "
        f"{_met(report.rpo_met)}"
    )


def checks_line(state: RunState) -> str:
    """`checks 5 of 5 passed: checksum, row counts, health`: what proved the restore."""
    passed = failed = 0
    for check in state.validation:
        if check.get("ok"):
            passed += 1
        else:
            failed += 1
    for step_id in ("verify", "health"):
        status = state.step(step_id).status
        if status is StepStatus.DONE:
            passed += 1
        elif status is StepStatus.FAILED:
            failed += 1
    total = passed + failed
    return f"checks {passed} of {total} passed (checksum, restored tables, health)"


def aside_lines(state: RunState) -> list[str]:
    """The old database kept aside, and the commands that drop it or bring it back."""
    if state.aside_db is None:
        if state.recreate_mode == "drop":
            return ["old database dropped (drop mode): no aside copy"]
        return []
    if state.aside_state == "dropped":
        return [f"aside copy {state.aside_db} dropped"]
    if state.aside_state == "rolled-back":
        return [f"rolled back: {state.aside_db} is {state.target_db} again"]
    return [
        f"aside copy {state.aside_db} kept",
        f"  drop: preskool-dr restore --drop-aside {state.run_id} --confirm {state.aside_db}",
        f"  undo: preskool-dr restore --rollback {state.run_id} --confirm {state.target_db}",
    ]


def summary_lines(state: RunState, thresholds: Thresholds, files: RunFiles) -> list[str]:
    """The end-of-run panel, top to bottom."""
    kind = "Drill" if state.mode == "drill" else "Restore"
    lines = [f"{kind} run {state.run_id}: {state.result}"]
    lines += [rto_line(state, thresholds), rpo_line(state, thresholds), checks_line(state)]
    if state.backup is not None:
        lines.append(f"backup {state.backup.name}")
    aside = aside_lines(state)
    if state.aside_state == "renamed":
        aside.insert(1, "  d drops it now (asks its name), or:")
    lines += aside
    lines.append(f"journal {files.journal}")
    if files.report is not None:
        lines.append(f"report  {files.report}")
    return lines


def history(state: RunState) -> list[tuple[datetime, str, str]]:
    """The run so far as the log panel showed it, rebuilt from the journal for a resumed
    run: (when, source, text) for the incident and each step's start and end, oldest first."""
    lines: list[tuple[datetime, str, str]] = []
    when = state.incident_declared_at
    if when is not None:
        lines.append((when, "run", f"incident declared at {when:%Y-%m-%d %H:%M:%S} UTC"))
    for record in state.steps:
        source = f"step {record.number}"
        if record.started_at is not None:
            running = step_line(record.title, StepStatus.RUNNING, "")
            lines.append((record.started_at, source, running))
        ended = record.finished_at or record.started_at
        if record.status in SETTLED_OR_FAILED and ended is not None:
            lines.append((ended, source, step_line(record.title, record.status, record.detail)))
    lines.sort(key=lambda line: line[0])  # stable: a step's start stays before its end
    return lines


def resume_command(state: RunState, target_option: str | None) -> str:
    """How to take the run up again: the TUI offers it at start (same mode and target)."""
    command = "preskool-dr tui"
    if state.mode == "drill":
        command += " --drill"
    if target_option:
        command += f" --target-db {target_option}"
    return command


def _where_it_stopped(state: RunState) -> str:
    failed = [r for r in state.steps if r.status is StepStatus.FAILED]
    if failed:
        return f"step {failed[0].number} {failed[0].title} failed"
    running = [r for r in state.steps if r.status is StepStatus.RUNNING]
    if running:
        return f"interrupted during step {running[0].number} {running[0].title}"
    pending = next((state.step(s) for s in HEADLESS_ORDER if not state.step(s).settled), None)
    if pending is None:
        return "every step settled"
    return f"stopped before step {pending.number} {pending.title}"


def exit_lines(
    state: RunState | None,
    thresholds: Thresholds,
    files: RunFiles | None,
    target_option: str | None,
) -> list[str]:
    """What is printed to the shell when the TUI exits: the outcome, where it is written
    down, and the command that comes next (resume, or drop the aside copy)."""
    if state is None or files is None:
        return ["preskool-dr: no run was started."]
    head = f"preskool-dr: run {state.run_id}"
    if state.finished:
        lines = [f"{head} {state.result} · {rto_line(state, thresholds)}"]
        lines.append(f"  report: {files.report}" if files.report else f"  journal: {files.journal}")
        kept = aside_lines(state)
        if state.aside_state == "renamed" and len(kept) > 1:
            lines.append(kept[1])
        return lines
    return [
        f"{head} is unfinished: {_where_it_stopped(state)}",
        f"  journal: {files.journal}",
        f"  resume: {resume_command(state, target_option)}",
    ]
