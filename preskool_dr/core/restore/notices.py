"""The restore's notifications, the same from both front ends: the run started (or was
resumed), a step failed, the run finished with its RTO and RPO. The CLI's `restore` and the
TUI's checklist each call these at their own moments (cli/notifying.py, tui/app.py); the
engine itself never knows anyone is notified."""

from __future__ import annotations

import humanize

from preskool_dr.core.base.events import StepChanged
from preskool_dr.core.base.notify import Notification, Notifier
from preskool_dr.core.base.settings import Thresholds
from preskool_dr.core.restore.journal import RunState
from preskool_dr.core.restore.report import clock


def outcome_text(state: RunState, thresholds: Thresholds) -> str:
    """`RTO 0:41:05 of 2:00:00 target (34%)  RPO 3 hours of 24 h`: the RESULT line's end."""
    target = thresholds.rto_minutes * 60
    rto = state.rto_seconds
    rto_text = f"RTO {clock(rto)} of {clock(target)} target ({rto / target:.0%})"
    rpo = state.rpo_seconds
    rpo_text = (
        f"RPO {humanize.precisedelta(rpo, minimum_unit='minutes', format='%0.0f')} of "
        f"{thresholds.rpo_hours:g} h"
        if rpo is not None
        else "RPO unknown (no backup chosen)"
    )
    return f"{rto_text}  {rpo_text}"


class RestoreNotifications:
    """Sends a run's three kinds of notification through `notifier`."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def started(self, state: RunState, *, resumed: bool = False) -> None:
        backup = state.backup.name if state.backup else "?"
        again = "resumed: " if resumed else ""
        self.notifier.send(
            Notification(
                "restore_started",
                f"run {state.run_id}",
                f"{again}{state.mode} of {backup} into {state.target_label}",
                details={"run_id": state.run_id, "backup": backup, "operator": state.operator},
            )
        )

    def step_failed(self, event: StepChanged, state: RunState | None) -> None:
        self.notifier.send(
            Notification(
                "restore_step_failed",
                f"run {state.run_id}" if state else "restore",
                f"step {event.number} ({event.title}) failed: {event.detail}",
                details={
                    "run_id": state.run_id if state else None,
                    "step": event.step_id,
                    "target": state.target_label if state else None,
                    "backup": state.backup.name if state and state.backup else None,
                },
            )
        )

    def finished(self, state: RunState, outcome: str) -> None:
        """`outcome`: the RESULT line's RTO and RPO text (`outcome_text`)."""
        self.notifier.send(
            Notification(
                "restore_finished",
                f"run {state.run_id} {state.result.upper()}",
                f"result {state.result.upper()}: {outcome}",
                level={"done": "success", "interrupted": "warning"}.get(state.result, "failure"),
                details={
                    "run_id": state.run_id,
                    "backup": state.backup.name if state.backup else None,
                    "target": state.target_label,
                    "rto_seconds": round(state.rto_seconds),
                    "rpo_seconds": None if state.rpo_seconds is None else round(state.rpo_seconds),
                },
            )
        )
