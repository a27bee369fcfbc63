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
BAR_WIDTH, MIN_BAR_WIDTH = 10, 4


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
            text.append(self._rto_line(elapsed, target, fraction, verdict) + "\n")
        text.append(self._rpo_line(state, thresholds))
        self.update(text)

    def _rto_line(self, elapsed: float, target: float, fraction: float, verdict: str) -> str:
        """One line whatever the width: the bar shrinks, then goes, before the line wraps
        (0 columns: not laid out yet, the full bar)."""
        clocks, percent = f"RTO {hms(elapsed)} / {clock(target)}", f"{fraction:4.0%}{verdict}"
        room = self.content_size.width - len(clocks) - len(percent) - 2
        if not self.content_size.width or room >= BAR_WIDTH:
            return f"{clocks} {bar(fraction)} {percent}"
        if room >= MIN_BAR_WIDTH:
            return f"{clocks} {bar(fraction, room)} {percent}"
        return f"{clocks} {percent}"

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
