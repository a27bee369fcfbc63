"""Steps 1, 7, 8 and 9: the application's side of the runbook.

1 app_offline (app.stop), 7 migrate (app.migrate) and 8 app_online (app.start) run the
runbook's commands (argv lists, no shell); 9 health polls app.health_url for a 2xx. A drill
only ever runs drill.app's commands: a step with no command is skipped, saying why.
"""

from __future__ import annotations

import threading
from pathlib import Path

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import Progress, StepStatus, utcnow
from preskool_dr.core.restore.appctl import HealthTry, check_health, run_app_command
from preskool_dr.core.restore.journal import StepRecord
from preskool_dr.core.restore.steps.context import StepOutcome, StepRun


def app_offline(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 1."""
    return _app_command(run, "stop", record, cancel)


def migrate(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 7."""
    return _app_command(run, "migrate", record, cancel)


def app_online(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 8."""
    return _app_command(run, "start", record, cancel)


def health(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 9: the RTO ends when the application answers."""
    url = run.app.health_url
    if not url:
        record.detail = "no health_url configured: the RTO ends when the last step settles"
        record.skip_reason = record.detail
        return StepStatus.SKIPPED

    def tried(attempt: HealthTry) -> None:
        # `current` the answer; the rate makes the ETA the time left before giving up
        left = attempt.most - attempt.attempt
        rate = left / attempt.seconds_left if attempt.seconds_left > 0 and left else 0.0
        run.on_event(
            Progress(
                record.id,
                "health",
                attempt.attempt,
                attempt.most,
                rate=rate,
                current=attempt.answer,
                unit="tries",
            )
        )

    result = check_health(
        url,
        wait_seconds=run.app.health_wait_seconds,
        cancel=cancel,
        on_attempt=run.log(record, "health"),
        on_try=tried,
    )
    # the last: every try made, and the last answer (it closes a terminal's progress line)
    answer = str(result.status) if result.status is not None else "no answer"
    run.on_event(
        Progress(
            record.id, "health", result.attempts, result.attempts, current=answer, unit="tries"
        )
    )
    if not result.ok:
        raise DrError(
            f"{result.detail} - check that the application is up and healthy, then resume this run"
        )
    run.state.app_accessible_at = utcnow()
    return result.detail


def _app_command(
    run: StepRun, which: str, record: StepRecord, cancel: threading.Event
) -> StepOutcome:
    key = f"{'drill.app' if run.drill else 'app'}.{which}"
    if run.drill and which in ("stop", "start") and not getattr(run.app, which):
        record.detail = f"drill: app.{which} is never run against production"
        record.skip_reason = record.detail
        return StepStatus.SKIPPED
    argv = getattr(run.app, which)
    if not argv:
        record.detail = f"no {key} command in runbook.yaml"
        record.skip_reason = record.detail
        return StepStatus.SKIPPED
    if which == "stop":
        _check_server(run)
    env = {
        "PRESKOOL_DR_TARGET_DB": run.state.target_db,
        "PRESKOOL_DR_RUN_ID": run.state.run_id,
    }
    result = run_app_command(
        argv,
        cwd=run.app.cwd,
        timeout=run.app.timeout_seconds,
        env=env,
        on_line=run.log(record, Path(argv[0]).name),
        cancel=cancel,
    )
    if not result.ok:
        hint = f" (or raise {key.rsplit('.', 1)[0]}.timeout_seconds)" if result.timed_out else ""
        raise DrError(f"{key}: {result.describe()} - fix the command{hint}, then resume this run")
    return result.describe()


def _check_server(run: StepRun) -> None:
    """Before step 1 takes the app down: step 5 needs the admin connection and the app
    role, or the downtime buys nothing (server down, wrong password, no role)."""
    db = run.config.database
    try:
        with database.connect(db, admin=True) as conn:
            database.require_role(conn, db.user)
        run.ensure_server_lock()  # no downtime for a run another one would refuse
    except DrError as exc:
        raise DrError(f"{exc} (the application was left running)") from None
