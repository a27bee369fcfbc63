"""Which moments of a CLI command are notification events (core/base/notify.py sends them).

The core reports plain events to a callback; the commands wrap that callback here, so the
engine itself never knows anyone is notified. A delivery that fails prints one `[WARN]`
line and the command goes on with its own exit code.
"""

from __future__ import annotations

import sys
from typing import TextIO

from preskool_dr.cli.output import tagged
from preskool_dr.core.base.events import Event, EventSink, Notice, StepChanged, StepStatus
from preskool_dr.core.base.notify import Notification, Notifier
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.engine import Engine


def notifier(config: Config, stream: TextIO | None = None) -> Notifier:
    """The runbook's notifier; its warnings are `[WARN]` lines on `stream` (stdout)."""

    def warn(event: Event) -> None:
        if isinstance(event, Notice):
            tagged("WARN", event.text, stream or sys.stdout)

    return Notifier.from_config(config, on_event=warn)


class RestoreNotices:
    """The restore's event sink: passes every event on, and notifies a failed step."""

    def __init__(self, config: Config, forward: EventSink) -> None:
        self.notifier = notifier(config)
        self.forward = forward
        self.engine: Engine | None = None  # set once the run exists: its id names it

    def __call__(self, event: Event) -> None:
        self.forward(event)
        if isinstance(event, StepChanged) and event.status is StepStatus.FAILED:
            state = self.engine.state if self.engine else None
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

    def started(self, engine: Engine, *, resumed: bool = False) -> None:
        self.engine = engine
        state = engine.state
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

    def finished(self, engine: Engine, outcome: str) -> None:
        """`outcome`: the RESULT line's RTO and RPO text."""
        state = engine.state
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
