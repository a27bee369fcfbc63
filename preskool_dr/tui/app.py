"""`preskool-dr tui`: the App keeps the lifecycle; the screens do the rest.

It holds the run (the engine, the incident time, the cancel event) and decides when and how
to leave: q, a hang-up or SIGTERM, the exit code. What it inherits does the rest: the
thread workers that do the engine's work and post its events and reports to the screen that
shows the run (run_workers.py), and the notices (notices.py). The checklist
(screens/checklist.py) is its first screen; `p` pushes the PITR screen over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, cast

from textual.binding import Binding, BindingType
from textual.message_pump import MessagePump
from textual.screen import ModalScreen
from textual.worker import WorkerCancelled, WorkerFailed

from preskool_dr.core.base.events import StepStatus, utcnow
from preskool_dr.core.base.notify import Notifier
from preskool_dr.core.base.settings import Config
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.restore.engine import Engine
from preskool_dr.core.restore.notices import RestoreNotifications
from preskool_dr.core.restore.steps.recreate_db import production_state
from preskool_dr.tui.hang_up import (
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    STOP_SIGNALS,
    TERMINAL_CHECK_SECONDS,
    HangUpWatchdog,
    terminal_gone,
)
from preskool_dr.tui.notices import Toast
from preskool_dr.tui.run_workers import RunWorkerApp
from preskool_dr.tui.screens.checklist import ChecklistScreen
from preskool_dr.tui.screens.quit_confirm import QuitScreen
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.checklist import Checklist
from preskool_dr.tui.widgets.log_panel import LogPanel
from preskool_dr.tui.widgets.step_help import StepHelp

__all__ = ["EXIT_DONE", "EXIT_FAILED", "EXIT_INTERRUPTED", "DrApp"]


class DrApp(RunWorkerApp):
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
        # A delivery that fails is a warning in the log, like any other Notice.
        self.notices = RestoreNotifications(
            Notifier.from_config(config, on_event=self.post_engine_event)
        )
        self._notified = set()
        self._pitr_notices = None

    def get_default_screen(self) -> ChecklistScreen:
        return ChecklistScreen(self)

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
        question = self._quit_question()
        if question is not None:
            self.push_screen(QuitScreen(*question), self._quit_answered)
            return
        await self.stop_and_exit()

    def _quit_question(self) -> tuple[str, str] | None:
        """What to ask before quitting (title, text): while a step runs, or once the run
        has taken the app offline or touched the database and is not finished; None: quit."""
        if self.engine is None:
            return None
        state = self.engine.state
        back = (
            f"the run stays resumable: start preskool-dr again and choose run {state.run_id}, "
            f"or `preskool-dr restore --resume {state.run_id}`."
        )
        running = self.running_step()
        if running is not None:
            record = self.engine.step(running)
            return (
                "Quit while a step runs?",
                f"Step {record.number} ({record.title}) is running. Quitting stops it and "
                f"records it as interrupted; {back}",
            )
        offline = state.step(StepId.APP_OFFLINE).status is StepStatus.DONE
        touched = state.step(StepId.RECREATE_DB).status is not StepStatus.PENDING
        if state.finished or not (offline or touched):
            return None
        left = ", ".join(f"{r.number} {r.title}" for r in state.steps if not r.settled)
        return (
            "Quit with the run half done?",
            f"{'The app is offline and ' if offline else ''}{production_state(state)}. "
            f"Not done yet: {left}. Quitting leaves it so; {back}",
        )

    async def _quit_answered(self, quit_now: bool | None) -> None:
        if quit_now:
            await self.stop_and_exit()  # interrupted only if a step still runs by now

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
