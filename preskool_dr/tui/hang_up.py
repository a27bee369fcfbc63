"""Leaving when the terminal is gone: the hang-up watchdog, the terminal check, the TUI's exit
codes, and the heap freeze that keeps key presses quick (tui/app.py's DrApp uses them)."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import termios
import threading
import time
from collections.abc import Callable

EXIT_DONE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
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
