"""Top right, always visible: time since the incident was declared against the RTO target,
and the chosen backup's age at the incident against the RPO target."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from preskool_dr.core.base.settings import Thresholds
from preskool_dr.core.restore.journal import RunState
from preskool_dr.tui.format import bar, clock, hms, hours_minutes

WARN_FRACTION = 0.75


class RtoTimer(Static):
    """Times come from the run's journal (RunState), so they are right after a resume."""

    def show(
        self,
        state: RunState | None,
        incident_at: datetime | None,
        thresholds: Thresholds,
        now: datetime,
    ) -> None:
        target = thresholds.rto_minutes * 60
        declared = state.incident_declared_at if state else incident_at
        self.set_class(False, "-warning", "-critical")
        text = Text()
        if declared is None:
            text.append(f"RTO --:--:-- / {clock(target)}  incident time not set\n")
        else:
            stopped = state.app_accessible_at if state else None
            end = stopped or (state.finished_at if state else None) or now
            elapsed = max(0.0, (end - declared).total_seconds())
            fraction = elapsed / target if target else 1.0
            verdict = " ✔ stopped" if stopped else ""
            if fraction > 1:
                verdict += " OVER"
                self.add_class("-critical")
            elif fraction >= WARN_FRACTION:
                verdict += " WARN"
                self.add_class("-warning")
            text.append(
                f"RTO {hms(elapsed)} / {clock(target)} {bar(fraction)} {fraction:4.0%}{verdict}\n"
            )
        text.append(self._rpo_line(state, thresholds))
        self.update(text)

    @staticmethod
    def _rpo_line(state: RunState | None, thresholds: Thresholds) -> str:
        target = thresholds.rpo_hours * 3600
        if state is None or state.backup is None or state.rpo_seconds is None:
            return f"RPO -- / {thresholds.rpo_hours:g} h  (no backup chosen yet)"
        rpo = state.rpo_seconds
        over = "  OVER target" if rpo > target else ""
        return (
            f"RPO {hours_minutes(rpo)} / {thresholds.rpo_hours:g} h  "
            f"backup {state.backup.time:%m-%d %H:%M} UTC{over}"
        )
