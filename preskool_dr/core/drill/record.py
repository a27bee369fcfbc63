"""A DR drill (runbook section 4) on top of a restore run: its verdict and its signed entry.

The drill checklist maps onto the engine's steps: trigger = step 2 (identify), download =
step 3, verify = step 4, restore to the DR target = steps 5-6, validate = the smoke checks
run at the end of step 6, RTO/RPO = the run's clock, sign-off = the drill-log entry.

A point-in-time recovery drill (`pitr --drill`) goes through the same verdict and entry:
its RPO comes from the last transaction the recovered server replayed and is judged
against `thresholds.rpo_wal_hours` (1 h) instead of the daily dump's 24 h.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base import database
from preskool_dr.core.base.settings import Thresholds
from preskool_dr.core.drill.append import AppendResult, append_entry
from preskool_dr.core.drill.signing import SigningKey
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.core.restore.engine import Engine


@dataclass(frozen=True)
class Verdict:
    """RTO and RPO achieved against the runbook's targets."""

    rto_seconds: float
    rto_target_seconds: float
    rpo_seconds: float | None
    rpo_target_seconds: float
    result: str  # "pass" | "fail"

    @property
    def rto_ok(self) -> bool:
        return self.rto_seconds <= self.rto_target_seconds

    @property
    def rpo_ok(self) -> bool:
        return self.rpo_seconds is not None and self.rpo_seconds <= self.rpo_target_seconds


@dataclass(frozen=True)
class Outcome:
    """What one drill achieved, however it restored (the nine-step engine, or point-in-time
    recovery): the verdict and the drill-log entry are built from this alone, so both kinds
    of drill share one path into the log."""

    run_id: str
    run_result: str  # the run's own result: done, failed, interrupted...
    backup: str | None
    backup_md5: str | None
    backup_time: datetime | None
    incident_declared_at: datetime
    app_accessible_at: datetime | None
    rto_seconds: float
    rpo_seconds: float | None
    rpo_target_seconds: float  # 24 h with daily dumps, 1 h with WAL archiving
    target: str
    tool_host: str
    steps: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)  # what this kind of drill adds


DrillRun = Engine | PitrRun


def outcome(run: DrillRun) -> Outcome:
    return _pitr_outcome(run) if isinstance(run, PitrRun) else _engine_outcome(run)


def _engine_outcome(engine: Engine) -> Outcome:
    state = engine.state
    return Outcome(
        run_id=state.run_id,
        run_result=state.result,
        backup=state.backup.name if state.backup else None,
        backup_md5=state.backup.md5 if state.backup else None,
        backup_time=state.backup.time if state.backup else None,
        incident_declared_at=state.incident_declared_at,
        app_accessible_at=state.app_accessible_at,
        rto_seconds=state.rto_seconds,
        rpo_seconds=state.rpo_seconds,
        rpo_target_seconds=engine.config.thresholds.rpo_hours * 3600,
        target=state.target_label,
        tool_host=state.tool_host,
        steps=[
            {
                "id": s.id,
                "status": s.status.value,
                "seconds": round(s.elapsed_seconds or 0, 1),
                "detail": s.detail,
            }
            for s in state.steps
        ],
        validation=state.validation,
    )


def _pitr_outcome(run: PitrRun) -> Outcome:
    """RPO: the incident (default the target) minus the last transaction the recovered
    server replayed; RTO: the run's start until that server accepted read-write
    connections (promoted)."""
    state = run.state
    if state is None:
        raise ValueError("the point-in-time recovery was refused before it started")
    return Outcome(
        run_id=state.run_id,
        run_result=state.result,
        backup=state.base_backup,
        backup_md5=state.backup_md5,
        backup_time=state.range_start,
        incident_declared_at=state.declared_at or state.created_at,
        app_accessible_at=state.accepting_at,
        rto_seconds=state.rto_seconds,
        rpo_seconds=state.rpo_seconds,
        rpo_target_seconds=run.config.thresholds.rpo_wal_hours * 3600,
        target=f"{run.config.database.name}@localhost:{state.port} ({state.data_dir})",
        tool_host=state.tool_host,
        steps=[
            {
                "id": step_id,
                "status": state.steps[step_id],
                "seconds": round(state.step_seconds.get(step_id, 0.0), 1),
                "detail": state.details.get(step_id, ""),
            }
            for step_id, _ in STEPS
        ],
        validation=state.validation,
        extra={
            "method": "pitr",
            # To the microsecond (the log's own times are to the second): these are what
            # the RPO was computed from, and a target may fall within a second of them.
            "target_time": _precise(state.target),
            "incident_time": _precise(state.incident),
            "recovered_to": _precise(state.recovery_end),
            "first_not_replayed": _precise(state.stop_point),
            "timeline": state.timeline,
        },
    )


def _precise(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at is not None else None


def judge(result: Outcome, thresholds: Thresholds) -> Verdict:
    rto_target = thresholds.rto_minutes * 60
    validated = bool(result.validation) and all(c.get("ok") for c in result.validation)
    passed = (
        result.run_result == "done"
        and validated
        and result.rto_seconds <= rto_target
        and result.rpo_seconds is not None
        and result.rpo_seconds <= result.rpo_target_seconds
    )
    return Verdict(
        result.rto_seconds,
        rto_target,
        result.rpo_seconds,
        result.rpo_target_seconds,
        "pass" if passed else "fail",
    )


def verdict(run: DrillRun) -> Verdict:
    return judge(outcome(run), run.config.thresholds)


def entry_fields(run: DrillRun, performed_by: str) -> dict[str, Any]:
    """The drill-log entry for this run (the contract's fields and what an auditor needs)."""
    result = outcome(run)
    v = judge(result, run.config.thresholds)
    return {
        "performed_by": performed_by,
        "backup": result.backup,
        "backup_md5": result.backup_md5,
        "backup_time": result.backup_time,
        "incident_declared_at": result.incident_declared_at,
        "app_accessible_at": result.app_accessible_at,
        "rto_seconds": round(v.rto_seconds),
        "rto_target_seconds": round(v.rto_target_seconds),
        "rto_ok": v.rto_ok,
        "rpo_seconds": round(v.rpo_seconds) if v.rpo_seconds is not None else None,
        "rpo_target_seconds": round(v.rpo_target_seconds),
        "rpo_ok": v.rpo_ok,
        "result": v.result,
        "run_id": result.run_id,
        "run_result": result.run_result,
        "target": result.target,
        "tool_host": result.tool_host,
        "steps": result.steps,
        "validation": result.validation,
        **result.extra,
    }


def record(
    run: DrillRun,
    *,
    performed_by: str,
    signer: str | None,
    key: SigningKey | None,
    log_path: Path | None = None,
    interactive: bool = False,
) -> AppendResult:
    """Append (and sign when a key is there) this run's entry; remember it in the journal."""
    path = log_path or run.config.drill_log_path
    result = append_entry(
        path,
        entry_fields(run, performed_by),
        signer=signer or performed_by,
        key=key,
        interactive=interactive,
    )
    # The journal keeps which line of which log holds this drill: `drill-log verify` and
    # `check` then notice when the log's tail is cut or the file replaced.
    log = path.absolute()
    if isinstance(run, PitrRun):
        run.remember_drill_entry(result.sha256, result.line, log)
    else:
        run.state.drill_log_entry = result.sha256
        run.state.drill_log_line = result.line
        run.state.drill_log_path = str(log)
        run.save()
    return result


def drop_drill_database(engine: Engine) -> None:
    """`--drop-after`: the drill copy goes once the entry is written."""
    with database.connect(engine.config.database, admin=True) as conn:
        database.block_and_terminate(conn, engine.state.target_db)
        database.drop_database(conn, engine.state.target_db)
