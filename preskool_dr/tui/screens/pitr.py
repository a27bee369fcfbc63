"""Point-in-time recovery as one screen (`p`): what the archive can reach, the target time,
a new data directory and a port, all checked before anything starts; a typed confirmation;
then the seven steps, byte and replay progress and the recovered server's log; at the end
the RPO achieved and the exact command that stops the server.

The recovery itself runs in a thread worker owned by the App (`start`), whose events come
back here through the App's engine-event path (`show_event`, `show_progress`, `run_ended`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, cast

import humanize
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, Footer, Input, Label, ProgressBar, RichLog, Static
from textual.worker import Worker, WorkerState

from preskool_dr.core.base.config import Config
from preskool_dr.core.base.errors import Cancelled, DrError, UsageError
from preskool_dr.core.base.events import (
    Event,
    EventSink,
    LogLine,
    Notice,
    Progress,
    StepChanged,
    StepStatus,
    utcnow,
)
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.drill import record as drill
from preskool_dr.core.drill import signing
from preskool_dr.core.pitr.journal import PitrState, journal_path, resume_command
from preskool_dr.core.pitr.plan import RecoverableRange, plan_recovery, recoverable_ranges
from preskool_dr.core.pitr.request import PitrRequest, check_request, parse_target
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.pitr.server import SERVER_OS_USER, running_as_root, stop_command
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.tui.format import REDRAW_SECONDS, STATUS_ICONS, clock
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.sign_off import sign_entry
from preskool_dr.tui.widgets.restore_panel import done_of_total, progress_lines

RangesProvider = Callable[[Config, EventSink], list[RecoverableRange]]
TARGET_FORMAT = "YYYY-MM-DD HH:MM[:SS]"
LOG_LINES = 500  # the server's log is on disk too (pitr-recovery.log): keep the screen's short
TOAST_CHARS = 160
HEADER = "Point-in-time recovery: the cluster as it was at a chosen moment"
READING = "Reading the base backups and the WAL archive (pg_waldump)…"
HINT = (
    "Enter checks once every field is filled (else goes to the next empty one) · Tab moves · "
    "Esc back to the checklist · F5 reads the archive again"
)
RESULT_ICONS = {"done": "✔", "failed": "✖", "interrupted": "■"}
NOTICE_SEVERITY: dict[str, SeverityLevel] = {"error": "error", "warn": "warning"}


def exit_code_after(state: PitrState | None, previous: int) -> int:
    """The TUI's exit code once a recovery has ended (0 done, 1 a step failed, 130 stopped
    mid-run, as for the restore); a request refused before anything started changes
    nothing (the form comes back)."""
    if state is None:
        return previous
    return {"done": 0, "interrupted": 130}.get(state.result, 1)


def archive_ranges(config: Config, on_event: EventSink) -> list[RecoverableRange]:
    """What the base backups and the WAL archive can reach (runs pg_waldump: seconds)."""
    return recoverable_ranges(config, on_event=on_event)


def seconds(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def whole_seconds(item: RecoverableRange) -> tuple[datetime, datetime] | None:
    """The first and last whole second a typed target can name inside `item` (its start is
    included, its end is not); None when not one fits."""
    if item.end is None:
        return None
    first = item.start.replace(microsecond=0)
    if first < item.start:
        first += timedelta(seconds=1)
    last = item.end.replace(microsecond=0)
    if last == item.end:
        last -= timedelta(seconds=1)
    return (first, last) if first <= last else None


def span(first: datetime, last: datetime) -> str:
    """`2026-02-20 02:30:42 → 04:48:02`: the date once when both ends share it."""
    end = seconds(last)
    return f"{seconds(first)} → {end[11:] if end[:10] == seconds(first)[:10] else end}"


def ranges_table(ranges: list[RecoverableRange], notes: list[str]) -> RenderableType:
    """Per base backup, newest first: the whole seconds a target can take (usable ones bold,
    with ✔), the archive it relies on, and why nothing or less can be reached."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True, width=1)
    grid.add_column(ratio=1)
    if not ranges:
        grid.add_row(
            "✖",
            Text(
                "No base backup: take one with `preskool-dr backup --kind base`; point-in-time "
                "recovery starts from one.",
                style="bold",
            ),
        )
    for item in ranges:
        window = whole_seconds(item) if item.usable else None
        if window is not None:
            grid.add_row("✔", Text(f"{span(*window)}  {item.base.name}", style="bold"))
            grid.add_row("", Text(f"+ archived WAL up to {item.last_segment}", style="dim"))
        else:
            grid.add_row("✖", Text(f"{seconds(item.start)} only  {item.base.name}", style="dim"))
            why = (
                "less than a second of archive after it: nothing to choose"
                if item.usable
                else "no transaction archived after this backup yet: wait for the next WAL "
                "segment (or SELECT pg_switch_wal() on production)"
            )
            grid.add_row("", Text(why, style="dim"))
        if item.gap:
            after = seconds(item.end) if item.end else "the backup"
            grid.add_row(
                "",
                Text(
                    f"WAL gap: segment {item.gap} is missing: nothing after {after} can be "
                    "replayed from this backup (restore that segment from another copy to "
                    "reach later times)",
                    style="bold",
                ),
            )
    for note in notes:
        grid.add_row("!", Text(note, style="dim"))
    return grid


class StopRecoveryScreen(ModalScreen[bool]):
    """q while the recovery runs: say what stopping leaves behind, then ask."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Stop it", id="pitr-stop-yes"),
        Binding("n,escape", "answer(False)", "Keep running", id="pitr-stop-no"),
    ]

    def __init__(self, step_title: str, server_started: bool) -> None:
        super().__init__()
        self.step_title = step_title
        self.server_started = server_started

    def compose(self) -> ComposeResult:
        server = (
            "The recovered server is already running and keeps running: this screen then "
            "shows how to stop it."
            if self.server_started
            else "No server has been started yet."
        )
        with Vertical(id="pitr-stop-dialog", classes="dialog -warning") as dialog:
            dialog.border_title = "Stop the point-in-time recovery?"
            yield Static(
                f"The recovery is at {self.step_title}. Stopping records the run as "
                f"interrupted in its journal; `preskool-dr pitr --resume RUN_ID` goes on with "
                f"it later (this screen shows the command). {server}",
                markup=False,
            )
            yield Static("y stops it · n or Esc keeps it running", classes="dialog-keys")

    def action_answer(self, stop: bool) -> None:
        self.dismiss(stop)


class PitrScreen(Screen[None]):
    """The form, then the run. `start` starts a recovery in the App's worker and returns it;
    `ranges` reads what the archive can reach (injectable: snapshots use fixed ranges)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", tooltip="Back to the restore checklist", id="pitr-back"),
        Binding(
            "f5",
            "reload",
            "Reload ranges",
            tooltip="Read the base backups and the WAL archive again",
            id="pitr-reload",
        ),
    ]

    def __init__(
        self,
        config: Config,
        *,
        start: Callable[[PitrRequest], PitrRun],
        server_python: str = sys.executable,
        operator: str = "",
        ranges: RangesProvider = archive_ranges,
        port: int | None = None,
        drill: bool = False,
        sign_key: Path | None = None,
        drill_log: Path | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.drill = drill  # validate the recovered copy and sign a drill-log entry
        self.sign_key = sign_key
        self.drill_log = drill_log
        self.start = start
        self.server_python = server_python
        self.operator = operator
        self.ranges_provider = ranges
        self.default_port = port or free_port()
        self.ranges: list[RecoverableRange] | None = None  # None while reading the archive
        self.runner: PitrRun | None = None
        self.state: PitrState | None = None  # once the run has ended
        self.error: DrError | None = None  # why it ended, when it did not reach the target
        self.checking = False
        self.stopping = False
        self.steps: dict[str, StepStatus] = {sid: StepStatus.PENDING for sid, _ in STEPS}
        self.started_at: dict[str, datetime] = {}
        self.finished_at: dict[str, datetime] = {}
        self._pending: Progress | None = None
        self._replay: Progress | None = None
        self.drill_result: str | None = None  # the drill-log line's summary, once written

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(HEADER, id="pitr-header", markup=False)
        with ContentSwitcher(initial="pitr-form", id="pitr-switcher"):
            with Vertical(id="pitr-form"):
                with VerticalScroll(id="pitr-ranges-box") as box:
                    box.border_title = "Recoverable targets (UTC)"
                    yield Static(READING, id="pitr-ranges", markup=False)
                with Vertical(id="pitr-fields"):
                    for label, field, placeholder, value in (
                        ("Target time (UTC)", "pitr-target", TARGET_FORMAT, ""),
                        ("New data directory", "pitr-dir", "must not exist, or be empty", ""),
                        ("Port", "pitr-port", "a free TCP port", str(self.default_port)),
                    ):
                        with Horizontal(classes="pitr-field"):
                            yield Label(label, classes="pitr-label")
                            yield Input(
                                value,
                                placeholder=placeholder,
                                id=field,
                                compact=True,
                                type="integer" if field == "pitr-port" else "text",
                            )
                yield Static("", id="pitr-error", markup=False)
                yield Static(HINT, id="pitr-hint", classes="dialog-keys", markup=False)
            with Vertical(id="pitr-run"):
                yield Static(id="pitr-steps")
                with Horizontal(id="pitr-progress"):
                    yield ProgressBar(total=None, show_eta=False, id="pitr-bar")
                    yield Static("", id="pitr-stats", markup=False)
                yield Static("", id="pitr-replay", markup=False)
                yield Static("", id="pitr-result", markup=False)
                log = RichLog(
                    max_lines=LOG_LINES, wrap=True, markup=False, min_width=1, id="pitr-log"
                )
                log.border_title = "Steps and server log"
                yield log
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#pitr-bar").display = False
        self.query_one("#pitr-target", Input).focus()
        self.set_interval(REDRAW_SECONDS, self._flush)
        self.set_interval(1.0, self._draw_steps)
        self.load_ranges()

    @property
    def running(self) -> bool:
        return self.runner is not None and self.state is None and self.error is None

    # ------------------------------------------------------------ the ranges

    @work(thread=True, exclusive=True, exit_on_error=False, group="pitr-ranges", name="ranges")
    def load_ranges(self) -> tuple[list[RecoverableRange], list[str]]:
        notes: list[str] = []

        def collect(event: Event) -> None:
            if isinstance(event, Notice):
                notes.append(event.text)

        return self.ranges_provider(self.config, collect), notes

    def _show_ranges(self, worker: Worker[object]) -> None:
        widget = self.query_one("#pitr-ranges", Static)
        if worker.state is WorkerState.ERROR:
            self.ranges = []
            widget.update(Text(f"Cannot read the archive: {worker.error}", style="bold"))
            return
        ranges, notes = cast(tuple[list[RecoverableRange], list[str]], worker.result)
        self.ranges = ranges
        widget.update(ranges_table(ranges, notes))

    def action_reload(self) -> None:
        if self.runner is not None:
            return
        self.ranges = None
        self.query_one("#pitr-ranges", Static).update(READING)
        self.load_ranges()

    # ------------------------------------------------------------ the form

    def _show_error(self, message: str, field: str | None = None) -> None:
        self.query_one("#pitr-error", Static).update(Text(message))
        if field is not None:
            self.query_one(f"#{field}", Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        fields = ("pitr-target", "pitr-dir", "pitr-port")
        empty = [f for f in fields if not self._value(f)]
        if empty:
            later = [f for f in empty if fields.index(f) > fields.index(event.input.id or "")]
            self.query_one(f"#{(later or empty)[0]}", Input).focus()
            return
        self.check()

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def check(self) -> None:
        """Everything that can be checked before the typed confirmation: the target's form,
        the directory and the port (check_request), then the target against the archive."""
        if self.checking or self.runner is not None:
            return
        try:
            target = parse_target(self._value("pitr-target"))
        except UsageError as exc:
            self._show_error(f"✖ {exc}; type {TARGET_FORMAT} in UTC", "pitr-target")
            return
        folder = self._value("pitr-dir")
        request = PitrRequest(
            target=target,
            data_dir=Path(folder),
            port=int(self._value("pitr-port")),  # the field takes digits only
            confirm=folder,  # the typed confirmation comes after these checks
            server_python=self.server_python,
            operator=self.operator,
            drill=self.drill,
        )
        try:
            data_dir = check_request(request)
        except UsageError as exc:
            port = str(exc).startswith(("port ", "--port "))
            self._show_error(f"✖ {exc}", "pitr-port" if port else "pitr-dir")
            return
        self.checking = True
        self._show_error(f"Checking {seconds(target)} UTC against the archive…")
        self.plan(replace(request, data_dir=data_dir, confirm=str(data_dir)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="pitr-check", name="plan")
    def plan(self, request: PitrRequest) -> tuple[PitrRequest, RecoverableRange]:
        return request, plan_recovery(self.config, request.target)

    def _planned(self, worker: Worker[object]) -> None:
        self.checking = False
        if worker.state is WorkerState.ERROR:
            error = worker.error
            message = str(error) if isinstance(error, DrError) else f"unexpected: {error!r}"
            self._show_error(f"✖ {message}", "pitr-target")
            return
        request, chosen = cast(tuple[PitrRequest, RecoverableRange], worker.result)
        self._show_error("")
        self.app.push_screen(
            ConfirmNameScreen(
                "Start point-in-time recovery?",
                self._confirmation_body(request, chosen),
                str(request.data_dir),
                f"Type the data directory {request.data_dir} and press Enter:",
            ),
            lambda typed: self._confirmed(request, typed),
        )

    def _confirmation_body(self, request: PitrRequest, chosen: RecoverableRange) -> Text:
        body = Text()
        body.append("Recover the whole cluster as it was at ")
        body.append(f"{seconds(request.target)} UTC", style="bold")
        body.append(":\n")
        body.append(f"· from base backup {chosen.base.name} (ended {seconds(chosen.start)})\n")
        body.append("· then the archived WAL replayed up to the target, and promoted\n")
        body.append("· into the NEW directory ")
        body.append(str(request.data_dir), style="bold")
        body.append(" (nothing else is touched)\n")
        body.append(f"· a server on port {request.port}, left running; WAL archiving off on it")
        if request.drill:
            body.append(
                "\n· a drill: the copy is validated and the RTO/RPO signed into the drill log"
            )
        if running_as_root():
            body.append(f"\n· run by the {SERVER_OS_USER} OS user")
        return body

    def _confirmed(self, request: PitrRequest, typed: str | None) -> None:
        if typed is None:
            self._show_error("Cancelled: nothing was started.")
            return
        try:
            runner = self.start(replace(request, confirm=typed))
        except DrError as exc:  # e.g. the port was taken meanwhile
            self._show_error(f"✖ {exc}", "pitr-port")
            return
        self.runner = runner
        self.query_one("#pitr-header", Static).update(
            f"PITR{' drill' if request.drill else ''} to {seconds(request.target)} UTC · "
            f"port {request.port} · {request.data_dir}"
        )
        self.query_one(ContentSwitcher).current = "pitr-run"
        self._draw_steps()
        self.query_one("#pitr-log", RichLog).focus()

    # ------------------------------------------------------------ the run

    def show_event(self, event: Event) -> None:
        log = self.query_one("#pitr-log", RichLog)
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
            log.write(line)
            self._draw_steps()
        elif isinstance(event, LogLine):
            log.write(Text(event.text, style="dim"))
        elif isinstance(event, Notice):
            log.write(Text(f"[{event.level}] {event.text}", style="bold"))
            text = event.text if len(event.text) <= TOAST_CHARS else event.text[:TOAST_CHARS] + "…"
            severity = NOTICE_SEVERITY.get(event.level, "information")
            self.app.notify(text, severity=severity, markup=False)

    def show_progress(self, progress: Progress) -> None:
        if progress.step_id == "replay":
            self._replay = progress
        else:
            self._pending = progress  # drawn by the timer: redraws are capped

    def _flush(self) -> None:
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

    def _draw_steps(self) -> None:
        if self.runner is None:
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

    def run_ended(self, worker: Worker[object]) -> None:
        """The App's worker is over: draw the outcome (the RPO, or why not, and the server)."""
        assert self.runner is not None
        self._flush()
        if worker.state is WorkerState.SUCCESS:
            self.state = cast(PitrState, worker.result)
        else:
            error = worker.error
            self.error = (
                error
                if isinstance(error, DrError)
                else DrError(f"unexpected error: {type(error).__name__}: {error}")
            )
            self.state = self.runner.state
        if self.state is None:
            # Refused in step 1 (e.g. the archive changed since the check): nothing started,
            # so the form comes back, filled in, with the reason.
            self.runner = None
            self.query_one("#pitr-header", Static).update(HEADER)
            self.query_one(ContentSwitcher).current = "pitr-form"
            self._show_error(f"✖ {self.error}", "pitr-target")
            self.error = None
            return
        # The outcome replaces the progress lines; the paths go to the log, which scrolls.
        self.query_one("#pitr-progress").display = False
        self.query_one("#pitr-replay").display = False
        self.query_one("#pitr-result", Static).update(self._result(self.state, self.error))
        self.query_one("#pitr-header", Static).update(
            f"PITR {self.state.result.upper()} · Esc back to the checklist · q quits"
        )
        log = self.query_one("#pitr-log", RichLog)
        log.write(Text(f"server log: {self.state.server_log}", style="bold"))
        journal = journal_path(self.config.state_dir, self.state.run_id)
        log.write(Text(f"journal: {journal}", style="bold"))
        if self.state.result == "interrupted":
            log.write(Text(f"resume: {resume_command(self.state)}", style="bold"))
        if self.error is None:
            self.app.notify(
                f"Recovered: RPO {self._rpo(self.state)}", title="Point-in-time recovery"
            )
        if self.drill and self.state.result in ("done", "failed"):
            self._sign_off(self.runner)

    def _sign_off(self, runner: PitrRun) -> None:
        """A drill's entry, pass or fail, as `pitr --drill` appends it (drill.record)."""
        assert runner.state is not None
        key = signing.resolve_key(self.sign_key, self.config.drill.sign_key)
        operator = runner.state.operator
        log = self.query_one("#pitr-log", RichLog)
        try:
            result = sign_entry(
                self.app,
                runner,
                what="PITR drill entry",
                performed_by=operator,
                signer=None,
                key=key,
                log_path=self.drill_log,
            )
        except DrError as exc:
            log.write(Text(f"drill log: {exc}", style="bold"))
            self.app.notify(str(exc), title="Drill log", severity="error", timeout=20)
            return
        verdict = drill.verdict(runner)
        self.drill_result = f"Drill {verdict.result.upper()}: {result.message}"
        log.write(Text(self.drill_result, style="bold"))
        self.app.notify(
            self.drill_result,
            title="Drill log",
            severity="information" if result.signed and verdict.result == "pass" else "warning",
            timeout=20,
        )

    def _rpo(self, state: PitrState) -> str:
        return humanize.precisedelta(state.rpo_seconds or 0, minimum_unit="seconds", format="%0.0f")

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
            text.append(f"RPO achieved: {self._rpo(state)}", style="bold")
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

    # ------------------------------------------------------------ leaving

    def ask_to_stop(self) -> None:
        """q while the recovery runs (the App's quit asks here)."""
        if self.runner is None or not self.running or self.stopping:
            return
        if isinstance(self.app.screen, StopRecoveryScreen):
            return
        # The step running, or (between two) the next one.
        number, title = next(
            (
                (n, t)
                for n, (sid, t) in enumerate(STEPS, 1)
                if self.steps[sid] in (StepStatus.RUNNING, StepStatus.PENDING)
            ),
            (len(STEPS), STEPS[-1][1]),
        )
        started = self.steps["start"] is not StepStatus.PENDING
        self.app.push_screen(
            StopRecoveryScreen(f"step {number} ({title})", started), self._stop_answered
        )

    def _stop_answered(self, stop: bool | None) -> None:
        if not stop or self.runner is None or not self.running:
            return
        self.stopping = True
        self.runner.cancel.set()
        self.query_one("#pitr-replay", Static).update(
            "Stopping: the step in progress is being recorded as interrupted…"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Reading the ranges again only means something while the form is shown.
        return action != "reload" or self.runner is None

    def action_back(self) -> None:
        if self.running:
            self.app.notify("The recovery is running: q stops it.", severity="warning")
            return
        self.dismiss(None)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        # This screen's own workers: the App's handler must not see them.
        event.stop()
        worker = event.worker
        if not worker.is_finished:
            return
        if worker.name == "ranges":
            self._show_ranges(worker)
        elif worker.name == "plan":
            self._planned(worker)
