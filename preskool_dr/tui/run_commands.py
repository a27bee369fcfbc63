"""What the checklist's keys do to the run, and how a run is opened (an unfinished one
resumed, or a new incident declared). Each command refuses (and says why) what would race a
running step or needs a run, asks what must be asked (a reason, a typed name, who signs),
then hands the work to the App's workers; their reports come back to the screen."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from textual.app import App

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.engine import (
    DESTRUCTIVE_STEPS,
    SKIPPABLE_STEPS,
    Engine,
)
from preskool_dr.core.restore.journal import Journal
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.tui.resumable import resumable_runs, still_running
from preskool_dr.tui.run_host import RunHost
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.resume_run import LEAVE, NEW_RUN, ResumeRunScreen
from preskool_dr.tui.screens.run_dialogs import drop_aside_dialog, recreate_dialog, rollback_dialog
from preskool_dr.tui.screens.sign_off import DrillSignOff, SignedOff
from preskool_dr.tui.screens.skip_reason import SkipReasonScreen
from preskool_dr.tui.widgets.log_panel import LogPanel

# r on these with no backup chosen opens the browser to choose one (the run needs it first)
FIRST_STEPS = frozenset({"app_offline", "identify"})

if TYPE_CHECKING:
    from datetime import datetime

    from preskool_dr.core.base.database import Snapshot


class RunView(Protocol):
    """What the commands redraw (the checklist screen); `app` shows their dialogs."""

    @property
    def app(self) -> App[object]: ...

    @property
    def log_panel(self) -> LogPanel: ...

    def refresh_run(self) -> None: ...

    def select_current(self) -> None: ...

    def action_show_backups(self) -> None: ...

    def show_backup_choice(self) -> None: ...


class RunCommands:
    """The commands of one checklist screen, on the run its App holds."""

    def __init__(self, host: RunHost, screen: RunView) -> None:
        self.host = host
        self.screen = screen
        self._sign_off_offered = False

    @property
    def engine(self) -> Engine | None:
        return self.host.engine

    def may_change_run(self) -> bool:
        """Refuse (and say why) what would race a running step or needs a run."""
        if self.engine is None:
            self.host.notify(
                "No run yet: choose a backup first (r or b, then Enter).", severity="warning"
            )
            return False
        if self.host.engine_busy():
            running = self.host.running_step()
            what = f"step {self.engine.step(running).number}" if running else "the engine"
            self.host.notify(
                f"{what} is working; wait for it (the log is on 4; q stops it).",
                severity="warning",
            )
            return False
        return True

    # ------------------------------------------------------------ opening the run

    def open_run(self) -> None:
        """At start: offer the unfinished runs of this mode, target and server, else declare
        the incident."""
        host = self.host
        runs = resumable_runs(
            Journal(host.config.state_dir).unfinished(),
            host.config,
            drill=host.drill,
            target_db=host.target_db,
        )
        if not runs:
            self._declare_incident()
            return
        alive = {s.run_id for s in runs if s.result == "running" and still_running(host.config, s)}
        self.screen.app.push_screen(ResumeRunScreen(runs, host.now(), alive), self._resume_chosen)

    def _resume_chosen(self, chosen: str | None) -> None:
        if chosen == NEW_RUN:
            self._declare_incident()
        elif chosen in (None, LEAVE):
            self.screen.app.exit(0, return_code=0)  # nothing was changed
        else:
            self.host.resume_run(chosen)

    def _declare_incident(self) -> None:
        self.screen.app.push_screen(IncidentTimeScreen(self.host.now()), self._incident_declared)

    def change_incident_time(self) -> None:
        """t: when the incident was declared (the RTO clock's start)."""
        host = self.host
        current = self.engine.state.incident_declared_at if self.engine else host.incident_at
        self.screen.app.push_screen(
            IncidentTimeScreen(host.now(), current), self._incident_declared
        )

    def _incident_declared(self, when: datetime | None) -> None:
        host, log = self.host, self.screen.log_panel
        if self.engine is not None:
            if when is not None:
                self.engine.set_incident_time(when)
                log.add("run", f"incident declared at {when:%Y-%m-%d %H:%M:%S} UTC")
            self.screen.refresh_run()
            return
        host.incident_at = when or host.now()
        log.add("run", f"incident declared at {host.incident_at:%Y-%m-%d %H:%M:%S} UTC")
        self.screen.refresh_run()
        if host.backup_spec:
            host.start_run(host.backup_spec)
        else:
            self.screen.show_backup_choice()

    # ------------------------------------------------------------ steps

    def run(self, step_id: str) -> None:
        """r: run the step (step 2 chooses in the browser; step 5 asks its name first).
        With no backup chosen yet, r on step 1 or 2 opens the browser on the newest good
        backup: one more Enter chooses it and starts the run."""
        if self.engine is None and step_id in FIRST_STEPS and not self.host.engine_busy():
            self.screen.show_backup_choice()
            self.host.notify("Enter chooses the highlighted backup and starts the run.")
            return
        if step_id == "identify":
            self.screen.action_show_backups()
            self.host.notify("Highlight a backup and press Enter to choose it.")
            return
        if not self.may_change_run():
            return
        assert self.engine is not None
        record = self.engine.step(step_id)
        reason = self.engine.blocked_reason(step_id)
        if reason:
            self.host.notify(f"Step {record.number} cannot run: {reason}", severity="warning")
            return
        if step_id in DESTRUCTIVE_STEPS:
            self.host.preview_destruction()  # the confirmation opens when the preview is back
            return
        self._start(step_id)

    def retry(self, step_id: str) -> None:
        """R: as r, for a failed step only."""
        if self.engine is not None and self.engine.step(step_id).status is not StepStatus.FAILED:
            record = self.engine.step(step_id)
            self.host.notify(
                f"R retries a failed step; step {record.number} is {record.status.value} "
                "(r runs it).",
                severity="warning",
            )
            return
        self.run(step_id)

    def _start(self, step_id: str, confirmation: str | None = None) -> None:
        self.host.cancel = threading.Event()
        self.host.run_engine_step(step_id, confirmation)

    def confirm_recreate(self, preview: Snapshot | str) -> None:
        """Step 5's typed confirmation, once the preview of what it replaces is back."""
        if self.engine is None or self.host.engine_busy():
            return

        def confirmed(typed: str | None) -> None:
            if typed is None:
                self.host.notify("Cancelled: nothing was changed.")
            else:
                self._start("recreate_db", typed)

        self.screen.app.push_screen(recreate_dialog(self.engine.state, preview), confirmed)

    def skip(self, step_id: str) -> None:
        """s: skip a step that may be skipped, with a reason."""
        if not self.may_change_run():
            return
        assert self.engine is not None
        record = self.engine.step(step_id)
        if step_id not in SKIPPABLE_STEPS:
            self.host.notify(
                f"Step {record.number} ({record.title}) cannot be skipped: it protects the data.",
                severity="warning",
            )
            return
        if record.status in (StepStatus.DONE, StepStatus.SKIPPED):
            self.host.notify(f"Step {record.number} is already {record.status.value}.")
            return

        def skip(reason: str | None) -> None:
            if reason is None or self.engine is None:
                return
            try:
                self.engine.skip_step(step_id, reason)
            except DrError as exc:
                self.host.notify(str(exc), severity="error")
            self.screen.refresh_run()
            self.screen.select_current()

        self.screen.app.push_screen(SkipReasonScreen(record.number, record.title), skip)

    def choose_backup(self, record: BackupRecord) -> None:
        """Enter in the browser: start the run with it, or change the run's backup."""
        spec = str(record.local_path) if record.local_path else record.s3_url or record.name
        if self.engine is None:
            if self.host.engine_busy():
                return  # the run is being started already
            self.screen.log_panel.add("run", f"starting a run with {record.name}")
            self.host.start_run(spec)
            return
        if not self.may_change_run():
            return
        if self.engine.step("recreate_db").status is not StepStatus.PENDING:
            self.host.notify(
                "The database was already recreated from the chosen backup: start a new run "
                "to restore another one.",
                severity="warning",
            )
            return
        self.host.choose_backup(spec)

    # ------------------------------------------------------------ after the run

    def offer_what_is_due(self) -> None:
        """After the engine's work: a drill that is done is signed off, once. (Dropping the
        aside copy is offered by the end-of-run summary, not by a dialog.)"""
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
            self.sign_off()

    def drop_aside(self) -> None:
        if self.may_change_run():
            self.offer_drop_aside()

    def offer_drop_aside(self) -> None:
        assert self.engine is not None
        state = self.engine.state
        if state.aside_state != "renamed" or not state.aside_db:
            self.host.notify("This run has no aside copy to drop.", severity="warning")
            return
        if state.step("health").status is not StepStatus.DONE:
            self.host.notify("The aside copy is kept until the health check (step 9) has passed.")
            return

        def confirmed(typed: str | None) -> None:
            if typed:
                self.host.drop_aside_copy(typed)

        self.screen.app.push_screen(drop_aside_dialog(state, state.aside_db), confirmed)

    def rollback(self) -> None:
        if not self.may_change_run():
            return
        assert self.engine is not None
        state = self.engine.state
        if state.aside_state != "renamed" or not state.aside_db:
            self.host.notify(f"Nothing to roll back to: {self.engine.production_state()}")
            return

        def confirmed(typed: str | None) -> None:
            if typed:
                self.host.rollback_run(typed)

        self.screen.app.push_screen(rollback_dialog(state), confirmed)

    def sign_off(self) -> None:
        """Runbook section 4's sign-off: show the entry, ask who signs, append it."""
        host = self.host
        if self.engine is None or self.engine.state.mode != "drill":
            host.notify("Sign-off is for drills: start one with `preskool-dr tui --drill`.")
            return
        if host.engine_busy():
            host.notify("A step is running: sign off when it has finished.", severity="warning")
            return
        state = self.engine.state
        if state.drill_log_entry is not None:
            host.notify(f"This drill is already in the drill log ({state.drill_log_entry[:12]}).")
            return
        sign_off = DrillSignOff(
            self.screen.app,
            self.engine,
            what="drill entry",
            sign_key=host.sign_key,
            configured_key=host.config.drill.sign_key,
            log_path=host.drill_log,
        )
        sign_off.ask(host.operator or state.operator, self._signed_off)

    def _signed_off(self, outcome: SignedOff | None) -> None:
        if outcome is None:
            self.host.notify("Not signed off yet: use the palette (ctrl+p) → Sign off the drill.")
            return
        if not outcome.appended:
            self.screen.log_panel.add("drill", outcome.message, style="bold")
            return
        self.screen.log_panel.add("drill", outcome.message)
        self.screen.refresh_run()
