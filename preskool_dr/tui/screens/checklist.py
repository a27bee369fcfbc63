"""The checklist screen: the nine steps, the step's details, the RTO clock and the panels,
with the keys that act on the run. The App under it owns the engine and its workers; this
screen asks for work, then draws the engine's events and the workers' reports.

Keys: r run, s skip, R retry, b backups, ? help, q quit, 1-4 panels, ctrl+p every action.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import LogLine, Notice, StepChanged, StepStatus
from preskool_dr.core.base.procs import redact
from preskool_dr.core.restore.engine import DESTRUCTIVE_STEPS, SKIPPABLE_STEPS, Engine, same_server
from preskool_dr.core.restore.journal import Journal
from preskool_dr.tui.commands import ActionsProvider
from preskool_dr.tui.format import hms
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
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.pitr import PitrScreen
from preskool_dr.tui.screens.resume_run import ResumeRunScreen
from preskool_dr.tui.screens.run_dialogs import drop_aside_dialog, recreate_dialog, rollback_dialog
from preskool_dr.tui.screens.sign_off import DrillSignOff, SignedOff
from preskool_dr.tui.screens.skip_reason import SkipReasonScreen
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.checklist import Checklist
from preskool_dr.tui.widgets.log_panel import LogPanel
from preskool_dr.tui.widgets.rto_timer import RtoTimer
from preskool_dr.tui.widgets.run_header import RunHeader
from preskool_dr.tui.widgets.run_panels import RunPanels
from preskool_dr.tui.widgets.step_help import HELP_LAYER, StepHelp
from preskool_dr.tui.widgets.step_info import StepInfo

if TYPE_CHECKING:
    from datetime import datetime

    from preskool_dr.core.base.database import Snapshot
    from preskool_dr.tui.app import DrApp

TOAST_CHARS = 160
NOTICE_SEVERITY: dict[str, SeverityLevel] = {"error": "error", "warn": "warning"}
# Keys that change the run (and the help): off, and out of the footer, while a dialog is over
# this screen or the help is open, so a stray key never starts a step behind it.
RUN_ACTIONS = frozenset(
    {"run_step", "skip_step", "retry_step", "incident_time", "drop_aside", "rollback", "pitr"}
)


class ChecklistScreen(Screen[None]):
    """The App's first screen: the nine-step restore with the checklist and clock in view."""

    COMMANDS = Screen.COMMANDS | {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "run_step",
            "Run step",
            tooltip="Run the selected step (a retry when it failed)",
            id="run-step",
        ),
        Binding(
            "s", "skip_step", "Skip", tooltip="Skip the selected step (asks why)", id="skip-step"
        ),
        Binding("R", "retry_step", "Retry", tooltip="Run a failed step again", id="retry-step"),
        Binding("b", "show_backups", "Backups", tooltip="Browse and choose backups", id="backups"),
        Binding(
            "question_mark", "help", "Help", tooltip="Explain the selected step", id="step-help"
        ),
        # priority: Esc must close the help before a focused widget's own Esc acts behind it
        Binding("escape", "close_help", "Close help", show=False, priority=True, id="close-help"),
        # The App's quit, after closing the help if it is open.
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while a step runs)", id="quit"),
        Binding(
            "p",
            "pitr",
            "Point-in-time recovery",
            tooltip="Recover the cluster as it was at a chosen time (base backup + archived "
            "WAL) into a new data directory",
            show=False,
            id="pitr",
        ),
        Binding("1", "panel('backups')", "Backups panel", show=False, id="panel-backups"),
        Binding("2", "panel('checksum')", "Checksum panel", show=False, id="panel-checksum"),
        Binding("3", "panel('restore')", "Restore panel", show=False, id="panel-restore"),
        Binding("4", "panel('log')", "Log panel", show=False, id="panel-log"),
        Binding(
            "t",
            "incident_time",
            "Incident time",
            tooltip="Change when the incident was declared (RTO start)",
            show=False,
            id="incident-time",
        ),
        Binding(
            "f5",
            "refresh_backups",
            "Refresh backups",
            tooltip="List local and S3 backups again",
            show=False,
            id="refresh-backups",
        ),
    ]
    PALETTE_ONLY: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Filter backups", "Show only backups whose name, kind or place matches", "filter_backups"),
        (
            "Request a Glacier restore",
            "Ask S3 to restore the highlighted archived backup so it can be downloaded",
            "request_restore",
        ),
        (
            "Drop the aside copy",
            "After a passed health check: drop the old database kept aside (asks its name)",
            "drop_aside",
        ),
        (
            "Sign off the drill",
            "Drill: append the signed entry to the drill log now (pass or fail as it stands)",
            "sign_off",
        ),
        (
            "Roll back to the aside copy",
            "Put the old database back as the target (asks the target name)",
            "rollback",
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self._aside_offered = False
        self._sign_off_offered = False

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Horizontal(id="body"):
            with Vertical(id="left") as left:
                left.border_title = "Steps"
                yield Checklist(self.dr_app.config.steps, self.dr_app.now, id="checklist")
                yield StepInfo(id="step-info")
            with Vertical(id="right"):
                yield RtoTimer(id="rto")
                yield RunPanels(self.dr_app.now, id="panels")
        yield Footer()
        yield StepHelp()

    @property
    def dr_app(self) -> DrApp:
        return cast("DrApp", self.app)

    @property
    def engine(self) -> Engine | None:
        return self.dr_app.engine

    @property
    def checklist(self) -> Checklist:
        return self.query_one(Checklist)

    @property
    def browser(self) -> BackupBrowser:
        return self.query_one(BackupBrowser)

    @property
    def log_panel(self) -> LogPanel:
        return self.query_one(LogPanel)

    @property
    def panels(self) -> RunPanels:
        return self.query_one(RunPanels)

    @property
    def help(self) -> StepHelp:
        return self.query_one(StepHelp)

    def on_mount(self) -> None:
        # The help dialog sits on its own layer, centred over the panels (which fill the
        # screen, so the alignment moves nothing else).
        self.styles.layers = f"default {HELP_LAYER}"
        self.styles.align = ("center", "middle")
        self.panels.show("backups")
        self.refresh_run()
        self.set_interval(1.0, self._tick)
        self.dr_app.load_backups()
        self.checklist.focus()
        # only runs of the server DB_HOST/DB_PORT name: resuming another's would act here
        config = self.dr_app.config
        runs = [
            r for r in Journal(config.state_dir).unfinished() if same_server(config.database, r)
        ]
        if runs:
            self.app.push_screen(ResumeRunScreen(runs), self._resume_chosen)
        else:
            self._declare_incident()

    # ------------------------------------------------------------ starting and resuming

    def _resume_chosen(self, run_id: str | None) -> None:
        if run_id is None:
            self._declare_incident()
        else:
            self.dr_app.resume_run(run_id)

    def _declare_incident(self) -> None:
        self.app.push_screen(IncidentTimeScreen(self.dr_app.now()), self._incident_declared)

    def _incident_declared(self, when: datetime | None) -> None:
        app = self.dr_app
        if self.engine is not None:
            if when is not None:
                self.engine.set_incident_time(when)
                self.log_panel.add("run", f"incident declared at {when:%Y-%m-%d %H:%M:%S} UTC")
            self.refresh_run()
            return
        app.incident_at = when or app.now()
        self.log_panel.add("run", f"incident declared at {app.incident_at:%Y-%m-%d %H:%M:%S} UTC")
        self.refresh_run()
        if app.backup_spec:
            app.start_run(app.backup_spec)
        else:
            self.action_show_backups()

    # ------------------------------------------------------------ what the workers report

    def on_run_opened(self, message: RunOpened) -> None:
        self.refresh_run()
        self._select_current()
        self.checklist.focus()  # the run is on: arrows move through its steps
        self._offer_what_is_due()

    def on_run_resumed(self, message: RunResumed) -> None:
        self.refresh_run()
        if self.engine is None:
            return
        self._select_current()
        self.checklist.focus()
        state = self.engine.state
        self.panels.show_resumed(state)
        settled = sum(1 for r in state.steps if r.settled)
        self.log_panel.add("run", f"resumed run {state.run_id}")
        self.app.notify(
            f"Resumed run {state.run_id}: {settled} of {len(state.steps)} steps settled"
        )
        self._offer_what_is_due()

    def on_step_finished(self, message: StepFinished) -> None:
        self.refresh_run()
        if self.engine is None:
            return
        self._select_current()
        state = self.engine.state
        if state.result == "done":
            self.app.notify(f"Run complete: RTO {hms(state.rto_seconds)}", title="Done", timeout=20)
        self._offer_what_is_due()

    def on_run_changed(self, message: RunChanged) -> None:
        self.refresh_run()
        self._offer_what_is_due()

    def _offer_what_is_due(self) -> None:
        """A drill that is done is signed off; a passed health check offers to drop the
        aside copy. Each once."""
        if self.engine is None:
            return
        state = self.engine.state
        if (
            state.mode == "drill"
            and state.result == "done"
            and state.drill_log_entry is None
            and not self._sign_off_offered
        ):
            self._sign_off_offered = True
            self.action_sign_off()
        if (
            state.step("health").status is StepStatus.DONE
            and state.aside_state == "renamed"
            and not self._aside_offered
        ):
            self._aside_offered = True
            self._offer_drop_aside()

    def on_destruction_previewed(self, message: DestructionPreviewed) -> None:
        self._confirm_recreate(message.preview)

    def on_backups_listed(self, message: BackupsListed) -> None:
        self.browser.set_backups(message.records, message.note)

    def on_glacier_restore_requested(self, message: GlacierRestoreRequested) -> None:
        self.app.notify(message.answer, title="Glacier restore", timeout=15)
        self.log_panel.add("s3", message.answer)
        self.dr_app.load_backups()

    def on_work_failed(self, message: WorkFailed) -> None:
        error = message.error
        if isinstance(error, DrError):
            text = str(error)
        else:
            text = f"unexpected error: {type(error).__name__}: {redact(str(error))}"
        self.log_panel.add(message.source, text, style="bold")
        self.app.notify(text, title="Error", severity="error", timeout=20)
        self.refresh_run()

    # ------------------------------------------------------------ engine events

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if isinstance(event, StepChanged):
            self._step_changed(event)
        elif isinstance(event, LogLine):
            self.panels.show_line(event)
        elif isinstance(event, Notice):
            self.log_panel.add(event.level, event.text)
            severity: SeverityLevel = NOTICE_SEVERITY.get(event.level, "information")
            # Short: the full text stays in the step's detail and the log (panel 4), and a
            # toast hides part of the right panel at 80 columns while it lasts.
            text = event.text if len(event.text) <= TOAST_CHARS else event.text[:TOAST_CHARS] + "…"
            self.app.notify(text, severity=severity, timeout=12 if severity == "error" else 6)

    def on_engine_progress(self, message: EngineProgress) -> None:
        self.panels.show_progress(message.progress)

    def _step_changed(self, event: StepChanged) -> None:
        self.log_panel.add(
            f"step {event.number}", f"{event.title}: {event.status.value}: {event.detail}"
        )
        self.panels.step_changed(event, self.engine.state if self.engine else None)
        if event.status is StepStatus.RUNNING:
            self.dr_app.freeze_heap_soon()
        self.refresh_run()
        if event.status is not StepStatus.RUNNING:
            self._select_current()

    # ------------------------------------------------------------ drawing

    def refresh_run(self) -> None:
        if not self.app.is_running or not self.query(RunHeader):
            return  # shutting down, or a worker finished after the screen went away
        app = self.dr_app
        state = self.engine.state if self.engine else None
        self.query_one(RunHeader).show(
            drill=state.mode == "drill" if state else app.drill,
            target=state.target_label if state else app.target_label(),
            run_id=state.run_id if state else None,
        )
        self.checklist.show(state.steps if state else [], self._current_step())
        self._show_step_info()
        self.query_one(RtoTimer).show(state, app.incident_at, app.config.thresholds, app.now())

    def _current_step(self) -> str | None:
        if self.engine is None:
            return None
        return self.dr_app.running_step() or self.engine.next_step()

    def _select_current(self) -> None:
        current = self._current_step()
        if current is not None:
            self.checklist.select(current)

    def _show_step_info(self) -> None:
        step_id = self.checklist.selected_id
        record = self.engine.step(step_id) if self.engine else None
        self.query_one(StepInfo).show(
            self.checklist.selected + 1,
            self.dr_app.config.step(step_id),
            record,
            self._blocked(step_id),
        )

    def _blocked(self, step_id: str) -> str | None:
        if self.engine is None:
            return "no run yet: choose a backup (b, then Enter)"
        return self.engine.blocked_reason(step_id)

    @on(Checklist.Selected)
    def _step_selected(self) -> None:
        self._show_step_info()
        if self.help.is_open:
            self._open_help()  # arrows page through the steps' help

    def _tick(self) -> None:
        timer = self.query(RtoTimer)
        if not timer:
            return  # the app is closing: its widgets went before this last tick
        app = self.dr_app
        state = self.engine.state if self.engine else None
        timer.first().show(state, app.incident_at, app.config.thresholds, app.now())
        if app.running_step() is not None:
            self.checklist.refresh()  # the running step's elapsed time

    # ------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_help":
            return self.help.is_open
        if action == "help":
            return self.is_active
        if action in RUN_ACTIONS:
            return self.is_active and not self.help.is_open
        return True

    def _may_change_run(self) -> bool:
        """Refuse (and say why) what would race a running step or needs a run."""
        if self.engine is None:
            self.app.notify(
                "No run yet: choose a backup first (b, then Enter).", severity="warning"
            )
            return False
        if self.dr_app.engine_busy():
            running = self.dr_app.running_step()
            what = f"step {self.engine.step(running).number}" if running else "the engine"
            self.app.notify(
                f"{what} is working; wait for it (the log is on 4; q stops it).",
                severity="warning",
            )
            return False
        return True

    def action_run_step(self) -> None:
        self._run_selected()

    def action_retry_step(self) -> None:
        step_id = self.checklist.selected_id
        if self.engine is not None and self.engine.step(step_id).status is not StepStatus.FAILED:
            record = self.engine.step(step_id)
            self.app.notify(
                f"R retries a failed step; step {record.number} is {record.status.value} "
                "(r runs it).",
                severity="warning",
            )
            return
        self._run_selected()

    def _run_selected(self) -> None:
        step_id = self.checklist.selected_id
        if step_id == "identify":
            self.action_show_backups()
            self.app.notify("Highlight a backup and press Enter to choose it.")
            return
        if not self._may_change_run():
            return
        assert self.engine is not None
        record = self.engine.step(step_id)
        reason = self.engine.blocked_reason(step_id)
        if reason:
            self.app.notify(f"Step {record.number} cannot run: {reason}", severity="warning")
            return
        if step_id in DESTRUCTIVE_STEPS:
            self.dr_app.preview_destruction()  # the confirmation opens when the preview is back
            return
        self._start_step(step_id)

    def _start_step(self, step_id: str, confirmation: str | None = None) -> None:
        self.dr_app.cancel = threading.Event()
        self.dr_app.run_engine_step(step_id, confirmation)

    def _confirm_recreate(self, preview: Snapshot | str) -> None:
        if self.engine is None or self.dr_app.engine_busy():
            return
        self.app.push_screen(recreate_dialog(self.engine.state, preview), self._recreate_confirmed)

    def _recreate_confirmed(self, typed: str | None) -> None:
        if typed is None:
            self.app.notify("Cancelled: nothing was changed.")
            return
        self._start_step("recreate_db", typed)

    def action_skip_step(self) -> None:
        step_id = self.checklist.selected_id
        if not self._may_change_run():
            return
        assert self.engine is not None
        record = self.engine.step(step_id)
        if step_id not in SKIPPABLE_STEPS:
            self.app.notify(
                f"Step {record.number} ({record.title}) cannot be skipped: it protects the data.",
                severity="warning",
            )
            return
        if record.status in (StepStatus.DONE, StepStatus.SKIPPED):
            self.app.notify(f"Step {record.number} is already {record.status.value}.")
            return

        def skip(reason: str | None) -> None:
            if reason is None or self.engine is None:
                return
            try:
                self.engine.skip_step(step_id, reason)
            except DrError as exc:
                self.app.notify(str(exc), severity="error")
            self.refresh_run()
            self._select_current()

        self.app.push_screen(SkipReasonScreen(record.number, record.title), skip)

    def action_help(self) -> None:
        if self.help.is_open:
            self.help.close()
        else:
            self._open_help()

    def action_close_help(self) -> None:
        self.help.close()

    def _open_help(self) -> None:
        step_id = self.checklist.selected_id
        record = self.engine.step(step_id) if self.engine else None
        self.help.open(
            self.checklist.selected + 1,
            self.dr_app.config.step(step_id),
            record,
            self._blocked(step_id),
        )

    async def action_quit(self) -> None:
        if self.help.is_open:
            self.help.close()  # q closes the help, as Esc does; a second q quits
            return
        await self.dr_app.action_quit()

    def action_panel(self, name: str) -> None:
        self.panels.show(name)

    def action_pitr(self) -> None:
        app = self.dr_app
        if app.engine_busy():
            self.app.notify("A step is running: wait for it before a point-in-time recovery.")
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

    def action_show_backups(self) -> None:
        self.panels.show("backups")
        self.browser.table.focus()

    def action_filter_backups(self) -> None:
        self.panels.show("backups")
        self.browser.action_filter()

    def action_request_restore(self) -> None:
        self.panels.show("backups")
        self.browser.action_request_restore()

    def action_refresh_backups(self) -> None:
        self.dr_app.load_backups()

    def action_incident_time(self) -> None:
        app = self.dr_app
        current = self.engine.state.incident_declared_at if self.engine else app.incident_at
        self.app.push_screen(IncidentTimeScreen(app.now(), current), self._incident_declared)

    def action_drop_aside(self) -> None:
        if self._may_change_run():
            self._offer_drop_aside()

    def _offer_drop_aside(self) -> None:
        assert self.engine is not None
        state = self.engine.state
        if state.aside_state != "renamed" or not state.aside_db:
            self.app.notify("This run has no aside copy to drop.", severity="warning")
            return
        if state.step("health").status is not StepStatus.DONE:
            self.app.notify("The aside copy is kept until the health check (step 9) has passed.")
            return
        self.app.push_screen(drop_aside_dialog(state, state.aside_db), self._drop_aside_confirmed)

    def _drop_aside_confirmed(self, typed: str | None) -> None:
        if typed:
            self.dr_app.drop_aside_copy(typed)

    def action_sign_off(self) -> None:
        """Runbook section 4's sign-off: show the entry, ask who signs, append it."""
        app = self.dr_app
        if self.engine is None or self.engine.state.mode != "drill":
            self.app.notify("Sign-off is for drills: start one with `preskool-dr tui --drill`.")
            return
        if app.engine_busy():
            self.app.notify("A step is running: sign off when it has finished.", severity="warning")
            return
        state = self.engine.state
        if state.drill_log_entry is not None:
            self.app.notify(
                f"This drill is already in the drill log ({state.drill_log_entry[:12]})."
            )
            return
        sign_off = DrillSignOff(
            app,
            self.engine,
            what="drill entry",
            sign_key=app.sign_key,
            configured_key=app.config.drill.sign_key,
            log_path=app.drill_log,
        )
        sign_off.ask(app.operator or state.operator, self._signed_off)

    def _signed_off(self, outcome: SignedOff | None) -> None:
        if outcome is None:
            self.app.notify("Not signed off yet: use the palette (ctrl+p) → Sign off the drill.")
            return
        self.log_panel.add("drill", outcome.message, style="" if outcome.appended else "bold")
        self.refresh_run()

    def action_rollback(self) -> None:
        if not self._may_change_run():
            return
        assert self.engine is not None
        state = self.engine.state
        if state.aside_state != "renamed" or not state.aside_db:
            self.app.notify(f"Nothing to roll back to: {self.engine.production_state()}")
            return
        self.app.push_screen(rollback_dialog(state), self._rollback_confirmed)

    def _rollback_confirmed(self, typed: str | None) -> None:
        if typed:
            self.dr_app.rollback_run(typed)

    @on(BackupBrowser.Chosen)
    def _backup_chosen(self, message: BackupBrowser.Chosen) -> None:
        record = message.record
        spec = str(record.local_path) if record.local_path else record.s3_url or record.name
        app = self.dr_app
        if self.engine is None:
            if app.engine_busy():
                return  # the run is being started already
            self.log_panel.add("run", f"starting a run with {record.name}")
            app.start_run(spec)
            return
        if not self._may_change_run():
            return
        if self.engine.step("recreate_db").status is not StepStatus.PENDING:
            self.app.notify(
                "The database was already recreated from the chosen backup: start a new run "
                "to restore another one.",
                severity="warning",
            )
            return
        app.choose_backup(spec)

    @on(BackupBrowser.RestoreRequested)
    def _restore_requested(self, message: BackupBrowser.RestoreRequested) -> None:
        self.dr_app.request_glacier_restore(message.record)
