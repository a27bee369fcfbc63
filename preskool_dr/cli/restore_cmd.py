"""`preskool-dr restore`: the nine-step engine, headless, one line per step transition."""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from preskool_dr.cli.main import Context
from preskool_dr.cli.notifying import RestoreNotices, notifier
from preskool_dr.cli.output import (
    TtyProgress,
    cancel_on_signals,
    print_json,
    print_run_event,
    say,
    tagged,
)
from preskool_dr.core.base import database
from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.base.events import Event
from preskool_dr.core.base.notify import Notification
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal, parse_time
from preskool_dr.core.restore.notices import outcome_text
from preskool_dr.core.restore.report import build_report, to_markdown
from preskool_dr.core.storage import catalog

if TYPE_CHECKING:  # a drill's sign-off (and with it PITR and boto3) loads only for a drill
    from preskool_dr.core.drill import record as drill


def run(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.config
    if args.list_runs:
        return _list_runs(Journal(config.state_dir))
    if args.report:
        return _report(config, args.report, args.format)
    if args.format != "markdown":
        raise UsageError("--format goes with --report RUN_ID")
    if args.rollback or args.drop_aside:
        engine = Engine.reopen(
            config,
            args.rollback or args.drop_aside,
            on_event=print_event,
            action="roll back" if args.rollback else "drop the aside copy of",
        )
        try:
            if args.rollback:
                engine.rollback(args.confirm)
            else:
                engine.drop_aside(args.confirm)
        finally:
            engine.close()
        return 0
    cancel = threading.Event()
    notices = RestoreNotices(config, print_event)
    with cancel_on_signals(cancel):
        if args.resume:
            engine = Engine.resume(config, args.resume, on_event=notices)
        else:
            engine = _start(args, ctx, notices)
        try:
            engine.check_confirmation(args.confirm)
            say(
                f"run {engine.state.run_id}: {engine.state.mode} of "
                f"{engine.state.backup.name if engine.state.backup else '?'} into "
                f"{engine.state.target_label}",
                event="run",
                run_id=engine.state.run_id,
            )
            notices.started(engine, resumed=bool(args.resume))
            ok = engine.run_all(args.confirm, cancel)
            notices.finished(engine, _summary(engine))
            if engine.drill and engine.state.result != "interrupted":
                ok = _sign_off(engine, args) and ok
        finally:
            engine.close()
    if engine.state.result == "interrupted":
        return 130
    return 0 if ok else 1


def _start(args: argparse.Namespace, ctx: Context, on_event: RestoreNotices) -> Engine:
    config = ctx.config
    if not args.backup:
        raise UsageError("name the BACKUP to restore (a path, a name, s3://..., or 'latest')")
    target = args.target_db or (config.drill.target_db if args.drill else config.database.name)
    database.check_database_name(target)  # before --confirm is compared: say why, not "mismatch"
    if args.confirm != target:
        raise UsageError(
            f"--confirm {args.confirm or '(missing)'} does not match the target database "
            f"{target!r}: nothing was changed"
        )
    found = catalog.resolve_backup(config, args.backup)  # exit 2 before any run exists
    incident = _parse_incident(args.incident_at)
    options = RunOptions(
        backup_spec=args.backup,
        target_db=target,
        operator=args.performed_by or "",
        incident_declared_at=incident,
        drill=args.drill,
        recreate_mode="drop" if args.drill else args.mode,
    )
    return Engine.start(config, options, on_event=on_event, found=found)


def _sign_off(engine: Engine, args: argparse.Namespace) -> bool:
    """Drill: append the signed entry (pass or fail), then maybe drop the drill database."""
    from preskool_dr.core.drill import record as drill

    passed = sign_off(engine, args, engine.state.operator)
    if args.drop_after or engine.config.drill.drop_after:
        drill.drop_drill_database(engine)
        tagged("OK", f"dropped the drill database {engine.state.target_db}")
    else:
        tagged("INFO", f"the drill database {engine.state.target_db} is kept for inspection")
    return passed


def sign_off(run: drill.DrillRun, args: argparse.Namespace, operator: str) -> bool:
    """Append the drill's entry (signed when a key is found) and say pass or fail."""
    from preskool_dr.core.drill import record as drill
    from preskool_dr.core.drill import signing

    key = signing.resolve_key(args.sign_key, run.config.drill.sign_key)
    result = drill.record(
        run,
        performed_by=args.performed_by or operator,
        signer=args.signer,
        key=key,
        log_path=args.drill_log,
        interactive=sys.stdin.isatty(),
    )
    verdict = drill.verdict(run)
    tagged(
        "OK" if verdict.result == "pass" else "FAIL",
        f"drill {verdict.result.upper()}: {result.message}",
    )
    outcome = drill.outcome(run)
    notifier(run.config).send(
        Notification(
            "drill_signed" if result.signed else "drill_recorded",
            f"run {outcome.run_id} {verdict.result.upper()}",
            result.message,
            level="success" if verdict.result == "pass" else "failure",
            details={
                "run_id": outcome.run_id,
                "backup": outcome.backup,
                "rto_seconds": round(verdict.rto_seconds),
                "rpo_seconds": None if verdict.rpo_seconds is None else round(verdict.rpo_seconds),
                "drill_log_line": result.line,
            },
        )
    )
    return verdict.result == "pass"


def _parse_incident(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise UsageError(
            f"--incident-at {text!r} is not ISO-8601 (e.g. 2026-02-20T03:55:00Z)"
        ) from None


_tty_progress = TtyProgress() if sys.stderr.isatty() else None


def print_event(event: Event) -> None:
    print_run_event(event, 9, _tty_progress)


def _summary(engine: Engine) -> str:
    """Print the RESULT lines; return their RTO and RPO text (for the notification)."""
    state = engine.state
    rto, rpo = state.rto_seconds, state.rpo_seconds
    outcome = outcome_text(state, engine.config.thresholds)
    say(
        f"RESULT {state.result.upper()}  run {state.run_id}  {outcome}",
        event="result",
        level="ok" if state.result == "done" else "error",
        run_id=state.run_id,
        result=state.result,
        rto_seconds=round(rto, 3),
        rpo_seconds=None if rpo is None else round(rpo, 3),
    )
    say(f"       {engine.production_state()}")
    if state.result in ("failed", "interrupted"):
        say(
            f"       resume: preskool-dr restore --resume {state.run_id} --confirm {state.target_db}"
        )
    return outcome


def _report(config: Config, run_id: str, form: str) -> int:
    """The run's timeline; an unknown run id is exit 2 naming the journal folder."""
    report = build_report(Journal(config.state_dir).load(run_id), config.thresholds)
    if form == "json":
        print_json(report.to_json())
    else:
        sys.stdout.write(to_markdown(report))
    return 0


def _list_runs(journal: Journal) -> int:
    runs = journal.runs()
    if not runs:
        print(f"no runs in {journal.dir}")
        return 0
    for state in runs:
        done = sum(1 for s in state.steps if s.settled)
        backup = state.backup.name if state.backup else "-"
        print(
            f"{state.run_id}  {state.mode:<7} {state.result:<11} {done}/9 steps  "
            f"{state.target_label}  {backup}  by {state.operator}"
        )
    return 0
