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
    add_log_format_option,
    cancel_on_signals,
    json_logging,
    print_json,
    print_run_event,
    say,
)
from preskool_dr.cli.restore_cmd import add_sign_off_options, sign_off
from preskool_dr.core.base.errors import Cancelled, DrError, UsageError
from preskool_dr.core.base.events import Event, EventSink, Progress
from preskool_dr.core.pitr.journal import journal_path, resume_command
from preskool_dr.core.pitr.notices import PitrNotices
from preskool_dr.core.pitr.plan import RecoverableRange, recoverable_ranges
from preskool_dr.core.pitr.request import PitrRequest, iso, parse_target
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.pitr.server import stop_command
from preskool_dr.core.pitr.steps import STEPS

EPILOG = """\
examples:
  preskool-dr pitr --ranges
      what can be recovered: each base backup's range, up to the newest archived WAL
  preskool-dr pitr --target-time 2026-02-20T10:45:00Z --data-dir /srv/pg/recovered \\
        --port 5433 --confirm /srv/pg/recovered
      recover the cluster as it was at 10:45 UTC into /srv/pg/recovered, on port 5433
  preskool-dr pitr --resume 20260220-104700-a1b2 --confirm /srv/pg/recovered
      go on with a run that was killed or interrupted (Ctrl-C, SSH dropped, kill)
  preskool-dr pitr --drill --performed-by alice --target-time ... --data-dir ... --port ...
      a PITR drill: validation on the recovered copy, RTO/RPO in the signed drill log

What happens: the newest base backup that ended before the target is verified (MD5
sidecars), extracted into --data-dir (which must be new or empty: a live data directory is
never touched) and checked with pg_verifybackup; recovery.signal and postgresql.auto.conf
get restore_command (preskool-dr wal-fetch), recovery_target_time, promote, port; then the
server replays the archived WAL up to the target, promotes, and is left running. Nothing
starts when the target is outside the recoverable range (that range is printed).

--drill also checks the recovered database (restore_test: required tables, smoke queries)
and appends a signed entry to the drill log: RPO = incident (default the target) minus the
last transaction replayed, judged against thresholds.rpo_wal_hours; RTO = the run's start
until the recovered server accepted read-write connections.

As root, the server runs as the postgres OS user, which must be able to run the Python
given by --server-python (default: this one) with preskool-dr installed. A time without an
offset is UTC. Exit codes: 0 reached the target (and, with --drill, the drill passed),
1 failed, 2 usage (confirmation, directory not empty, port in use, target outside the range,
a run that cannot be resumed), 130 interrupted (resumable with --resume).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "pitr",
        help="point-in-time recovery: base backup + archived WAL into a new data directory",
        description=(
            "Recover the whole cluster as it was at --target-time into a new data directory,\n"
            "from a base backup (backup --kind base) and the WAL archive (wal-push)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target-time", metavar="ISO8601", help="recover up to this moment")
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="new (or empty) data directory to create"
    )
    parser.add_argument("--port", type=int, metavar="N", help="port for the recovered server")
    parser.add_argument(
        "--confirm", metavar="DIR", help="--data-dir typed again: nothing runs unless it matches"
    )
    parser.add_argument(
        "--incident-time",
        metavar="ISO8601",
        help="when the incident happened, for the RPO (default: the target time)",
    )
    parser.add_argument(
        "--server-python",
        metavar="PATH",
        help="Python with preskool-dr that the recovered server runs wal-fetch with "
        f"(default: {sys.executable})",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="go on with an interrupted run (--confirm repeats its data directory)",
    )
    parser.add_argument(
        "--drill",
        action="store_true",
        help="a PITR drill: validate the recovered copy, append a signed drill-log entry",
    )
    add_sign_off_options(parser)
    parser.add_argument(
        "--ranges", action="store_true", help="show the recoverable ranges and exit"
    )
    parser.add_argument("--json", action="store_true", help="with --ranges: JSON records")
    add_log_format_option(parser)
    parser.set_defaults(handler=run)


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
