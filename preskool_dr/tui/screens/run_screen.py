"""What the checklist screen shows and offers, drawn from the run as it stands: the layout
(header, steps, step details, RTO clock, panels, footer), the drawing of the run, which
keys apply now (the footer and the palette), and the step help. ChecklistScreen
(checklist.py) adds what the workers report, the engine's events and the keys' actions.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.engine import Engine
from preskool_dr.core.restore.journal import StepRecord
from preskool_dr.tui.run_host import RunHost
from preskool_dr.tui.screens.checklist_keys import RUN_ACTIONS
from preskool_dr.tui.widgets.backup_browser import BackupBrowser
from preskool_dr.tui.widgets.checklist import Checklist
from preskool_dr.tui.widgets.log_panel import LogPanel
from preskool_dr.tui.widgets.rto_timer import RtoTimer
from preskool_dr.tui.widgets.run_header import RunHeader
from preskool_dr.tui.widgets.run_panels import RunPanels
from preskool_dr.tui.widgets.step_help import StepHelp
from preskool_dr.tui.widgets.step_info import StepInfo

STEP_ACTIONS = frozenset({"run_step", "skip_step", "retry_step"})


class RunScreen(Screen[None]):
    """The checklist screen's drawing and what applies; its run is the host's (the App)."""

    host: RunHost
    _live: dict[str, str]  # a running step's live line, by step id

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Horizontal(id="body"):
            with Vertical(id="left") as left:
                left.border_title = "Steps"
                yield Checklist(self.host.config.steps, self.host.now, id="checklist")
                yield StepInfo(id="step-info")
            with Vertical(id="right"):
                yield RtoTimer(id="rto")
                yield RunPanels(self.host.now, id="panels")
        yield Footer()
        yield StepHelp()

    @property
    def engine(self) -> Engine | None:
        return self.host.engine

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

    # ------------------------------------------------------------ drawing

    def refresh_run(self) -> None:
        if not self.app.is_running or not self.query(RunHeader):
            return  # shutting down, or a worker finished after the screen went away
        app = self.host
        state = self.engine.state if self.engine else None
        self.query_one(RunHeader).show(
            drill=state.mode == "drill" if state else app.drill,
            target=state.target_label if state else app.target_label(),
            run_id=state.run_id if state else None,
        )
        self.checklist.show(state.steps if state else [], self._current_step())
        if state is not None and state.backup is not None:
            failed = state.step("verify").status is StepStatus.FAILED
            self.browser.show_run(state.backup.name, failed)
        self._show_step_info()
        self.refresh_bindings()
        self.query_one(RtoTimer).show(state, app.incident_at, app.config.thresholds, app.now())
        self.refresh_bindings()  # the footer follows the run (an ended run runs no step)

    def _current_step(self) -> str | None:
        if self.engine is None:
            return None
        return self.host.running_step() or self.engine.next_step()

    def select_current(self) -> None:
        current = self._current_step()
        if current is not None:
            self.checklist.select(current)

    def _show_step_info(self) -> None:
        step_id = self.checklist.selected_id
        record = self.engine.step(step_id) if self.engine else None
        self.query_one(StepInfo).show(
            self.checklist.selected + 1,
            self.host.config.step(step_id),
            record,
            self._blocked(step_id),
            self._live.get(step_id),
            self._ways_on(record),
        )

    def _ways_on(self, record: StepRecord | None) -> str | None:
        """After a failed step, the keys that go on from it: R retries it, u rolls back to
        the old database when it is kept aside."""
        if record is None or record.status is not StepStatus.FAILED:
            return None
        ways = ["R retry"] if self.offers("retry_step") else []
        if self.offers("roll_back"):
            ways.append("u roll back")
        return " · ".join(ways) or None

    def _blocked(self, step_id: str) -> str | None:
        if self.engine is None:
            return "no run yet: r shows backups, Enter chooses one"
        if self.engine.state.finished:
            return None  # nothing runs any more: the summary says what the run came to
        return self.engine.blocked_reason(step_id)

    @on(Checklist.Selected)
    def _step_selected(self) -> None:
        self._show_step_info()
        self.refresh_bindings()  # Retry is offered on a failed step only
        if self.help.is_open:
            self._open_help()  # arrows page through the steps' help

    def _tick(self) -> None:
        timer = self.query(RtoTimer)
        if not timer:
            return  # the app is closing: its widgets went before this last tick
        app = self.host
        state = self.engine.state if self.engine else None
        timer.first().show(state, app.incident_at, app.config.thresholds, app.now())
        if app.running_step() is not None:
            self.checklist.refresh()  # the running step's elapsed time

    # ------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The footer shows what applies now: nothing of the checklist's while a dialog is
        over it (its keys type into the dialog), no run keys under the help."""
        if not self.is_active:
            return False
        if action == "close_help":
            return self.help.is_open
        if action in RUN_ACTIONS and self.help.is_open:
            return False
        return self.offers(action)

    def offers(self, action: str) -> bool:
        """Whether `action` applies to the run as it stands (the footer and the palette)."""
        state = self.engine.state if self.engine else None
        if action in STEP_ACTIONS and state is not None and state.finished:
            return False  # no step runs again in an ended run
        if action == "retry_step":
            return state is not None and (
                state.step(self.checklist.selected_id).status is StepStatus.FAILED
            )
        kept = state is not None and state.aside_state == "renamed" and bool(state.aside_db)
        if action in ("rollback", "roll_back"):
            # u (in the footer) once a step failed; the palette's keyless entry otherwise
            failed = state is not None and any(r.status is StepStatus.FAILED for r in state.steps)
            return kept and failed == (action == "roll_back")
        if action == "drop_aside":
            return kept
        if action == "sign_off":
            return state is not None and state.mode == "drill" and state.drill_log_entry is None
        if action == "request_restore":
            record = self.browser.highlighted()
            return record is not None and record.needs_restore
        return True

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
            self.host.config.step(step_id),
            record,
            self._blocked(step_id),
        )
