"""Point-in-time recovery as one screen (`p`): the form (what the archive can reach, the
target time, a new data directory and a port, all checked before anything starts, a typed
confirmation), then the run (the seven steps, byte and replay progress and the recovered
server's log; at the end the RPO achieved and the exact command that stops the server).

The recovery itself runs in a thread worker owned by the App (`start`); while it runs, the
App posts the engine's events here, and its end (PitrEnded) once the worker is over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, Footer, Static

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.journal import PitrState
from preskool_dr.core.pitr.plan import RecoverableRange
from preskool_dr.core.pitr.request import PitrRequest
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.tui.messages import EngineEvent, EngineProgress, PitrEnded
from preskool_dr.tui.screens.sign_off import DrillSignOff
from preskool_dr.tui.widgets.pitr_form import PitrForm
from preskool_dr.tui.widgets.pitr_progress import PitrProgress, rpo_text
from preskool_dr.tui.widgets.pitr_ranges import RangesProvider, archive_ranges, seconds

HEADER = "Point-in-time recovery: the cluster as it was at a chosen moment"


def exit_code_after(state: PitrState | None, previous: int) -> int:
    """The TUI's exit code once a recovery has ended (0 done, 1 a step failed, 130 stopped
    mid-run, as for the restore); a request refused before anything started changes
    nothing (the form comes back)."""
    if state is None:
        return previous
    return {"done": 0, "interrupted": 130}.get(state.result, 1)


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
        self.form = PitrForm(
            config,
            start=start,
            ranges=ranges,
            port=port or free_port(),
            server_python=server_python,
            operator=operator,
            drill=drill,
            id="pitr-form",
        )
        self.progress = PitrProgress(config, id="pitr-run")
        self.runner: PitrRun | None = None
        self.state: PitrState | None = None  # once the run has ended
        self.error: DrError | None = None  # why it ended, when it did not reach the target
        self.stopping = False
        self.drill_result: str | None = None  # the drill-log line's summary, once written

    def compose(self) -> ComposeResult:
        yield Static(HEADER, id="pitr-header", markup=False)
        with ContentSwitcher(initial="pitr-form", id="pitr-switcher"):
            yield self.form
            yield self.progress
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#pitr-target").focus()

    @property
    def ranges(self) -> list[RecoverableRange] | None:
        return self.form.ranges

    @property
    def checking(self) -> bool:
        return self.form.checking

    @property
    def steps(self) -> dict[str, StepStatus]:
        return self.progress.steps

    @property
    def running(self) -> bool:
        return self.runner is not None and self.state is None and self.error is None

    def action_reload(self) -> None:
        self.form.reload_ranges()

    def _header(self, text: str) -> None:
        self.query_one("#pitr-header", Static).update(text)

    # ------------------------------------------------------------ the run

    def on_pitr_form_started(self, message: PitrForm.Started) -> None:
        self.runner, request = message.runner, message.request
        self._header(
            f"PITR{' drill' if request.drill else ''} to {seconds(request.target)} UTC · "
            f"port {request.port} · {request.data_dir}"
        )
        self.query_one(ContentSwitcher).current = "pitr-run"
        self.progress.begin()

    def on_engine_event(self, message: EngineEvent) -> None:
        self.progress.show_event(message.event)

    def on_engine_progress(self, message: EngineProgress) -> None:
        self.progress.show_progress(message.progress)

    def on_pitr_ended(self, message: PitrEnded) -> None:
        """The App's worker is over: draw the outcome (the RPO, or why not, and the server)."""
        assert self.runner is not None
        self.state, self.error = message.state, message.error
        if self.state is None:
            # Refused in step 1 (e.g. the archive changed since the check): nothing started,
            # so the form comes back, filled in, with the reason.
            self.runner = None
            self.progress.active = False
            self._header(HEADER)
            self.query_one(ContentSwitcher).current = "pitr-form"
            self.form.reopen(self.error)
            self.error = None
            return
        self.progress.show_outcome(self.state, self.error)
        self._header(f"PITR {self.state.result.upper()} · Esc back to the checklist · q quits")
        if self.error is None:
            self.app.notify(
                f"Recovered: RPO {rpo_text(self.state)}", title="Point-in-time recovery"
            )
        if self.drill and self.state.result in ("done", "failed"):
            self._sign_off(self.runner)

    def _sign_off(self, runner: PitrRun) -> None:
        """A drill's entry, pass or fail, as `pitr --drill` appends it (drill.record)."""
        assert runner.state is not None
        sign_off = DrillSignOff(
            self.app,
            runner,
            what="PITR drill entry",
            sign_key=self.sign_key,
            configured_key=self.config.drill.sign_key,
            log_path=self.drill_log,
        )
        outcome = sign_off.sign(runner.state.operator, signer=None)
        if outcome.appended:
            self.drill_result = outcome.summary
            self.progress.log_view.write(Text(outcome.summary, style="bold"))
        else:
            self.progress.log_view.write(Text(f"drill log: {outcome.message}", style="bold"))

    # ------------------------------------------------------------ leaving

    def ask_to_stop(self) -> None:
        """q while the recovery runs (the App's quit asks here)."""
        if self.runner is None or not self.running or self.stopping:
            return
        if isinstance(self.app.screen, StopRecoveryScreen):
            return
        number, title = self.progress.step_to_stop()
        started = self.steps["start"] is not StepStatus.PENDING
        self.app.push_screen(
            StopRecoveryScreen(f"step {number} ({title})", started), self._stop_answered
        )

    def _stop_answered(self, stop: bool | None) -> None:
        if not stop or self.runner is None or not self.running:
            return
        self.stopping = True
        self.runner.cancel.set()
        self.progress.stopping()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Reading the ranges again only means something while the form is shown.
        return action != "reload" or self.runner is None

    def action_back(self) -> None:
        if self.running:
            self.app.notify("The recovery is running: q stops it.", severity="warning")
            return
        self.dismiss(None)
