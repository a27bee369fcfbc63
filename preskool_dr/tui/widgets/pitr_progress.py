"""A point-in-time recovery under way: its seven steps with their times, byte and replay
progress, the recovered server's log, and at the end the outcome (the RPO achieved, or why
not, and the command that stops the server)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import humanize
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.widgets import ProgressBar, RichLog, Static

from preskool_dr.core.base.errors import Cancelled, DrError
from preskool_dr.core.base.events import (
    Event,
    LogLine,
    Notice,
    Progress,
    StepChanged,
    StepStatus,
    utcnow,
)
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.journal import PitrState, journal_path, resume_command
from preskool_dr.core.pitr.server import stop_command
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.tui.format import REDRAW_SECONDS, STATUS_ICONS, clock
from preskool_dr.tui.widgets.pitr_ranges import seconds
from preskool_dr.tui.widgets.restore_panel import done_of_total, progress_lines

LOG_LINES = 500  # the server's log is on disk too (pitr-recovery.log): keep the screen's short
TOAST_CHARS = 160
RESULT_ICONS = {"done": "✔", "failed": "✖", "interrupted": "■"}
NOTICE_SEVERITY: dict[str, SeverityLevel] = {"error": "error", "warn": "warning"}


def rpo_text(state: PitrState) -> str:
    return humanize.precisedelta(state.rpo_seconds or 0, minimum_unit="seconds", format="%0.0f")


class PitrProgress(Vertical):
    """`#pitr-run`: drawn from the recovery's events; redraws of the progress are capped."""

    def __init__(self, config: Config, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.config = config
        self.active = False  # a recovery is shown: the step times tick
        self.steps: dict[str, StepStatus] = {sid: StepStatus.PENDING for sid, _ in STEPS}
        self.started_at: dict[str, datetime] = {}
        self.finished_at: dict[str, datetime] = {}
        self._pending: Progress | None = None
        self._replay: Progress | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="pitr-steps")
        with Horizontal(id="pitr-progress"):
            yield ProgressBar(total=None, show_eta=False, id="pitr-bar")
            yield Static("", id="pitr-stats", markup=False)
        yield Static("", id="pitr-replay", markup=False)
        yield Static("", id="pitr-result", markup=False)
        log = RichLog(max_lines=LOG_LINES, wrap=True, markup=False, min_width=1, id="pitr-log")
        log.border_title = "Steps and server log"
        yield log

    def on_mount(self) -> None:
        self.query_one("#pitr-bar").display = False
        self.set_interval(REDRAW_SECONDS, self.flush)
        self.set_interval(1.0, self.draw_steps)

    @property
    def log_view(self) -> RichLog:
        return self.query_one("#pitr-log", RichLog)

    def begin(self) -> None:
        self.active = True
        self.draw_steps()
        self.log_view.focus()

    def show_event(self, event: Event) -> None:
        if isinstance(event, StepChanged):
            now = utcnow()
            self.steps[event.step_id] = event.status
            if event.status is StepStatus.RUNNING:
                self.started_at[event.step_id] = now
                self._pending = None
                self.query_one("#pitr-bar").display = False
                self.query_one("#pitr-stats", Static).update("")
            else:
                self.finished_at[event.step_id] = now
            line = Text(f"step {event.number}/{len(STEPS)} {event.step_id} ", style="bold")
            line.append(event.status.value.upper())
            if event.detail:
                line.append(f": {event.detail}")
            self.log_view.write(line)
            self.draw_steps()
        elif isinstance(event, LogLine):
            self.log_view.write(Text(event.text, style="dim"))
        elif isinstance(event, Notice):
            self.log_view.write(Text(f"[{event.level}] {event.text}", style="bold"))
            text = event.text if len(event.text) <= TOAST_CHARS else event.text[:TOAST_CHARS] + "…"
            severity = NOTICE_SEVERITY.get(event.level, "information")
            self.app.notify(text, severity=severity, markup=False)

    def show_progress(self, progress: Progress) -> None:
        if progress.step_id == "replay":
            self._replay = progress
        else:
            self._pending = progress  # drawn by the timer: redraws are capped

    def flush(self) -> None:
        progress, self._pending = self._pending, None
        if progress is not None:
            bar = self.query_one("#pitr-bar", ProgressBar)
            if progress.total:
                bar.update(total=progress.total, progress=progress.done)
                bar.display = True
            stats, phase = progress_lines(progress)
            self.query_one("#pitr-stats", Static).update(f"{phase}: {stats}")
        replay, self._replay = self._replay, None
        if replay is not None:
            self.query_one("#pitr-replay", Static).update(
                f"{replay.current or 'replaying'} · {done_of_total(replay.done, None)} of WAL"
            )

    def draw_steps(self) -> None:
        if not self.active:
            return
        grid = Table.grid(expand=True)
        grid.add_column(no_wrap=True, ratio=1, overflow="ellipsis")
        grid.add_column(no_wrap=True, justify="right")
        now = utcnow()
        for number, (step_id, title) in enumerate(STEPS, 1):
            status = self.steps[step_id]
            started = self.started_at.get(step_id)
            elapsed = ""
            if started is not None:
                elapsed = clock((self.finished_at.get(step_id, now) - started).total_seconds())
            style = {
                StepStatus.RUNNING: "bold",
                StepStatus.FAILED: "bold reverse",
                StepStatus.PENDING: "dim",
            }.get(status, "")
            grid.add_row(Text(f"{STATUS_ICONS[status]} {number} {title}"), elapsed, style=style)
        self.query_one("#pitr-steps", Static).update(grid)

    def step_to_stop(self) -> tuple[int, str]:
        """The step running, or (between two) the next one: what stopping interrupts."""
        return next(
            (
                (n, t)
                for n, (sid, t) in enumerate(STEPS, 1)
                if self.steps[sid] in (StepStatus.RUNNING, StepStatus.PENDING)
            ),
            (len(STEPS), STEPS[-1][1]),
        )

    def stopping(self) -> None:
        self.query_one("#pitr-replay", Static).update(
            "Stopping: the step in progress is being recorded as interrupted…"
        )

    def show_outcome(self, state: PitrState, error: DrError | None) -> None:
        """The outcome replaces the progress lines; the paths go to the log, which scrolls."""
        self.flush()
        self.query_one("#pitr-progress").display = False
        self.query_one("#pitr-replay").display = False
        self.query_one("#pitr-result", Static).update(self._result(state, error))
        log = self.log_view
        log.write(Text(f"server log: {state.server_log}", style="bold"))
        journal = journal_path(self.config.state_dir, state.run_id)
        log.write(Text(f"journal: {journal}", style="bold"))
        if state.result == "interrupted":
            log.write(Text(f"resume: {resume_command(state)}", style="bold"))

    def _result(self, state: PitrState, error: DrError | None) -> RenderableType:
        """Four or five lines: at 80x24 the steps and some of the log stay in view."""
        text = Text()
        icon = RESULT_ICONS.get(state.result, "✖")
        if error is None:
            end = state.recovery_end or state.range_start
            limit = self.config.thresholds.rpo_wal_hours
            text.append(f"{icon} Recovered to {seconds(end)} UTC", style="bold")
            text.append(f" (target {seconds(state.target)} UTC)\n")
            since = (
                "target"
                if state.incident == state.target
                else f"incident {seconds(state.incident)}"
            )
            text.append(f"RPO achieved: {rpo_text(state)}", style="bold")
            text.append(f" ({since} − last transaction recovered; limit {limit:g} h)\n")
        else:
            failed = next((s for s, v in state.steps.items() if v == "failed"), "?")
            verb = "Stopped" if isinstance(error, Cancelled) else "Failed"
            text.append(f"{icon} {verb} at step {failed}: ", style="bold")
            text.append(f"{error}\n")
        if state.server_running:
            timeline = f", timeline {state.timeline}" if state.timeline else ""
            text.append(f"Server running on port {state.port}{timeline}")
            text.append(" (WAL archiving off: see docs/PITR.md)\n" if error is None else "\n")
            text.append(f"Stop it: {stop_command(Path(state.data_dir))}", style="bold")
        else:
            text.append("Nothing is running.")
        return text
