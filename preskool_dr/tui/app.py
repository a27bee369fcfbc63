"""The restore checklist: one screen an operator never has to leave during an outage.

The engine (preskool_dr.core.restore.engine) does all the work in thread workers owned by this App;
its callback posts EngineEvent/EngineProgress messages here, so nothing on screen is ever
ahead of the journal. Keys: r run, s skip, R retry, b backups, ? help, q quit, 1-4 panels,
ctrl+p every action by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import termios
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import ClassVar, cast

import humanize
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.widgets import ContentSwitcher, Footer
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from preskool_dr.core.base.config import Config
from preskool_dr.core.base.database import Snapshot
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import (
    Event,
    LogLine,
    Notice,
    Progress,
    StepChanged,
    StepStatus,
    utcnow,
)
from preskool_dr.core.base.procs import redact
from preskool_dr.core.drill import log as drill_log
from preskool_dr.core.drill import record as drill
from preskool_dr.core.drill import signing
from preskool_dr.core.pitr import run as pitr
from preskool_dr.core.restore.engine import (
    DESTRUCTIVE_STEPS,
    SKIPPABLE_STEPS,
    Engine,
    RunOptions,
    same_server,
)
from preskool_dr.core.restore.journal import Journal, StepRecord
from preskool_dr.core.restore.steps.db_names import aside_name
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.tui.commands import ActionsProvider
from preskool_dr.tui.format import hms, size
from preskool_dr.tui.messages import EngineEvent, EngineProgress
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.pitr import PitrScreen, exit_code_after
from preskool_dr.tui.screens.quit_confirm import QuitScreen
from preskool_dr.tui.screens.resume_run import ResumeRunScreen
from preskool_dr.tui.screens.sign_off import SignOffScreen, entry_preview, sign_entry
from preskool_dr.tui.screens.skip_reason import SkipReasonScreen
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.checklist import Checklist
from preskool_dr.tui.widgets.checksum_panel import ChecksumPanel
from preskool_dr.tui.widgets.log_panel import LogPanel
from preskool_dr.tui.widgets.restore_panel import RestorePanel
from preskool_dr.tui.widgets.rto_timer import RtoTimer
from preskool_dr.tui.widgets.run_header import RunHeader
from preskool_dr.tui.widgets.step_help import HELP_LAYER, StepHelp
from preskool_dr.tui.widgets.step_info import StepInfo

EXIT_DONE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
PANELS = (("backups", "Backups"), ("checksum", "Checksum"), ("restore", "Restore"), ("log", "Log"))
PANEL_FOR_STEP = {
    "identify": "backups",
    "download": "restore",
    "verify": "checksum",
    "restore": "restore",
}
TERMINAL_CHECK_SECONDS = 5.0
TOAST_CHARS = 160
NOTICE_SEVERITY: dict[str, SeverityLevel] = {"error": "error", "warn": "warning"}
# Actions that change the run: never from under a modal (a stray key in a dialog must not
# start a step behind it).
STEP_ACTIONS = frozenset(
    {
        "run_step",
        "skip_step",
        "retry_step",
        "help",
        "incident_time",
        "drop_aside",
        "rollback",
        "pitr",
    }
)
# What acts on the checklist screen: nothing to do while the PITR screen hides it.
CHECKLIST_ACTIONS = frozenset(
    {"show_backups", "panel", "refresh_backups", "filter_backups", "request_restore"}
)


STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


def freeze_heap() -> None:
    """Take what the screen holds now out of the garbage collector's full passes.

    A full pass walks every object the UI has made (widgets, styles, render caches) while
    holding the interpreter: 80-110 ms on the benchmark machine during a restore, in which no
    key is answered (bench/tui_bench.py: `?` p95 went from 100-180 ms to 75-80 ms with this).
    Called once the screen is up and when a step or a PITR starts, so a run freezes a handful
    of times. Objects are still freed by reference counting; reference cycles made before a
    freeze wait until the app unmounts, which unfreezes them all.
    """
    gc.freeze()


class DrApp(App[int]):
    """`preskool-dr tui`: the nine-step restore with the checklist and clock always in view."""

    CSS_PATH = "app.tcss"
    TITLE = "preskool-dr"
    COMMANDS = App.COMMANDS | {ActionsProvider}
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

    def __init__(
        self,
        config: Config,
        *,
        drill: bool = False,
        target_db: str | None = None,
        backup: str | None = None,
        operator: str = "",
        sign_key: Path | None = None,
        drill_log: Path | None = None,
        now: Callable[[], datetime] = utcnow,
        server_python: str = sys.executable,
    ) -> None:
        super().__init__()
        self.server_python = server_python  # what a PITR's server runs wal-fetch with
        self.pitr_run: pitr.PitrRun | None = None  # the point-in-time recovery under way
        self.pitr_exit_code = EXIT_DONE  # what the last recovery's end means for exit_code
        self.sign_key = sign_key  # drill sign-off: --sign-key, else drill.sign_key, else agent
        self.drill_log = drill_log
        self.config = config
        self.drill = drill
        self.target_db_option = target_db
        self.backup_spec = backup
        self.operator = operator
        self.now = now  # injectable: snapshot tests freeze the clock
        self.engine: Engine | None = None
        self.incident_at: datetime | None = None  # declared before the run exists
        self.cancel = threading.Event()
        self.interrupted = False  # quit or hang-up while a step ran
        self.hung_up = False
        self.stop_signal: int | None = None  # SIGHUP/SIGTERM that ended the app, if any
        self._aside_offered = False
        self._sign_off_offered = False
        self._parent_pid = os.getppid()

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Horizontal(id="body"):
            with Vertical(id="left") as left:
                left.border_title = "Steps"
                yield Checklist(self.config.steps, self.now, id="checklist")
                yield StepInfo(id="step-info")
            with Vertical(id="right"):
                yield RtoTimer(id="rto")
                with Vertical(id="panels"), ContentSwitcher(initial="backups", id="switcher"):
                    yield BackupBrowser(self.now, id="backups")
                    yield ChecksumPanel(id="checksum")
                    yield RestorePanel(id="restore")
                    yield LogPanel(self.now, id="log")
        yield Footer()
        yield StepHelp()

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
    def help(self) -> StepHelp:
        return self.query_one(StepHelp)

    @property
    def target_db(self) -> str:
        if self.engine is not None:
            return self.engine.state.target_db
        if self.target_db_option:
            return self.target_db_option
        return self.config.drill.target_db if self.drill else self.config.database.name

    def on_mount(self) -> None:
        # The help dialog sits on its own layer, centred over the panels (which fill the
        # screen, so the alignment moves nothing else).
        self.screen.styles.layers = f"default {HELP_LAYER}"
        self.screen.styles.align = ("center", "middle")
        self._set_panel("backups")
        self.refresh_run()
        self.set_interval(1.0, self._tick)
        self._install_hangup_handler()
        if not self.is_headless:
            self.set_interval(TERMINAL_CHECK_SECONDS, self._check_terminal)
        self.load_backups()
        self.checklist.focus()
        self.call_after_refresh(freeze_heap)
        # only runs of the server DB_HOST/DB_PORT name: resuming another's would act here
        runs = [
            r
            for r in Journal(self.config.state_dir).unfinished()
            if same_server(self.config.database, r)
        ]
        if runs:
            self.push_screen(ResumeRunScreen(runs), self._resume_chosen)
        else:
            self._declare_incident()

    def on_unmount(self) -> None:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(sig)
        self._close_engine()
        gc.unfreeze()  # what the app froze is collectable again (a process that goes on)

    # ------------------------------------------------------------ starting and resuming

    def _resume_chosen(self, run_id: str | None) -> None:
        if run_id is None:
            self._declare_incident()
        else:
            self.resume_run(run_id)

    def _declare_incident(self) -> None:
        self.push_screen(IncidentTimeScreen(self.now()), self._incident_declared)

    def _incident_declared(self, when: datetime | None) -> None:
        if self.engine is not None:
            if when is not None:
                self.engine.set_incident_time(when)
                self.log_panel.add("run", f"incident declared at {when:%Y-%m-%d %H:%M:%S} UTC")
            self.refresh_run()
            return
        self.incident_at = when or self.now()
        self.log_panel.add("run", f"incident declared at {self.incident_at:%Y-%m-%d %H:%M:%S} UTC")
        self.refresh_run()
        if self.backup_spec:
            self.start_run(self.backup_spec)
        else:
            self.action_show_backups()

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="start")
    def start_run(self, spec: str) -> None:
        options = RunOptions(
            target_db=self.target_db_option,
            operator=self.operator,
            incident_declared_at=self.incident_at,
            drill=self.drill,
        )
        # The engine exists (and holds the target's lock) before the backup is identified,
        # so a bad backup leaves a run the operator can fix by choosing another one.
        self.engine = Engine.start(self.config, options, on_event=self.post_engine_event)
        self.engine.choose_backup(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="resume")
    def resume_run(self, run_id: str) -> None:
        self.engine = Engine.resume(self.config, run_id, on_event=self.post_engine_event)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="choose")
    def choose_backup(self, spec: str) -> None:
        assert self.engine is not None
        self.engine.choose_backup(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="step")
    def run_engine_step(self, step_id: str, confirmation: str | None = None) -> StepRecord:
        assert self.engine is not None
        return self.engine.run_step(step_id, confirmation=confirmation, cancel=self.cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="drop-aside")
    def drop_aside_copy(self, name: str) -> None:
        assert self.engine is not None
        self.engine.drop_aside(name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="rollback")
    def rollback_run(self, name: str) -> None:
        assert self.engine is not None
        self.engine.rollback(name)

    @work(thread=True, exclusive=True, exit_on_error=False, group="preview", name="preview")
    def preview_destruction(self) -> Snapshot | str:
        """What step 5 would replace; the reason as text when the server cannot tell."""
        assert self.engine is not None
        try:
            return self.engine.destruction_preview()
        except DrError as exc:
            return str(exc)

    @work(thread=True, exclusive=True, exit_on_error=False, group="catalog", name="catalog")
    def load_backups(self) -> tuple[list[BackupRecord], str]:
        backups = self.config.backups
        warnings: list[str] = []
        records = catalog.list_backups(self.config, "all", warnings)
        where = f"{backups.dir}" + (
            f" and s3://{backups.s3_bucket}" if backups.s3_bucket else " (no S3 bucket set)"
        )
        note = f"{len(records)} backups in {where}" if records else f"No backups found in {where}"
        return records, "; ".join([note, *warnings])

    @work(thread=True, exclusive=True, exit_on_error=False, group="s3", name="glacier")
    def request_glacier_restore(self, record: BackupRecord) -> str:
        return catalog.request_restore(record)

    def start_pitr(self, request: pitr.PitrRequest) -> pitr.PitrRun:
        """A point-in-time recovery in the engine's worker group, with a fresh cancel event
        (q and a hang-up stop it like a step); UsageError when the request is refused."""
        self.cancel = threading.Event()
        runner = pitr.PitrRun(
            self.config, request, on_event=self.post_engine_event, cancel=self.cancel
        )
        self.pitr_run = runner
        self.call_after_refresh(freeze_heap)
        self.run_pitr(runner)
        return runner

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="pitr")
    def run_pitr(self, runner: pitr.PitrRun) -> pitr.PitrState:
        return runner.run()

    def pitr_screen(self) -> PitrScreen | None:
        return next((s for s in reversed(self.screen_stack) if isinstance(s, PitrScreen)), None)

    def post_engine_event(self, event: Event) -> None:
        """The engine's callback, called from the worker's thread: post, never touch widgets."""
        if isinstance(event, Progress):
            self.post_message(EngineProgress(event))
        else:
            self.post_message(EngineEvent(event))

    # ------------------------------------------------------------ worker outcomes

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "pitr":
            if worker.is_finished:
                if self.pitr_run is not None:
                    self.pitr_exit_code = exit_code_after(self.pitr_run.state, self.pitr_exit_code)
                self.pitr_run = None
                screen = self.pitr_screen()
                if screen is not None:
                    screen.run_ended(worker)
            return
        if worker.state is WorkerState.ERROR:
            self._report_failure(worker)
            self.refresh_run()
            return
        if worker.state is not WorkerState.SUCCESS:
            return
        if worker.group == "engine":
            self._after_engine_work(worker)
        elif worker.name == "catalog":
            records, note = cast(tuple[list[BackupRecord], str], worker.result)
            self.browser.set_backups(records, note)
        elif worker.name == "preview":
            self._confirm_recreate(cast(Snapshot | str, worker.result))
        elif worker.name == "glacier":
            self.notify(str(worker.result), title="Glacier restore", timeout=15)
            self.log_panel.add("s3", str(worker.result))
            self.load_backups()
        else:  # a worker this handler does not know: still say it ended
            self.log_panel.add("app", f"{worker.name or worker.description} finished")

    def _report_failure(self, worker: Worker[object]) -> None:
        error = worker.error
        if isinstance(error, DrError):
            message = str(error)
        else:
            message = f"unexpected error: {type(error).__name__}: {redact(str(error))}"
        self.log_panel.add(worker.name or "worker", message, style="bold")
        self.notify(message, title="Error", severity="error", timeout=20)

    def _after_engine_work(self, worker: Worker[object]) -> None:
        self.refresh_run()
        if self.engine is None:
            return
        if worker.name in ("start", "resume", "choose", "step"):
            self._select_current()
        if worker.name in ("start", "resume", "choose"):
            self.checklist.focus()  # the run is on: arrows move through its steps
        state = self.engine.state
        if worker.name == "resume":
            self._show_chosen_backup()
            if state.step("verify").status is not StepStatus.PENDING:
                self.query_one(ChecksumPanel).show_record(state.step("verify"), state.verify)
            self.log_panel.add("run", f"resumed run {state.run_id}")
            self.notify(f"Resumed run {state.run_id}: {self._progress_summary()}")
        if state.result == "done" and worker.name == "step":
            self.notify(f"Run complete: RTO {hms(state.rto_seconds)}", title="Done", timeout=20)
        if (
            state.mode == "drill"
            and state.result == "done"
            and state.drill_log_entry is None
            and not self._sign_off_offered
        ):
            self._sign_off_offered = True
            self.action_sign_off()
        health = state.step("health")
        if (
            health.status is StepStatus.DONE
            and state.aside_state == "renamed"
            and not self._aside_offered
        ):
            self._aside_offered = True
            self._offer_drop_aside()

    def _progress_summary(self) -> str:
        assert self.engine is not None
        steps = self.engine.state.steps
        settled = sum(1 for r in steps if r.settled)
        return f"{settled} of {len(steps)} steps settled"

    # ------------------------------------------------------------ engine events

    def on_engine_event(self, message: EngineEvent) -> None:
        event = message.event
        if self.pitr_run is not None:
            if screen := self.pitr_screen():
                screen.show_event(event)
            return
        if isinstance(event, StepChanged):
            self._step_changed(event)
        elif isinstance(event, LogLine):
            self.log_panel.add(event.source, event.text)
            if event.step_id in ("restore", "download"):
                self.query_one(RestorePanel).write_line(event.text)
        elif isinstance(event, Notice):
            self.log_panel.add(event.level, event.text)
            severity: SeverityLevel = NOTICE_SEVERITY.get(event.level, "information")
            # Short: the full text stays in the step's detail and the log (panel 4), and a
            # toast hides part of the right panel at 80 columns while it lasts.
            text = event.text if len(event.text) <= TOAST_CHARS else event.text[:TOAST_CHARS] + "…"
            self.notify(text, severity=severity, timeout=12 if severity == "error" else 6)

    def on_engine_progress(self, message: EngineProgress) -> None:
        progress = message.progress
        if self.pitr_run is not None:
            if screen := self.pitr_screen():
                screen.show_progress(progress)
            return
        if progress.phase == "verify":
            self.query_one(ChecksumPanel).show_progress(progress)
        else:
            self.query_one(RestorePanel).show_progress(progress)

    def _step_changed(self, event: StepChanged) -> None:
        self.log_panel.add(
            f"step {event.number}", f"{event.title}: {event.status.value}: {event.detail}"
        )
        if event.status is StepStatus.RUNNING:
            self._prepare_panel(event.step_id)
            self.call_after_refresh(freeze_heap)
        elif event.step_id in ("download", "restore"):
            self.query_one(RestorePanel).settle(
                loaded=event.step_id == "restore" and event.status is StepStatus.DONE
            )
        if event.step_id == "verify" and self.engine is not None:
            self.query_one(ChecksumPanel).show_record(
                self.engine.step("verify"), self.engine.state.verify
            )
        if event.step_id == "identify" and event.status is StepStatus.DONE:
            self._show_chosen_backup()
        self.refresh_run()
        if event.status is not StepStatus.RUNNING:
            self._select_current()

    def _prepare_panel(self, step_id: str) -> None:
        """A step starts: show the panel it needs, ready for its progress."""
        self._set_panel(PANEL_FOR_STEP.get(step_id, "log"))
        if self.engine is None or self.engine.state.backup is None:
            return
        backup = self.engine.state.backup
        if step_id == "download":
            self.query_one(RestorePanel).begin(f"Download {backup.name}")
        elif step_id == "restore":
            meta = catalog.read_meta(Path(backup.local_path)) if backup.local_path else None
            self.query_one(RestorePanel).begin(
                f"Restore {backup.name}", meta.row_counts if meta else None
            )
        elif step_id == "verify":
            self._show_chosen_backup()

    def _show_chosen_backup(self) -> None:
        assert self.engine is not None
        backup = self.engine.state.backup
        if backup is None:
            return
        expected = "- (the backup is not local yet: step 3 fetches it)"
        if backup.local_path:
            path = Path(backup.local_path)
            try:
                expected = checksum.read_sidecar(checksum.sidecar_path(path), path.name).md5
            except DrError as exc:
                expected = f"none: {exc}"
        self.query_one(ChecksumPanel).show_backup(backup.name, expected)

    # ------------------------------------------------------------ drawing

    def refresh_run(self) -> None:
        if not self.is_running or not self.query(RunHeader):
            return  # shutting down, or a worker finished after the screen went away
        state = self.engine.state if self.engine else None
        self.query_one(RunHeader).show(
            drill=state.mode == "drill" if state else self.drill,
            target=state.target_label if state else self._target_label(),
            run_id=state.run_id if state else None,
        )
        self.checklist.show(state.steps if state else [], self._current_step())
        self._show_step_info()
        self.query_one(RtoTimer).show(state, self.incident_at, self.config.thresholds, self.now())

    def _target_label(self) -> str:
        db = self.config.database
        return f"{self.target_db}@{db.host}:{db.port}"

    def _current_step(self) -> str | None:
        if self.engine is None:
            return None
        return self.running_step() or self.engine.next_step()

    def running_step(self) -> str | None:
        if self.engine is None:
            return None
        for record in self.engine.state.steps:
            if record.status is StepStatus.RUNNING:
                return record.id
        return None

    def _select_current(self) -> None:
        current = self._current_step()
        if current is not None:
            self.checklist.select(current)

    def _show_step_info(self) -> None:
        checklist = self.checklist
        step_id = checklist.selected_id
        record = self.engine.step(step_id) if self.engine else None
        self.query_one(StepInfo).show(
            checklist.selected + 1, self.config.step(step_id), record, self._blocked(step_id)
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
        state = self.engine.state if self.engine else None
        timer.first().show(state, self.incident_at, self.config.thresholds, self.now())
        if self.running_step() is not None:
            self.checklist.refresh()  # the running step's elapsed time

    def _set_panel(self, name: str) -> None:
        self.query_one(ContentSwitcher).current = name
        tabs = [
            f"[reverse] {i}:{label} [/]" if key == name else f" {i}:{label} "
            for i, (key, label) in enumerate(PANELS, start=1)
        ]
        self.query_one("#panels").border_title = "".join(tabs)

    # ------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in STEP_ACTIONS and len(self.screen_stack) > 1:
            return isinstance(self.screen, CommandPalette)
        if action in STEP_ACTIONS and action != "help" and self.help.is_open:
            return False  # as under a modal: a stray key must not start a step behind it
        if action == "close_help":
            return self.help.is_open and len(self.screen_stack) == 1
        return not (action in CHECKLIST_ACTIONS and self.pitr_screen() is not None)

    def engine_busy(self) -> bool:
        return any(w.group == "engine" and w.is_running for w in self.workers)

    def _may_change_run(self) -> bool:
        """Refuse (and say why) what would race a running step or needs a run."""
        if self.engine is None:
            self.notify("No run yet: choose a backup first (b, then Enter).", severity="warning")
            return False
        if self.engine_busy():
            running = self.running_step()
            what = f"step {self.engine.step(running).number}" if running else "the engine"
            self.notify(
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
            self.notify(
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
            self.notify("Highlight a backup and press Enter to choose it.")
            return
        if not self._may_change_run():
            return
        assert self.engine is not None
        record = self.engine.step(step_id)
        reason = self.engine.blocked_reason(step_id)
        if reason:
            self.notify(f"Step {record.number} cannot run: {reason}", severity="warning")
            return
        if step_id in DESTRUCTIVE_STEPS:
            self.preview_destruction()  # the confirmation opens when the preview is back
            return
        self._start_step(step_id)

    def _start_step(self, step_id: str, confirmation: str | None = None) -> None:
        self.cancel = threading.Event()
        self.run_engine_step(step_id, confirmation)

    def _confirm_recreate(self, preview: Snapshot | str) -> None:
        if self.engine is None or self.engine_busy():
            return
        state = self.engine.state
        target = state.target_db
        body = Text()
        body.append("This replaces database ")
        body.append(target, style="bold")
        body.append(f" on {state.db_host}:{state.db_port}.\n")
        if isinstance(preview, str):
            body.append(f"Its size could not be read: {preview}\n")
        elif not preview.exists:
            body.append("It does not exist yet: nothing will be destroyed.\n")
        else:
            rows = preview.row_estimates
            body.append(
                f"Size {size(preview.size_bytes)}; {len(rows)} tables, "
                f"about {humanize.intcomma(sum(rows.values()))} rows"
            )
            biggest = sorted(rows.items(), key=lambda item: (-item[1], item[0]))[:4]
            if biggest:
                body.append(
                    ": " + ", ".join(f"{name} ~{humanize.intcomma(n)}" for name, n in biggest)
                )
                if len(rows) > len(biggest):
                    body.append(f" and {len(rows) - len(biggest)} more")
            body.append(".\n")
        if state.recreate_mode == "aside":
            aside = state.aside_db or aside_name(target, state.run_id)
            body.append("The old database is moved aside as ")
            body.append(aside, style="bold")
            body.append(" (kept until you drop it; a rollback can bring it back).\n")
        else:
            body.append("The old database is DROPPED: only the backup can bring it back.\n", "bold")
        if state.backup is not None:
            body.append(f"Then step 6 restores {state.backup.name}.")
        self.push_screen(
            ConfirmNameScreen(
                "Step 5: Recreate database (destructive)",
                body,
                target,
                f"Type the database name {target} and press Enter:",
            ),
            self._recreate_confirmed,
        )

    def _recreate_confirmed(self, typed: str | None) -> None:
        if typed is None:
            self.notify("Cancelled: nothing was changed.")
            return
        self._start_step("recreate_db", typed)

    def action_skip_step(self) -> None:
        step_id = self.checklist.selected_id
        if not self._may_change_run():
            return
        assert self.engine is not None
        record = self.engine.step(step_id)
        if step_id not in SKIPPABLE_STEPS:
            self.notify(
                f"Step {record.number} ({record.title}) cannot be skipped: it protects the data.",
                severity="warning",
            )
            return
        if record.status in (StepStatus.DONE, StepStatus.SKIPPED):
            self.notify(f"Step {record.number} is already {record.status.value}.")
            return

        def skip(reason: str | None) -> None:
            if reason is None or self.engine is None:
                return
            try:
                self.engine.skip_step(step_id, reason)
            except DrError as exc:
                self.notify(str(exc), severity="error")
            self.refresh_run()
            self._select_current()

        self.push_screen(SkipReasonScreen(record.number, record.title), skip)

    def action_help(self) -> None:
        if self.help.is_open:
            self.help.close()
        else:
            self._open_help()

    def action_close_help(self) -> None:
        self.help.close()

    def _open_help(self) -> None:
        checklist = self.checklist
        step_id = checklist.selected_id
        record = self.engine.step(step_id) if self.engine else None
        self.help.open(
            checklist.selected + 1, self.config.step(step_id), record, self._blocked(step_id)
        )

    def action_panel(self, name: str) -> None:
        self._set_panel(name)

    def action_pitr(self) -> None:
        if self.pitr_screen() is not None:
            return
        if self.engine_busy():
            self.notify("A step is running: wait for it before a point-in-time recovery.")
            return
        self.push_screen(
            PitrScreen(
                self.config,
                start=self.start_pitr,
                server_python=self.server_python,
                operator=self.operator,
                drill=self.drill,
                sign_key=self.sign_key,
                drill_log=self.drill_log,
            )
        )

    def action_show_backups(self) -> None:
        self._set_panel("backups")
        self.browser.table.focus()

    def action_filter_backups(self) -> None:
        self._set_panel("backups")
        self.browser.action_filter()

    def action_request_restore(self) -> None:
        self._set_panel("backups")
        self.browser.action_request_restore()

    def action_refresh_backups(self) -> None:
        self.load_backups()

    def action_incident_time(self) -> None:
        current = self.engine.state.incident_declared_at if self.engine else self.incident_at
        self.push_screen(IncidentTimeScreen(self.now(), current), self._incident_declared)

    def action_drop_aside(self) -> None:
        if not self._may_change_run():
            return
        self._offer_drop_aside()

    def _offer_drop_aside(self) -> None:
        assert self.engine is not None
        state = self.engine.state
        if state.aside_state != "renamed" or not state.aside_db:
            self.notify("This run has no aside copy to drop.", severity="warning")
            return
        if state.step("health").status is not StepStatus.DONE:
            self.notify("The aside copy is kept until the health check (step 9) has passed.")
            return
        aside = state.aside_db
        body = (
            f"The health check passed. The database from before this run is still kept as "
            f"{aside} on {state.db_host}:{state.db_port}. Drop it now to free its space, or keep "
            f"it and drop it later with:\n  preskool-dr restore --drop-aside {state.run_id} "
            f"--confirm {aside}"
        )
        self.push_screen(
            ConfirmNameScreen(
                "Drop the aside copy?", body, aside, f"Type {aside} and press Enter to drop it:"
            ),
            self._drop_aside_confirmed,
        )

    def _drop_aside_confirmed(self, typed: str | None) -> None:
        if typed:
            self.drop_aside_copy(typed)

    def action_sign_off(self) -> None:
        """Runbook section 4's sign-off: show the entry, ask who signs, append it."""
        if self.engine is None or self.engine.state.mode != "drill":
            self.notify("Sign-off is for drills: start one with `preskool-dr tui --drill`.")
            return
        if self.engine_busy():
            self.notify("A step is running: sign off when it has finished.", severity="warning")
            return
        state = self.engine.state
        if state.drill_log_entry is not None:
            self.notify(f"This drill is already in the drill log ({state.drill_log_entry[:12]}).")
            return
        key = signing.resolve_key(self.sign_key, self.config.drill.sign_key)
        key_text = (
            f"Signed with {key.describe()}; ssh-keygen may ask for its passphrase."
            if key
            else f"No signing key found: the entry is saved UNSIGNED. {drill_log.NO_KEY_HINT}."
        )
        operator = self.operator or state.operator
        preview = entry_preview(drill.entry_fields(self.engine, operator))
        self.push_screen(SignOffScreen(preview, operator, key_text), self._signed_off)

    def _signed_off(self, name: str | None) -> None:
        if name is None or self.engine is None:
            self.notify("Not signed off yet: use the palette (ctrl+p) → Sign off the drill.")
            return
        key = signing.resolve_key(self.sign_key, self.config.drill.sign_key)
        try:
            result = sign_entry(
                self,
                self.engine,
                what="drill entry",
                performed_by=name,
                signer=name,
                key=key,
                log_path=self.drill_log,
            )
        except DrError as exc:
            self.log_panel.add("drill", str(exc), style="bold")
            self.notify(str(exc), title="Drill log", severity="error", timeout=20)
            return
        self.log_panel.add("drill", result.message)
        verdict = drill.verdict(self.engine)
        self.notify(
            f"Drill {verdict.result.upper()}: {result.message}",
            title="Drill log",
            severity="information" if result.signed else "warning",
            timeout=20,
        )
        self.refresh_run()

    def action_rollback(self) -> None:
        if not self._may_change_run():
            return
        assert self.engine is not None
        state = self.engine.state
        if state.aside_state != "renamed" or not state.aside_db:
            self.notify(f"Nothing to roll back to: {self.engine.production_state()}")
            return
        body = (
            f"Roll back: {state.target_db} (this run's restore) is dropped and {state.aside_db} "
            f"is renamed back to {state.target_db}. The run ends as rolled-back."
        )
        self.push_screen(
            ConfirmNameScreen(
                "Roll back to the aside copy?",
                body,
                state.target_db,
                f"Type {state.target_db} and press Enter to roll back:",
            ),
            self._rollback_confirmed,
        )

    def _rollback_confirmed(self, typed: str | None) -> None:
        if typed:
            self.rollback_run(typed)

    @on(BackupBrowser.Chosen)
    def _backup_chosen(self, message: BackupBrowser.Chosen) -> None:
        record = message.record
        spec = str(record.local_path) if record.local_path else record.s3_url or record.name
        if self.engine is None:
            if self.engine_busy():
                return  # the run is being started already
            self.log_panel.add("run", f"starting a run with {record.name}")
            self.start_run(spec)
            return
        if not self._may_change_run():
            return
        if self.engine.step("recreate_db").status is not StepStatus.PENDING:
            self.notify(
                "The database was already recreated from the chosen backup: start a new run "
                "to restore another one.",
                severity="warning",
            )
            return
        self.choose_backup(spec)

    @on(BackupBrowser.RestoreRequested)
    def _restore_requested(self, message: BackupBrowser.RestoreRequested) -> None:
        self.request_glacier_restore(message.record)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Plain text by default: engine messages may hold brackets that are not markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # ------------------------------------------------------------ leaving

    def exit_code(self) -> int:
        if self.engine is None:
            return EXIT_INTERRUPTED if self.interrupted else self.pitr_exit_code
        state = self.engine.state
        if state.finished:
            return self.pitr_exit_code
        if not self.interrupted and any(r.status is StepStatus.FAILED for r in state.steps):
            return EXIT_FAILED
        return EXIT_INTERRUPTED

    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitScreen):
            return
        if self.help.is_open and len(self.screen_stack) == 1:
            self.help.close()  # q closes the help, as Esc does; a second q quits
            return
        if self.pitr_run is not None and (screen := self.pitr_screen()):
            screen.ask_to_stop()
            return
        running = self.running_step()
        if running is not None and self.engine is not None:
            record = self.engine.step(running)
            self.push_screen(
                QuitScreen(f"Step {record.number} ({record.title})", self.engine.state.run_id),
                self._quit_answered,
            )
            return
        await self.stop_and_exit()

    async def _quit_answered(self, quit_now: bool | None) -> None:
        if quit_now:
            self.interrupted = True
            await self.stop_and_exit()

    async def stop_and_exit(self) -> None:
        """Stop the running step, wait until the engine has recorded it, then leave."""
        if self.engine_busy():
            self.interrupted = True
        self.cancel.set()
        for worker in [w for w in self.workers if w.group == "engine" and w.is_running]:
            with contextlib.suppress(WorkerFailed, WorkerCancelled):
                await worker.wait()
        self._close_engine()
        code = self.exit_code()
        self.exit(code, return_code=code)

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def _install_hangup_handler(self) -> None:
        # In the event loop's own thread: a dropped SSH session sends SIGHUP (and a service
        # manager SIGTERM), which would otherwise kill the process mid-step and leave the
        # journal saying "running". A Python-level handler that raises instead can strike
        # inside Textual's writer-queue locks and deadlock its shutdown.
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.hang_up, sig)

    def hang_up(self, signum: int = signal.SIGHUP) -> None:
        """The terminal is gone (or we were told to stop): stop the step, let the engine
        record it, exit 130. `stop_signal` tells the caller which signal it was."""
        if self.hung_up:
            return
        self.hung_up = True
        self.stop_signal = signum
        self.interrupted = True
        self.cancel.set()
        self.call_later(self.stop_and_exit)

    def _check_terminal(self) -> None:
        """A closed SSH session does not always deliver SIGHUP: look for ourselves."""
        gone = os.getppid() != self._parent_pid  # the login shell died and we were re-parented
        try:
            termios.tcgetattr(sys.__stdin__.fileno() if sys.__stdin__ else 0)
        except (termios.error, OSError, ValueError):
            gone = True
        if gone:
            self.hang_up()
