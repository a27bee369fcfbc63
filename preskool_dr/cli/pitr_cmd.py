"""`preskool-dr pitr`: point-in-time recovery into a new data directory, headless, one
line per step transition (the same core the TUI will drive)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import humanize

from preskool_dr.cli.main import Context
from preskool_dr.cli.notifying import notifier
from preskool_dr.cli.output import (
    TtyProgress,
    cancel_on_signals,
    json_logging,
    print_json,
    print_run_event,
    say,
)
from preskool_dr.cli.restore_cmd import sign_off
from preskool_dr.core.base.errors import Cancelled, DrError, UsageError
from preskool_dr.core.base.events import Event, EventSink, Progress
from preskool_dr.core.pitr.journal import journal_path, resume_command
from preskool_dr.core.pitr.notices import PitrNotices
from preskool_dr.core.pitr.plan import RecoverableRange, recoverable_ranges
from preskool_dr.core.pitr.request import PitrRequest, iso, parse_target
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.pitr.server import stop_command
from preskool_dr.core.pitr.steps import STEPS


def run(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.config
    if args.ranges:
        return _show_ranges(recoverable_ranges(config, on_event=print_event), args.json)
    cancel = threading.Event()
    notices = PitrNotices(notifier(config), print_event)
    runner = (
        _resumed(args, ctx, cancel, notices) if args.resume else _new(args, ctx, cancel, notices)
    )
    notices.runner = runner
    request = runner.request
    say(
        f"point-in-time recovery to {iso(request.target)} into {runner.data_dir} "
        f"(port {request.port}){f', resuming run {args.resume}' if args.resume else ''}"
        f"{', a drill' if request.drill else ''}",
    )
    error: DrError | None = None
    with cancel_on_signals(cancel):
        try:
            runner.run()
            notices.finished()
        except Cancelled as exc:
            _summary(runner, exc)
            raise
        except DrError as exc:
            error = exc
        _summary(runner, error)
        passed = True
        if request.drill and runner.state is not None:
            passed = sign_off(runner, args, runner.state.operator)
    if error is not None:
        raise error
    return 0 if passed else 1


def _new(
    args: argparse.Namespace, ctx: Context, cancel: threading.Event, on_event: EventSink
) -> PitrRun:
    missing = [
        flag
        for flag, value in (
            ("--target-time", args.target_time),
            ("--data-dir", args.data_dir),
            ("--port", args.port),
        )
        if value is None
    ]
    if missing:
        raise UsageError(f"pitr needs {', '.join(missing)} (see preskool-dr pitr --help)")
    request = PitrRequest(
        target=parse_target(args.target_time),
        data_dir=args.data_dir,
        port=args.port,
        confirm=args.confirm or "",
        incident=parse_target(args.incident_time) if args.incident_time else None,
        server_python=args.server_python or sys.executable,
        operator=args.performed_by or "",
        drill=args.drill,
    )
    return PitrRun(ctx.config, request, on_event=on_event, cancel=cancel)


def _resumed(
    args: argparse.Namespace, ctx: Context, cancel: threading.Event, on_event: EventSink
) -> PitrRun:
    """The journal holds what was asked: options that would change it are refused."""
    given = [
        flag
        for flag, value in (
            ("--target-time", args.target_time),
            ("--data-dir", args.data_dir),
            ("--port", args.port),
            ("--incident-time", args.incident_time),
            ("--server-python", args.server_python),
            ("--drill", args.drill),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"--resume takes its settings from the run's journal: drop {', '.join(given)}"
        )
    return PitrRun.resume(
        ctx.config, args.resume, args.confirm or "", on_event=on_event, cancel=cancel
    )


def _show_ranges(ranges: list[RecoverableRange], as_json: bool) -> int:
    if as_json:
        print_json(
            [
                {
                    "base_backup": r.base.name,
                    "start": iso(r.start),
                    "end": iso(r.end) if r.end else None,
                    "usable": r.usable,
                    "last_segment": r.last_segment,
                    "gap": r.gap,
                    "locations": r.record.locations,
                }
                for r in ranges
            ]
        )
        return 0
    if not ranges:
        print("no base backup: take one with `preskool-dr backup --kind base`")
        return 0
    for item in ranges:
        print(f"{item.base.name}  {item.describe()}")
    return 0


def _summary(runner: PitrRun, error: DrError | None) -> None:
    state = runner.state
    if state is None:
        return  # refused before anything started: the error line says why
    if error is None:
        end = state.recovery_end or state.range_start
        rpo = humanize.precisedelta(state.rpo_seconds or 0, minimum_unit="seconds", format="%0.0f")
        limit = runner.config.thresholds.rpo_wal_hours
        say(
            f"RESULT DONE  run {state.run_id}  recovered to {iso(end)} (target "
            f"{iso(state.target)}; first transaction not replayed "
            f"{iso(state.stop_point)})",
        )
        say(
            f"       RPO achieved: {rpo} (incident {iso(state.incident)} - recovery end "
            f"{iso(end)}; target <= {limit:g} h)",
        )
    else:
        say(
            f"RESULT {state.result.upper()}  run {state.run_id}  at step "
            f"{state.failed_step() or '?'}",
        )
        if isinstance(error, Cancelled):
            say(f"       resume: {resume_command(state)}")
    if state.server_running:
        say(
            f"       server running on port {state.port}, data directory {state.data_dir}"
            f"{f', timeline {state.timeline}' if state.timeline else ''}",
        )
        say(f"       stop it: {stop_command(Path(state.data_dir))}")
        say(
            "       WAL archiving is off on this copy: before it becomes production, set "
            "archive_mode = on and take a base backup (docs/PITR.md)",
        )
    say(f"       server log: {state.server_log}")
    say(f"       journal: {journal_path(runner.config.state_dir, state.run_id)}")


_tty_progress = TtyProgress() if sys.stderr.isatty() else None


def print_event(event: Event) -> None:
    """As `restore`; replay progress is a time, not bytes: shown as its own line."""
    if (
        isinstance(event, Progress)
        and (event.unit != "bytes" or event.step_id == "replay")
        and not json_logging()  # JSON lines carry every progress event alike
    ):
        if _tty_progress is not None and event.current:
            sys.stderr.write(f"\r{event.current}\x1b[K")
            sys.stderr.flush()
        return
    print_run_event(event, len(STEPS), _tty_progress)
