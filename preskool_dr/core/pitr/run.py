"""`pitr`: point-in-time recovery from a base backup plus the archived WAL.

The runbook's `pg_restore --target-time` does not exist: pg_restore cannot replay WAL.
Here the PostgreSQL server itself replays it: the newest base backup that ended before
the target is extracted into a NEW data directory, recovery settings point its
restore_command at `preskool-dr wal-fetch`, and the server replays to
`recovery_target_time`, then promotes.

Safety, as for the logical restore: nothing starts unless --confirm repeats the data
directory, that directory is new or empty (a live one is never touched, so there is
nothing to roll back: delete the new directory), the target lies inside the range the
backups can reach (checked from the archive before anything is written), and every file
is verified (MD5 sidecars, then pg_verifybackup against the SHA-256 manifest). Each step
transition is saved to `<state dir>/pitr/<run_id>.json` (0600, atomic), from which a killed
or interrupted run resumes (`PitrRun.resume`, `pitr --resume RUN_ID`).

This module is the run's state machine: the steps in order (steps.py), the journal kept at
each transition (journal.py), resuming. What each step does lives beside it: request.py (the
checks before anything is written), plan.py (step 1: the base backup and the recoverable
range), datadir.py (steps 2-3: fetch, verify, extract), server.py (steps 4-5: recovery
settings, pg_ctl, the server's log), replay.py (step 6), verify.py (step 7).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from preskool_dr.core.backup.base_info import base_tar_md5
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.errors import Cancelled, DrError, VerificationError
from preskool_dr.core.base.events import (
    EventSink,
    Notice,
    StepChanged,
    StepStatus,
    ignore_events,
    utcnow,
)
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr import datadir, server, verify
from preskool_dr.core.pitr.journal import PitrJournal, PitrState, resume_command
from preskool_dr.core.pitr.plan import RecoverableRange, plan_recovery
from preskool_dr.core.pitr.replay import follow_replay
from preskool_dr.core.pitr.request import PitrRequest, check_request, iso, resume_request
from preskool_dr.core.pitr.server import LOG_NAME, RecoveredServer
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.core.restore.engine import default_operator
from preskool_dr.core.restore.journal import new_run_id

START_WAIT_SECONDS = 120.0


class PitrRun:
    """One recovery; `run()` goes through STEPS and returns the final state. `resume()`
    picks up a run whose process was killed or interrupted, from its journal."""

    def __init__(
        self,
        config: Config,
        request: PitrRequest,
        *,
        on_event: EventSink = ignore_events,
        cancel: threading.Event | None = None,
        journal: PitrState | None = None,
    ) -> None:
        self.config = config
        self.request = request
        self.on_event = on_event
        self.cancel = cancel or threading.Event()
        self.settings = WalSettings.from_config(config)
        # A resumed run's directory holds its own partial work: only a new one must be empty.
        self.data_dir = check_request(request) if journal is None else Path(journal.data_dir)
        self.state: PitrState | None = journal
        self.plan: RecoverableRange | None = None
        self.backup_path: Path | None = None  # the verified local copy, once fetched
        self.server = RecoveredServer(config, self.data_dir, request.port, on_event)
        self._declared = utcnow()
        self._step_started: dict[str, float] = {}

    @classmethod
    def resume(
        cls,
        config: Config,
        run_id: str,
        confirm: str,
        *,
        on_event: EventSink = ignore_events,
        cancel: threading.Event | None = None,
    ) -> PitrRun:
        """Re-attach to run `run_id` (killed, or stopped with Ctrl-C/SIGTERM); UsageError
        saying what to do instead when it is done, failed, or still running elsewhere."""
        state = PitrJournal(config.state_dir).load(run_id)
        request = resume_request(state, confirm)
        return cls(config, request, on_event=on_event, cancel=cancel, journal=state)

    # ------------------------------------------------------------ bookkeeping

    def _step(self, step_id: str, status: StepStatus, detail: str = "") -> None:
        number = next(i for i, (sid, _) in enumerate(STEPS, 1) if sid == step_id)
        title = STEPS[number - 1][1]
        if status is StepStatus.RUNNING:
            self._step_started[step_id] = time.monotonic()
        if self.state is not None:
            self.state.steps[step_id] = status.value
            if detail:
                self.state.details[step_id] = detail
            started = self._step_started.get(step_id)
            if status is not StepStatus.RUNNING and started is not None:
                self.state.step_seconds[step_id] = time.monotonic() - started
            self._save()
        self.on_event(StepChanged(step_id, number, title, status, detail))

    def _save(self) -> None:
        assert self.state is not None
        PitrJournal(self.config.state_dir).save(self.state)

    def remember_drill_entry(self, sha256: str, line: int, log: Path) -> None:
        """The drill log's line for this run (drill.record): kept in the journal."""
        assert self.state is not None
        self.state.drill_log_entry = sha256
        self.state.drill_log_line = line
        self.state.drill_log_path = str(log)
        self._save()

    def _notice(self, level: str, text: str, step_id: str) -> None:
        self.on_event(Notice(level, text, step_id))
        if self.state is not None and level in ("warn", "error"):
            self.state.notes.append(text)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("point-in-time recovery interrupted")

    def _fail_if_dead(self, *, started: bool) -> None:
        failure = self.server.failure(started=started)
        if failure is not None:
            assert self.state is not None
            self.state.server_running = False
            raise DrError(failure)

    # ------------------------------------------------------------ the steps

    def run(self) -> PitrState:
        first = self._plan_new() if self.state is None else self._plan_resume()
        assert self.state is not None
        actions = (
            ("fetch", self._fetch),
            ("extract", self._extract),
            ("configure", self._configure),
            ("start", self._start),
            ("replay", self._replay),
            ("verify", self._verify),
        )
        ids = [step_id for step_id, _ in actions]
        current = first
        try:
            for current, action in actions[ids.index(first) :]:
                self._check_cancel()
                self._step(current, StepStatus.RUNNING)
                detail = action()
                self._step(current, StepStatus.DONE, detail)
            self.state.result = "done"
        except Cancelled as exc:
            self.state.result = "interrupted"
            self._step(current, StepStatus.FAILED, str(exc))
            raise
        except DrError as exc:
            self.state.result = "failed"
            self._step(current, StepStatus.FAILED, str(exc))
            raise
        except OSError as exc:  # e.g. a full disk while extracting
            self.state.result = "failed"
            error = DrError(f"step {current} failed: {exc}")
            self._step(current, StepStatus.FAILED, str(error))
            raise error from None
        finally:
            self.server.close()
            self.state.server_running = self.server.pid() is not None
            self.state.finished_at = utcnow()
            self._save()
        return self.state

    def _choose(self, detail: str) -> RecoverableRange:
        """Step 1 (also on resume: the archive is read again): the plan, or the step fails."""
        self._step("plan", StepStatus.RUNNING, detail)
        try:
            plan = plan_recovery(self.config, self.request.target, on_event=self.on_event)
            if self.state is not None and plan.base.name != self.state.base_backup:
                raise DrError(
                    f"the archive now points to base backup {plan.base.name}, not this run's "
                    f"{self.state.base_backup}: remove {self.data_dir} and start a new pitr"
                )
            server.check_server_python(self.request.server_python)
        except DrError as exc:
            self._step("plan", StepStatus.FAILED, str(exc))
            raise
        self.plan = plan
        return plan

    def _plan_new(self) -> str:
        request = self.request
        plan = self._choose(f"target {iso(request.target)}")
        self.state = new_state(request, plan, self.data_dir, self._declared)
        self._step("plan", StepStatus.DONE, f"{plan.base.name}; recoverable {plan.describe()}")
        self._notice(
            "info",
            f"run {self.state.run_id}; if it is interrupted: {resume_command(self.state)}",
            "plan",
        )
        return "fetch"

    def _plan_resume(self) -> str:
        """Where a killed or interrupted run goes on: a running server is followed (its
        recovery never stopped), a stopped one started again (recovery goes on from its last
        restartpoint), and a run stopped before its server started begins again from the
        fetch, in the emptied directory (all in it is this run's partial work)."""
        state = self.state
        assert state is not None
        interrupted_at = next(
            (sid for sid, _ in STEPS if state.steps[sid] in ("running", "failed")), "?"
        )
        state.result, state.pid, state.finished_at = "running", os.getpid(), None
        plan = self._choose(f"resuming run {state.run_id}, stopped in step {interrupted_at}")
        pid = self.server.pid()
        if pid is not None:
            first = "replay"
            how = f"its server (pid {pid}) is running: following its recovery"
            self.server.log.skip_history()
        elif state.steps["configure"] == "done" and (self.data_dir / "PG_VERSION").exists():
            first = "start"
            how = "its server is stopped: starting it again; recovery goes on where it was"
            self.server.log.skip_history()
        else:
            first = "fetch"
            datadir.empty_data_dir(self.data_dir)
            how = (
                f"emptied {self.data_dir} (the partial work of step {interrupted_at}) and "
                "starting again from the fetch"
            )
        order = [sid for sid, _ in STEPS]
        for sid in order[1:]:
            before = order.index(sid) < order.index(first)
            state.steps[sid] = StepStatus.DONE.value if before else StepStatus.PENDING.value
        state.notes.append(f"resumed at {iso(utcnow())}: {how}")
        self._step("plan", StepStatus.DONE, f"{plan.base.name}; resumed: {how}")
        return first

    def _fetch(self) -> str:
        assert self.plan is not None
        path, files = datadir.fetch_base_backup(self.config, self.plan, self.on_event, self.cancel)
        self.backup_path = path
        return f"{path}: {files} files match their MD5"

    def _extract(self) -> str:
        assert self.backup_path is not None
        datadir.extract_base_backup(
            self.backup_path,
            self.data_dir,
            self.on_event,
            self.cancel,
            self.config.encryption.identity,
        )
        mismatch = datadir.manifest_mismatch(self.backup_path, self.data_dir, self.cancel)
        self._check_cancel()
        if mismatch is not None:
            raise VerificationError(
                f"pg_verifybackup found the extracted files differ from the manifest: {mismatch}"
            )
        return f"extracted into {self.data_dir}; pg_verifybackup: every file matches the manifest"

    def _configure(self) -> str:
        assert self.state is not None
        for name in server.write_missing_config_files(self.data_dir):
            self._notice(
                "warn",
                f"the base backup has no {name} (kept outside the data directory, as on "
                f"Debian): wrote a minimal one; copy the production one in before cut-over",
                "configure",
            )
        target = self.request.target.astimezone(UTC)
        server.write_recovery_settings(
            self.data_dir,
            f"preskool-dr pitr run {self.state.run_id} at {iso(self.state.created_at)}: "
            f"recover {self.state.base_backup} to {iso(target)}",
            port=self.request.port,
            target=target,
            restore=server.restore_command(self.request.server_python, self.settings),
        )
        return f"recovery.signal + postgresql.auto.conf: target {iso(target)}, port {self.request.port}"

    def _start(self) -> str:
        self.server.start()
        deadline = time.monotonic() + START_WAIT_SECONDS
        while self.server.pid() is None:
            self.server.forward_log()
            self._fail_if_dead(started=False)
            if time.monotonic() > deadline:
                raise DrError(
                    f"the server did not start within {START_WAIT_SECONDS:.0f} s: "
                    f"see {self.server.log.path}"
                )
            self._check_cancel()
            time.sleep(0.2)
        assert self.state is not None
        self.state.server_running = True
        return (
            f"postmaster pid {self.server.pid()}, port {self.request.port}, "
            f"log {self.server.log.path}"
        )

    def _replay(self) -> str:
        assert self.plan is not None and self.state is not None
        follow_replay(
            self.server,
            self.plan.base.start_lsn,
            self.request.target,
            self.on_event,
            self._between_polls,
        )
        # Seen within a poll of the promotion: the end of the RTO (read-write connections).
        self.state.accepting_at = self.state.accepting_at or utcnow()
        self.server.forward_log()
        stop = self.server.log.stop_point()
        return (
            f"stopped before transaction {stop[0]} of {iso(stop[1])}" if stop else "recovery ended"
        )

    def _between_polls(self) -> None:
        """While replaying: stop when the server died or the run is cancelled."""
        self._fail_if_dead(started=True)
        self._check_cancel()

    def _verify(self) -> str:
        assert self.state is not None and self.plan is not None
        reached = verify.check_reached(self.state, self.server, self.request.target, self._notice)
        recovered_to = self.state.recovery_end or self.plan.start
        self.state.rpo_seconds = max(0.0, (self.state.incident - recovered_to).total_seconds())
        if not self.request.drill:
            return reached
        checks = verify.validate_copy(self.config, self.request.port)
        self.state.validation = checks
        failed = [c for c in checks if not c["ok"]]
        if failed:
            raise VerificationError(
                f"{reached}; but the recovered {self.config.database.name} fails validation: "
                f"{failed[0]['name']}: {failed[0]['detail']}"
            )
        return f"{reached}; {len(checks)} validation checks passed"


def run_pitr(
    config: Config,
    request: PitrRequest,
    *,
    on_event: EventSink = ignore_events,
    cancel: threading.Event | None = None,
) -> PitrState:
    """Recover into request.data_dir and leave that server running, promoted."""
    return PitrRun(config, request, on_event=on_event, cancel=cancel).run()


def new_state(
    request: PitrRequest, plan: RecoverableRange, data_dir: Path, declared: datetime
) -> PitrState:
    """The journal record of a new run, once step 1 has chosen its base backup."""
    now = utcnow()
    return PitrState(
        run_id=new_run_id(now),
        created_at=now,
        operator=request.operator or default_operator(),
        target=request.target,
        incident=request.incident or request.target,
        data_dir=str(data_dir),
        port=request.port,
        base_backup=plan.base.name,
        range_start=plan.start,
        range_end=plan.end,
        server_log=str(data_dir / LOG_NAME),
        steps={sid: StepStatus.PENDING.value for sid, _ in STEPS},
        backup_md5=base_tar_md5(plan.base.members),
        tool_host=socket.gethostname(),
        declared_at=declared,
        drill=request.drill,
        server_python=request.server_python,
        pid=os.getpid(),
    )
