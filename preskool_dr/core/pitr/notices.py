"""A point-in-time recovery's notifications, the same from the CLI and the TUI: it started
(its first step runs: the run exists), a step failed (or was interrupted), it finished at
the target with its RPO. Like the restore's (core/restore/notices.py), they come from
watching the run's events: the run itself never knows anyone is notified."""

from __future__ import annotations

from preskool_dr.core.base.events import Event, EventSink, StepChanged, StepStatus
from preskool_dr.core.base.notify import Notification, Notifier
from preskool_dr.core.pitr.journal import PitrState
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.storage.meta import iso_utc


class PitrNotices:
    """The run's event sink: passes every event on to `forward` and notifies. Set `runner`
    once the PitrRun exists; call `finished()` when its `run()` returned."""

    def __init__(self, notifier: Notifier, forward: EventSink) -> None:
        self.notifier = notifier
        self.forward = forward
        self.runner: PitrRun | None = None
        self._started = False

    def __call__(self, event: Event) -> None:
        self.forward(event)
        state = self.runner.state if self.runner is not None else None
        if state is None or not isinstance(event, StepChanged):
            return
        if event.status is StepStatus.RUNNING and not self._started:
            self._started = True
            self.notifier.send(
                Notification(
                    "pitr_started",
                    f"run {state.run_id}",
                    f"recovery of {state.base_backup} + archived WAL to {iso_utc(state.target)} "
                    f"into {state.data_dir} (port {state.port}){' - a drill' if state.drill else ''}",
                    details=_details(state),
                )
            )
        elif event.status is StepStatus.FAILED:
            self.notifier.send(
                Notification(
                    "pitr_failed",
                    f"run {state.run_id}",
                    f"step {event.step_id} failed: {event.detail}",
                    level="warning" if state.result == "interrupted" else "failure",
                    details={**_details(state), "step": event.step_id},
                )
            )

    def finished(self) -> None:
        """After `run()` returned: the target was reached."""
        state = self.runner.state if self.runner is not None else None
        if state is None or state.result != "done":
            return
        end = state.recovery_end or state.range_start
        rpo = state.rpo_seconds
        self.notifier.send(
            Notification(
                "pitr_finished",
                f"run {state.run_id} DONE",
                f"recovered to {iso_utc(end)} (target {iso_utc(state.target)}); server on port "
                f"{state.port}, data directory {state.data_dir}",
                details={
                    **_details(state),
                    "recovery_end": iso_utc(end),
                    "rpo_seconds": None if rpo is None else round(rpo),
                    "rto_seconds": round(state.rto_seconds),
                },
            )
        )


def _details(state: PitrState) -> dict[str, object]:
    return {
        "run_id": state.run_id,
        "base_backup": state.base_backup,
        "target": iso_utc(state.target),
        "data_dir": state.data_dir,
        "port": state.port,
        "operator": state.operator,
    }
