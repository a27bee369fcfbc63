"""Small text helpers the widgets share: icons, clocks, sizes."""

from __future__ import annotations

import humanize

from preskool_dr.core.base.events import Progress, StepStatus

REDRAW_SECONDS = 0.25  # progress redraws at most ~4 a second, whatever the engine sends

# The icon alone must say the state: NO_COLOR terminals and 16-colour palettes lose the hue.
STATUS_ICONS = {
    StepStatus.PENDING: "·",
    StepStatus.RUNNING: "▶",
    StepStatus.DONE: "✔",
    StepStatus.FAILED: "✖",
    StepStatus.SKIPPED: "↷",
}


def clock(seconds: float) -> str:
    """`0:12`, `4:51`, `1:02:03`: a step's elapsed time."""
    total = int(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def hms(seconds: float) -> str:
    """`00:42:17`: the RTO clock."""
    total = int(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02}:{minutes:02}:{secs:02}"


def hours_minutes(seconds: float) -> str:
    """`14 h 22 m`: a backup's age."""
    total_minutes = int(max(0.0, seconds)) // 60
    hours, minutes = divmod(total_minutes, 60)
    if hours >= 48:
        days, hours = divmod(hours, 24)
        return f"{days} d {hours} h"
    return f"{hours} h {minutes:02} m" if hours else f"{minutes} m"


def size(count: int | None) -> str:
    return humanize.naturalsize(count, binary=True) if count is not None else "?"


def bar(fraction: float, width: int = 10) -> str:
    """A text bar that reads without colour: `██████░░░░`."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def health_try(progress: Progress) -> str:
    """`try 12/30 · 503 · gives up in 18 s`: step 9's poll, while it waits for the app."""
    line = f"try {progress.done}/{progress.total} · {progress.current}"
    left = progress.eta_seconds
    return line + (f" · gives up in {left:.0f} s" if left is not None else "")


def step_line(title: str, status: StepStatus, detail: str) -> str:
    """`Restore: done: 18 tables loaded`; `Restore: running` (not `running: running`)."""
    if detail and detail != status.value:
        return f"{title}: {status.value}: {detail}"
    return f"{title}: {status.value}"
