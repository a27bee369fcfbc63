"""The engine's work for the TUI, in thread workers: each returns a typed report, posted once
the worker is over to the screen that shows the run; the engine's events are posted there
as they come (tui/app.py's DrApp is a RunWorkerApp, which keeps the lifecycle)."""

from __future__ import annotations

import threading
from datetime import datetime

from textual import on, work
from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState

from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import Event, Progress, StepChanged, StepStatus
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
from preskool_dr.tui.hang_up import freeze_heap
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
from preskool_dr.tui.notices import NoticeApp
from preskool_dr.tui.resumable import why_not_resumable
from preskool_dr.tui.screens.pitr import PitrScreen, exit_code_after


class RunWorkerApp(NoticeApp):
    """The run the App holds (set by DrApp.__init__) and the workers that act on it."""

    config: Config
    drill: bool
    target_db_option: str | None
    operator: str
    engine: Engine | None
    incident_at: datetime | None  # declared before the run exists
    cancel: threading.Event  # set to stop the running step or recovery
    pitr_run: PitrRun | None  # the point-in-time recovery under way
    pitr_exit_code: int  # what the last recovery's end means for the exit code
    # Where the engine's events go: the checklist, or the PITR screen while a recovery
    # runs. Read from the worker's thread, so set before the work starts.
    _events_to: MessagePump | None
    # The same restore notifications as the CLI's (start, a failed step, the end).
    notices: RestoreNotifications
    _notified: set[tuple[str, str]]  # (run_id, "started"/"finished")
    _pitr_notices: PitrNotices | None  # the recovery under way's

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
        # a place that could not be listed is not a place without backups
        none = "No backups listed" if warnings else "No backups found"
        note = f"{len(records)} backups in {where}" if records else f"{none} in {where}"
        if warnings:
            note += "; not all could be read (the log, 4, says why; F5 lists again)"
        return BackupsListed(records, "; ".join([note, *warnings]), warnings)

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
        # The state this message is about, not the worker's state now: a worker that has
        # ended before the loop reads its earlier (pending, running) messages would otherwise
        # have its report handled once per message (the "resumed" notice three times).
        report: object
        if event.state is WorkerState.SUCCESS:
            report = worker.result
        elif event.state is WorkerState.ERROR:
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
