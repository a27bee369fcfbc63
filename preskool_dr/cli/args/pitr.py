"""The parser of `preskool-dr pitr` (its options and help): imported to build the
command line; the command itself (cli/pitr_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.cli.args.options import add_log_format_option
from preskool_dr.cli.args.restore import add_sign_off_options

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
    parser.set_defaults(handler=lazy("pitr_cmd", "run"))
