"""What `check` answered last time, so a change of state (OK -> CRITICAL, and back) is
noticed once and notified once, however often Nagios or the Prometheus timer runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.notify import Notification
from preskool_dr.core.base.paths import ensure_private_dir, state_modes
from preskool_dr.core.monitor.report import HealthReport

CHECK_STATE_FILE = "check-state.json"


@dataclass(frozen=True)
class StateChange:
    before: str | None  # None: no earlier check recorded here
    after: str
    summary: str

    def notification(self, database: str) -> Notification:
        before = self.before or "no earlier check"
        return Notification(
            "check_state_changed",
            f"{database} {before} -> {self.after}",
            f"PRESKOOL_DR {self.after} - {self.summary}",
            level={"OK": "success", "WARNING": "warning"}.get(self.after, "failure"),
            details={"previous": before, "state": self.after},
        )


def record_state(state_dir: Path, report: HealthReport) -> StateChange | None:
    """Remember `report`'s state; the change when it differs from the one remembered.

    A first check that finds all well is no news. OSError (a state folder this user cannot
    write) goes to the caller: then nothing is remembered and nothing is notified, rather
    than the same change notified on every run."""
    path = state_dir / CHECK_STATE_FILE
    try:
        before = json.loads(path.read_text(encoding="utf-8")).get("state")
    except (OSError, ValueError, AttributeError):
        before = None
    after = report.status.name
    if before == after:
        return None
    record = {"state": after, "since": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
    ensure_private_dir(state_dir)
    atomic_write(
        path, (json.dumps(record, sort_keys=True) + "\n").encode(), mode=state_modes(state_dir)[1]
    )
    if before is None and after == "OK":
        return None
    return StateChange(before if isinstance(before, str) else None, after, report.summary)
