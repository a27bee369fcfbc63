"""`preskool-dr tui`: the App keeps the lifecycle; the screens do the rest.

It holds the run (the engine, the incident time, the cancel event), owns the thread workers
that do the engine's work (each returns a typed report, posted once the worker is over to
the screen that shows the run), posts the engine's events to that screen, and decides when
and how to leave: q, a hang-up or SIGTERM, the exit code. The checklist
(screens/checklist.py) is its first screen; `p` pushes the PITR screen over it.
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, cast

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.message_pump import MessagePump
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import Event, Progress, StepChanged, StepStatus, utcnow
from preskool_dr.core.base.notify import Notifier
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.notices import PitrNotices
from preskool_dr.core.pitr.request import PitrRequest
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal
from preskool_dr.core.restore.notices import RestoreNotifications, outcome_text
from preskool_dr.core.storage import catalog
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.fetch import request_restore
from preskool_dr.tui.messages import (
    BackupsListed,
    DestructionPreviewed,
    EngineEvent,
    EngineProgress,
    GlacierRestoreRequested,
    PitrEnded,
    RunChanged,
    RunOpened,
    RunResumed,
    StepFinished,
    WorkFailed,
)
from preskool_dr.tui.resumable import why_not_resumable
from preskool_dr.tui.screens.checklist import ChecklistScreen
from preskool_dr.tui.screens.pitr import PitrScreen, exit_code_after
from preskool_dr.tui.screens.quit_confirm import QuitScreen
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.checklist import Checklist
from preskool_dr.tui.widgets.log_panel import LogPanel
from preskool_dr.tui.widgets.step_help import StepHelp

EXIT_DONE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
TOAST_CHARS = 160  # a longer message is cut in its toast; the log has all of it
SMALL_SCREEN_COLUMNS = 100  # below this a toast covers much of the panels: one at a time
SEVERITY_LABELS: dict[SeverityLevel, str] = {
    "information": "info",
    "warning": "warn",
    "error": "error",
}
TERMINAL_CHECK_SECONDS = 5.0
STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)
# After a hang-up: how long the step may take to record its interruption, then how long
# Textual may take to shut down once the journal is saved, before the process ends itself.
HANG_UP_STEP_SECONDS = 120.0
HANG_UP_EXIT_SECONDS = 3.0


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


def terminal_gone(parent_pid: int) -> bool:
    """The login shell died (we were re-parented) or stdin is no terminal any more."""
    if os.getppid() != parent_pid:
        return True
    try:
        termios.tcgetattr(sys.__stdin__.fileno() if sys.__stdin__ else 0)
    except (termios.error, OSError, ValueError):
        return True
    return False


class HangUpWatchdog:
    """Ends the process (exit 130) a few seconds after a hang-up once the step has recorded
    its interruption, unless the app has returned by then.

    With the terminal gone, Textual's writer thread dies on EIO and the event loop then waits
    for ever on the writer's full queue, in a redraw or in the shutdown: the loop never runs
    again (nor the SIGTERM handler it would call), and a later resume would find this process
    holding the run's lock. The watchdog is a plain thread, so it runs whatever the loop does.
    `os._exit` releases the locks with the process: the lock file's flock with its descriptor,
    the server lock with its connection. `before_exit` (the demo's: remove its sandbox) runs
    first.
    """

    def __init__(
        self, settled: Callable[[], bool], before_exit: Callable[[], object] | None = None
    ) -> None:
        self.settled = settled  # no step is running any more (its end is in the journal)
        self.before_exit = before_exit
        self.journal_saved = threading.Event()  # the loop got as far as closing the engine
        self.returned = threading.Event()  # App.run returned: nothing to do
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="hang-up", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        # bounded: a step that never stops must not keep the process either
        deadline = time.monotonic() + HANG_UP_STEP_SECONDS
        while not (self.journal_saved.is_set() or self.settled()):
            if time.monotonic() > deadline:
                break
            self.journal_saved.wait(0.2)
        if self.returned.wait(HANG_UP_EXIT_SECONDS):
            return
        if self.before_exit is not None:
            with contextlib.suppress(Exception):
                self.before_exit()
        os._exit(EXIT_INTERRUPTED)


@dataclass(frozen=True)
class Toast:
    """A notification waiting for the dialog over the screen to close."""

    message: str
    title: str
    severity: SeverityLevel
    timeout: float | None
    markup: bool


class DrApp(App[int]):
    """`preskool-dr tui`: the nine-step restore with the checklist and clock always in view."""

    CSS_PATH = "app.tcss"
    TITLE = "preskool-dr"
    # q on every screen; the checklist's own bindings are on ChecklistScreen. Ctrl+C quits
    # too (the README says so), with the same question as q, even from a text box: priority
    # puts it before the inputs' copy.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while a step runs)", id="quit"),
        Binding("ctrl+c", "interrupt", "Quit", show=False, priority=True, id="ctrl-c"),
    ]

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
        before_hard_exit: Callable[[], object] | None = None,
    ) -> None:
        super().__init__()
        self.watchdog = HangUpWatchdog(self._step_settled, before_hard_exit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handlers: dict[int, object] = {}
        self.server_python = server_python  # what a PITR's server runs wal-fetch with
        self.pitr_run: PitrRun | None = None  # the point-in-time recovery under way
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
        self._parent_pid = os.getppid()
        # Where the engine's events go: the checklist, or the PITR screen while a recovery
        # runs. Read from the worker's thread, so set before the work starts.
        self._events_to: MessagePump | None = None
        self.waiting_toasts: list[Toast] = []  # warnings that came while a dialog was open
        # The same restore notifications as the CLI's (start, a failed step, the end); a
        # delivery that fails is a warning in the log, like any other Notice.
        self.notices = RestoreNotifications(
            Notifier.from_config(config, on_event=self.post_engine_event)
        )
        self._notified: set[tuple[str, str]] = set()  # (run_id, "started"/"finished")
        self._pitr_notices: PitrNotices | None = None  # the recovery under way's

    def get_default_screen(self) -> ChecklistScreen:
        return ChecklistScreen(self)

    @property
    def checklist_screen(self) -> ChecklistScreen:
        return cast(ChecklistScreen, self.screen_stack[0])

    # The checklist screen's widgets, by the names tests and the benchmark use.
    @property
    def checklist(self) -> Checklist:
        return self.checklist_screen.checklist

    @property
    def browser(self) -> BackupBrowser:
        return self.checklist_screen.browser

    @property
    def log_panel(self) -> LogPanel:
        return self.checklist_screen.log_panel

    @property
    def help(self) -> StepHelp:
        return self.checklist_screen.help

    @property
    def target_db(self) -> str:
        if self.engine is not None:
            return self.engine.state.target_db
        if self.target_db_option:
            return self.target_db_option
        return self.config.drill.target_db if self.drill else self.config.database.name

    def target_label(self) -> str:
        db = self.config.database
        return f"{self.target_db}@{db.host}:{db.port}"

    def on_mount(self) -> None:
        self._events_to = self.checklist_screen
        self._catch_stop_signals()
        if not self.is_headless:
            threading.Thread(target=self._watch_terminal, name="terminal", daemon=True).start()
        self.freeze_heap_soon()

    def on_unmount(self) -> None:
        self._release_stop_signals()
        self._close_engine()
        gc.unfreeze()  # what the app froze is collectable again (a process that goes on)

    def run(self, *args: Any, **kwargs: Any) -> int | None:
        try:
            return super().run(*args, **kwargs)
        finally:
            self.watchdog.returned.set()  # what follows (the demo's cleanup) is not cut short

    def freeze_heap_soon(self) -> None:
        self.call_after_refresh(freeze_heap)

    # ------------------------------------------------------------ the engine's work

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="start")
    def start_run(self, spec: str) -> RunOpened:
        options = RunOptions(
            target_db=self.target_db_option,
            operator=self.operator,
            incident_declared_at=self.incident_at,
            drill=self.drill,
        )
        # The engine exists (and holds the target's lock) before the backup is identified,
        # so a bad backup leaves a run the operator can fix by choosing another one.
        self.engine = Engine.start(self.config, options, on_event=self.restore_event)
        self.engine.choose_backup(spec)
        self._notify_started()
        return RunOpened()

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="resume")
    def resume_run(self, run_id: str) -> RunResumed:
        state = Journal(self.config.state_dir).load(run_id)
        reason = why_not_resumable(state, self.config, drill=self.drill, target_db=self.target_db)
        if reason:  # the offer lists none of these: this guards every other way in
            raise UsageError(f"{reason}: not resumed here")
        self.engine = Engine.resume(self.config, run_id, on_event=self.restore_event)
        self._notify_started(resumed=True)
        return RunResumed()

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="choose")
    def choose_backup(self, spec: str) -> RunOpened:
        assert self.engine is not None
        self.engine.choose_backup(spec)
        self._notify_started()  # the first backup chosen may have been refused
        return RunOpened()

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="step")
    def run_engine_step(self, step_id: str, confirmation: str | None = None) -> StepFinished:
        assert self.engine is not None
        record = self.engine.run_step(step_id, confirmation=confirmation, cancel=self.cancel)
        if self.engine.state.finished:
            self._notify_finished()
        return StepFinished(record)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="drop-aside")
    def drop_aside_copy(self, name: str) -> RunChanged:
        assert self.engine is not None
        self.engine.drop_aside(name)
        return RunChanged()

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="rollback")
    def rollback_run(self, name: str) -> RunChanged:
        assert self.engine is not None
        self.engine.rollback(name)
        if self.engine.state.finished:
            self._notify_finished()
        return RunChanged()

    @work(thread=True, exclusive=True, exit_on_error=False, group="preview", name="preview")
    def preview_destruction(self) -> DestructionPreviewed:
        """What step 5 would replace; the reason as text when the server cannot tell."""
        assert self.engine is not None
        try:
            return DestructionPreviewed(self.engine.destruction_preview())
        except DrError as exc:
            return DestructionPreviewed(str(exc))

    @work(thread=True, exclusive=True, exit_on_error=False, group="catalog", name="catalog")
    def load_backups(self) -> BackupsListed:
        backups = self.config.backups
        warnings: list[str] = []
        records = catalog.list_backups(self.config, "all", warnings)
        where = f"{backups.dir}" + (
            f" and s3://{backups.s3_bucket}" if backups.s3_bucket else " (no S3 bucket set)"
        )
        note = f"{len(records)} backups in {where}" if records else f"No backups found in {where}"
        return BackupsListed(records, "; ".join([note, *warnings]))

    @work(thread=True, exclusive=True, exit_on_error=False, group="s3", name="glacier")
    def request_glacier_restore(self, record: BackupRecord) -> GlacierRestoreRequested:
        return GlacierRestoreRequested(request_restore(record))

    def start_pitr(self, request: PitrRequest) -> PitrRun:
        """A point-in-time recovery in the engine's worker group, with a fresh cancel event
        (q and a hang-up stop it like a step); UsageError when the request is refused."""
        self.cancel = threading.Event()
        notices = PitrNotices(self.notices.notifier, self.post_engine_event)
        runner = PitrRun(self.config, request, on_event=notices, cancel=self.cancel)
        notices.runner = runner
        self._pitr_notices = notices
        self.pitr_run = runner
        self._events_to = self.pitr_screen()
        self.freeze_heap_soon()
        self.run_pitr(runner)
        return runner

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="pitr")
    def run_pitr(self, runner: PitrRun) -> PitrEnded:
        try:
            state = runner.run()
            if self._pitr_notices is not None and self._pitr_notices.runner is runner:
                self._pitr_notices.finished()
            return PitrEnded(state, None)
        except DrError as exc:
            return PitrEnded(runner.state, exc)
        except Exception as exc:  # shown on the PITR screen like any failed step
            unexpected = DrError(f"unexpected error: {type(exc).__name__}: {exc}")
            return PitrEnded(runner.state, unexpected)

    def pitr_screen(self) -> PitrScreen | None:
        return next((s for s in reversed(self.screen_stack) if isinstance(s, PitrScreen)), None)

    def restore_event(self, event: Event) -> None:
        """The restore engine's callback: posted like every engine event, and a failed step
        is notified (from the worker's thread, like the CLI does it)."""
        self.post_engine_event(event)
        if isinstance(event, StepChanged) and event.status is StepStatus.FAILED:
            self.notices.step_failed(event, self.engine.state if self.engine else None)

    def _notify_started(self, *, resumed: bool = False) -> None:
        """Once per run and session: the run exists and its backup is chosen (or resumed)."""
        if self.engine is None or (resumed is False and self.engine.state.backup is None):
            return
        key = (self.engine.state.run_id, "started")
        if key not in self._notified:
            self._notified.add(key)
            self.notices.started(self.engine.state, resumed=resumed)

    def _notify_finished(self) -> None:
        """Once per run: done or rolled back, or left failed/interrupted when the TUI
        closes after it started here."""
        if self.engine is None:
            return
        state = self.engine.state
        key = (state.run_id, "finished")
        if key not in self._notified and (state.run_id, "started") in self._notified:
            self._notified.add(key)
            self.notices.finished(state, outcome_text(state, self.config.thresholds))

    def post_engine_event(self, event: Event) -> None:
        """The engine's callback, called from the worker's thread: post, never touch widgets."""
        target = self._events_to or self
        if isinstance(event, Progress):
            target.post_message(EngineProgress(event))
        else:
            target.post_message(EngineEvent(event))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        """A worker is over: its report (or its failure) goes to the screen showing the run,
        after the events the work posted there."""
        worker = event.worker
        if worker.node is not self:
            return  # a screen's own worker (the PITR form's): that screen hears from it
        report: object
        if worker.state is WorkerState.SUCCESS:
            report = worker.result
        elif worker.state is WorkerState.ERROR:
            report = WorkFailed(worker.name or "worker", worker.error)
        else:
            return
        if isinstance(report, PitrEnded):
            self.pitr_exit_code = exit_code_after(report.state, self.pitr_exit_code)
            target = self._events_to
            self.pitr_run = None
            self._events_to = self.checklist_screen if self.screen_stack else None
            if target is not None:
                target.post_message(report)
        elif isinstance(report, Message) and self.screen_stack:  # not once the app has closed
            self.checklist_screen.post_message(report)

    def engine_busy(self) -> bool:
        return any(w.group == "engine" and w.is_running for w in self.workers)

    def running_step(self) -> str | None:
        if self.engine is None:
            return None
        for record in self.engine.state.steps:
            if record.status is StepStatus.RUNNING:
                return record.id
        return None

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
        source: str = "",
    ) -> None:
        """Every message of the app comes here. It goes into the log (panel 4, under
        `source`, else the title, else its severity); only a warning or an error is also a
        toast, and never over a dialog: it waits until the dialog is closed. A toast hides
        part of the panels at 80 columns, so a small screen shows one at a time. Plain text
        by default: engine messages may hold brackets that are not markup."""
        self._log_notice(source or title.lower() or SEVERITY_LABELS[severity], message, severity)
        if severity == "information":
            return
        toast = Toast(message, title, severity, timeout, markup)
        if isinstance(self.screen, ModalScreen):
            self.waiting_toasts.append(toast)
        else:
            self._show_toast(toast)

    def show_waiting_toasts(self) -> None:
        """The dialog is closed: what came while it was open, the newest last."""
        waiting, self.waiting_toasts = self.waiting_toasts, []
        for toast in waiting:
            self._show_toast(toast)

    def _show_toast(self, toast: Toast) -> None:
        if self.size.width < SMALL_SCREEN_COLUMNS:
            self.clear_notifications()
        text = toast.message
        if len(text) > TOAST_CHARS:
            text = text[:TOAST_CHARS] + "… (all of it in the log: 4)"
        super().notify(
            text,
            title=toast.title,
            severity=toast.severity,
            timeout=toast.timeout,
            markup=toast.markup,
        )

    def _log_notice(self, source: str, message: str, severity: SeverityLevel) -> None:
        panels = self.checklist_screen.query(LogPanel) if self.screen_stack else None
        if panels:
            panels.first().add(source, message, style="bold" if severity == "error" else "")

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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # In a dialog q types into its box: the footer must not offer it there.
        return not (action == "quit" and isinstance(self.screen, ModalScreen))

    async def action_interrupt(self) -> None:
        await self.action_quit()

    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitScreen):
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
        if self.hung_up:
            self.watchdog.journal_saved.set()
        code = self.exit_code()
        self.exit(code, return_code=code)

    def _close_engine(self) -> None:
        if self.engine is not None:
            if self.engine.state.result in ("failed", "interrupted"):
                self._notify_finished()  # the operator left it unfinished: say so
            self.engine.close()

    def _catch_stop_signals(self) -> None:
        """SIGHUP (a dropped SSH session) and SIGTERM (a service manager) call `hang_up`.

        A plain handler, not the event loop's: it runs in the main thread even while the loop
        is stuck writing to a dead terminal, so the watchdog starts whatever the loop does.
        It never raises: an exception could strike inside Textual's writer-queue locks and
        deadlock its shutdown.
        """
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread
        self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, self._caught)

    def _release_stop_signals(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, cast(signal.Handlers, previous))
        self._previous_handlers.clear()

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        self.hang_up(signum)

    def _step_settled(self) -> bool:
        """No engine step runs (read from the watchdog's thread: the state is only looked at)."""
        return self.running_step() is None

    def hang_up(self, signum: int = signal.SIGHUP) -> None:
        """The terminal is gone (or we were told to stop): stop the step, let the engine
        record it, exit 130. `stop_signal` tells the caller which signal it was. Called from
        the signal handler too: flags and thread-safe calls only."""
        if self.hung_up:
            return
        self.hung_up = True
        self.stop_signal = signum
        self.interrupted = True
        self.cancel.set()
        if not self.is_headless:  # Pilot tests: the test process must live on
            self.watchdog.start()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.call_later, self.stop_and_exit)

    def _watch_terminal(self) -> None:
        """A closed SSH session does not always deliver SIGHUP (the shell in between may
        ignore it or die at once): look for ourselves, in a thread of our own, because the
        event loop may be stuck writing to the dead terminal."""
        while not self.hung_up and not self.watchdog.returned.wait(TERMINAL_CHECK_SECONDS):
            if terminal_gone(self._parent_pid):
                self.hang_up()
