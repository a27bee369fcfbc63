"""A DR drill (runbook section 4) on top of a restore run: its verdict and its signed entry.

The drill checklist maps onto the engine's steps: trigger = step 2 (identify), download =
step 3, verify = step 4, restore to the DR target = steps 5-6, validate = the smoke checks
run at the end of step 6, RTO/RPO = the run's clock, sign-off = the drill-log entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preskool_dr.core import database, drill_log
from preskool_dr.core.engine import Engine
from preskool_dr.core.signing import SigningKey


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


def verdict(engine: Engine) -> Verdict:
    state, thresholds = engine.state, engine.config.thresholds
    rto_target = thresholds.rto_minutes * 60
    rpo_target = thresholds.rpo_hours * 3600
    validated = bool(state.validation) and all(c.get("ok") for c in state.validation)
    passed = (
        state.result == "done"
        and validated
        and state.rto_seconds <= rto_target
        and state.rpo_seconds is not None
        and state.rpo_seconds <= rpo_target
    )
    return Verdict(
        state.rto_seconds, rto_target, state.rpo_seconds, rpo_target, "pass" if passed else "fail"
    )


def entry_fields(engine: Engine, performed_by: str) -> dict[str, Any]:
    """The drill-log entry for this run (the contract's fields and what an auditor needs)."""
    state = engine.state
    v = verdict(engine)
    return {
        "performed_by": performed_by,
        "backup": state.backup.name if state.backup else None,
        "backup_md5": state.backup.md5 if state.backup else None,
        "backup_time": state.backup.time if state.backup else None,
        "incident_declared_at": state.incident_declared_at,
        "app_accessible_at": state.app_accessible_at,
        "rto_seconds": round(v.rto_seconds),
        "rto_target_seconds": round(v.rto_target_seconds),
        "rto_ok": v.rto_ok,
        "rpo_seconds": round(v.rpo_seconds) if v.rpo_seconds is not None else None,
        "rpo_target_seconds": round(v.rpo_target_seconds),
        "rpo_ok": v.rpo_ok,
        "result": v.result,
        "run_id": state.run_id,
        "run_result": state.result,
        "target": state.target_label,
        "tool_host": state.tool_host,
        "steps": [
            {
                "id": s.id,
                "status": s.status.value,
                "seconds": round(s.elapsed_seconds or 0, 1),
                "detail": s.detail,
            }
            for s in state.steps
        ],
        "validation": state.validation,
    }


def record(
    engine: Engine,
    *,
    performed_by: str,
    signer: str | None,
    key: SigningKey | None,
    log_path: Path | None = None,
    interactive: bool = False,
) -> drill_log.AppendResult:
    """Append (and sign when a key is there) this run's entry; remember it in the journal."""
    path = log_path or engine.config.drill_log_path
    result = drill_log.append_entry(
        path,
        entry_fields(engine, performed_by),
        signer=signer or performed_by,
        key=key,
        interactive=interactive,
    )
    engine.state.drill_log_entry = result.sha256
    engine.save()
    return result


def drop_drill_database(engine: Engine) -> None:
    """`--drop-after`: the drill copy goes once the entry is written."""
    with database.connect(engine.config.database, admin=True) as conn:
        database.block_and_terminate(conn, engine.state.target_db)
        database.drop_database(conn, engine.state.target_db)
