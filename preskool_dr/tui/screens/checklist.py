"""The checklist screen: the nine steps, the step's details, the RTO clock and the panels,
with the keys that act on the run. The App under it owns the engine and its workers; this
screen asks for work, then draws the engine's events and the workers' reports. Its layout,
its drawing, what applies now and the step help are RunScreen's (run_screen.py).

Keys: r run, s skip, R retry, u roll back, b backups, ? help, q quit, 1-4 panels, ctrl+p
every action.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.binding import BindingType
from textual.notifications import SeverityLevel
from textual.screen import Screen

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import LogLine, Notice, StepChanged, StepStatus
from preskool_dr.core.base.procs import redact
from preskool_dr.core.restore.engine import Engine
from preskool_dr.core.restore.report import write_markdown
from preskool_dr.tui.commands import ActionsProvider
from preskool_dr.tui.format import health_try, step_line
from preskool_dr.tui.messages import (
    BackupsListed,
    DestructionPreviewed,
    EngineEvent,
    EngineProgress,
    GlacierRestoreRequested,
    RunChanged,
    RunOpened,
    RunResumed,
    StepFinished,
    WorkFailed,
)
from preskool_dr.tui.run_commands import RunCommands
from preskool_dr.tui.run_host import RunHost
from preskool_dr.tui.run_summary import RunFiles, history, summary_lines
from preskool_dr.tui.screens.checklist_keys import (
    CHECKLIST_BINDINGS,
    CHECKLIST_PALETTE_ONLY,
)
from preskool_dr.tui.screens.pitr import PitrScreen
from preskool_dr.tui.screens.run_screen import RunScreen
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.step_help import HELP_LAYER
from preskool_dr.tui.widgets.summary_panel import SummaryPanel

NOTICE_SEVERITY: dict[str, SeverityLevel] = {"error": "error", "warn": "warning"}


class ChecklistScreen(RunScreen):
    """The App's first screen: the nine-step restore with the checklist and clock in view."""

    COMMANDS = Screen.COMMANDS | {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = CHECKLIST_BINDINGS
    PALETTE_ONLY: ClassVar[tuple[tuple[str, str, str], ...]] = CHECKLIST_PALETTE_ONLY

    def __init__(self, host: RunHost) -> None:
        super().__init__()
        self.host = host
        self.commands = RunCommands(host, self)
        self._live: dict[str, str] = {}  # a running step's live line, by step id

    def on_mount(self) -> None:
        # The help dialog sits on its own layer, centred over the panels (which fill the
        # screen, so the alignment moves nothing else).
        self.styles.layers = f"default {HELP_LAYER}"
        self.styles.align = ("center", "middle")
        self.panels.show("backups")
        self.refresh_run()
        self.set_interval(1.0, self._tick)
        self.host.load_backups()
        self.checklist.focus()
        self.commands.open_run()  # resume a run, or declare the incident

    # ------------------------------------------------------------ what the workers report

    def on_run_opened(self, message: RunOpened) -> None:
        self.refresh_run()
        self.select_current()
        self.checklist.focus()  # the run is on: arrows move through its steps
        self.commands.offer_what_is_due()

    def on_run_resumed(self, message: RunResumed) -> None:
        self.refresh_run()
        if self.engine is None:
            return
        self.select_current()
        self.checklist.focus()
        state = self.engine.state
        self.panels.show_resumed(state)
        for when, source, text in history(state):  # what the log showed before the restart
            self.log_panel.add(source, text, at=when)
        settled = sum(1 for r in state.steps if r.settled)
        self.host.notify(
            f"Resumed run {state.run_id}: {settled} of {len(state.steps)} steps settled",
            source="run",
        )
        self.commands.offer_what_is_due()

    def on_step_finished(self, message: StepFinished) -> None:
        self.refresh_run()
        if self.engine is None:
            return
        self.select_current()
        if self.engine.state.result == "done":
            self._write_report(self.engine)
            self._show_summary()
        self.commands.offer_what_is_due()

    def _show_summary(self) -> None:
        """The run has ended (done or rolled back): what it came to, in the panels."""
        if self.engine is None or not self.engine.state.finished:
            return
        state, config = self.engine.state, self.host.config
        files = RunFiles.of(config.state_dir, state.run_id)
        self.panels.show_summary(
            summary_lines(state, config.thresholds, files),
            aside_kept=state.aside_state == "renamed",
        )

    @on(SummaryPanel.DropAsideRequested)
    def _drop_aside_requested(self) -> None:
        self.commands.drop_aside()

    def _write_report(self, engine: Engine) -> Path | None:
        """The postmortem's timeline beside the journal, its path in the log panel; a
        folder that refuses it costs the report, never the finished run."""
        config = engine.config
        try:
            path = write_markdown(config.state_dir, engine.state, config.thresholds)
        except (DrError, OSError) as exc:
            self.log_panel.add("report", f"timeline not written: {exc}", style="bold")
            return None
        self.log_panel.add("report", f"timeline for the postmortem: {path}")
        return path

    def on_run_changed(self, message: RunChanged) -> None:
        self.refresh_run()
        self._show_summary()
        self.commands.offer_what_is_due()

    def on_destruction_previewed(self, message: DestructionPreviewed) -> None:
        self.commands.confirm_recreate(message.preview)

    def on_backups_listed(self, message: BackupsListed) -> None:
        self.browser.set_backups(message.records, message.note)
        for warning in message.warnings:
            self.host.notify(warning, title="Backups", severity="warning", source="backups")

    def on_glacier_restore_requested(self, message: GlacierRestoreRequested) -> None:
        self.host.notify(message.answer, title="Glacier restore", source="s3")
        self.host.load_backups()

    def on_work_failed(self, message: WorkFailed) -> None:
        error = message.error
        if isinstance(error, DrError):
            text = str(error)
        else:
            text = f"unexpected error: {type(error).__name__}: {redact(str(error))}"
        self.host.notify(text, title="Error", severity="error", timeout=20, source=message.source)
        self.refresh_run()

    # ------------------------------------------------------------ engine events

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, StepChanged):
            self._step_changed(event)
        elif isinstance(event, LogLine):
            self.panels.show_line(event)
        elif isinstance(event, Notice):
            severity: SeverityLevel = NOTICE_SEVERITY.get(event.level, "information")
            timeout = 12 if severity == "error" else 6
            self.host.notify(event.text, severity=severity, timeout=timeout, source=event.level)

    def on_engine_progress(self, message: EngineProgress) -> None:
        progress = message.progress
        if progress.phase == "health":
            self._live[progress.step_id] = health_try(progress)
            self._show_step_info()
            return
        self.panels.show_progress(progress)

    def _step_changed(self, event: StepChanged) -> None:
        self.log_panel.add(
            f"step {event.number}", step_line(event.title, event.status, event.detail)
        )
        self._live.pop(event.step_id, None)
        self.panels.step_changed(event, self.engine.state if self.engine else None)
        if event.status is StepStatus.RUNNING:
            self.host.freeze_heap_soon()
        self.refresh_run()
        if event.status is not StepStatus.RUNNING:
            self.select_current()

    # ------------------------------------------------------------ keys

    def on_screen_suspend(self) -> None:
        """A dialog came over the checklist: no toast covers it (they are in the log)."""
        self.refresh_bindings()
        self.app.clear_notifications()

    def on_screen_resume(self) -> None:
        self.refresh_bindings()
        self.host.show_waiting_toasts()

    def action_run_step(self) -> None:
        self.commands.run(self.checklist.selected_id)

    def action_retry_step(self) -> None:
        self.commands.retry(self.checklist.selected_id)

    def action_skip_step(self) -> None:
        self.commands.skip(self.checklist.selected_id)

    def action_drop_aside(self) -> None:
        self.commands.drop_aside()

    def action_rollback(self) -> None:
        self.commands.rollback()

    def action_roll_back(self) -> None:
        self.commands.rollback()

    def action_sign_off(self) -> None:
        self.commands.sign_off()

    @on(BackupBrowser.Chosen)
    def _backup_chosen(self, message: BackupBrowser.Chosen) -> None:
        self.commands.choose_backup(message.record)

    @on(BackupBrowser.RestoreRequested)
    def _restore_requested(self, message: BackupBrowser.RestoreRequested) -> None:
        self.host.request_glacier_restore(message.record)

    async def action_quit(self) -> None:
        if self.help.is_open:
            self.help.close()  # q closes the help, as Esc does; a second q quits
            return
        await self.host.action_quit()

    def action_panel(self, name: str) -> None:
        if name == "summary" and not self.panels.run_ended:
            return  # the summary is there once the run has ended
        self.panels.show(name)
        if name == "summary":  # focused again, so its keys (d) and scrolling work
            self.panels.query_one(SummaryPanel).focus()

    def action_show_backups(self) -> None:
        self.panels.show("backups")
        self.browser.table.focus()

    def show_backup_choice(self) -> None:
        """The browser, its cursor on the newest backup that will pass its checks."""
        self.action_show_backups()
        self.browser.aim_at_newest_good()

    def action_filter_backups(self) -> None:
        self.panels.show("backups")
        self.browser.action_filter()

    def action_request_restore(self) -> None:
        self.panels.show("backups")
        self.browser.action_request_restore()

    def action_refresh_backups(self) -> None:
        self.host.load_backups()

    def action_incident_time(self) -> None:
        self.commands.change_incident_time()

    def action_pitr(self) -> None:
        app = self.host
        if app.engine_busy():
            self.host.notify(
                "A step is running: wait for it before a point-in-time recovery.",
                severity="warning",
            )
            return
        self.app.push_screen(
            PitrScreen(
                app.config,
                start=app.start_pitr,
                server_python=app.server_python,
                operator=app.operator,
                drill=app.drill,
                sign_key=app.sign_key,
                drill_log=app.drill_log,
            )
        )
