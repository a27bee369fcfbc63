"""The parser of `preskool-dr restore` (its options and help): imported to build the
command line; the command itself (cli/restore_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.cli.args.options import add_log_format_option

EPILOG = """\
examples:
  preskool-dr restore latest --confirm preskool_db
      restore the newest backup into DB_NAME (the old database is kept aside)
  preskool-dr restore preskool-backup-20260220_020000.sql.gz --confirm preskool_db --mode drop
      the runbook's plain DROP instead of keeping the old database aside
  preskool-dr restore latest --drill --confirm preskool_drill --performed-by alice
      quarterly drill into drill.target_db; production is never touched
  preskool-dr restore --resume 20260220-041233-a1b2 --confirm preskool_db
      continue a run that was interrupted (Ctrl-C, SSH dropped, kill)
  preskool-dr restore --rollback 20260220-041233-a1b2 --confirm preskool_db
      put the old database (kept aside by that run) back
  preskool-dr restore --drop-aside 20260220-041233-a1b2 --confirm preskool_db_before_20260220_041233_a1b2
      drop the old copy once the restored database is known good
  preskool-dr restore --report 20260220-041233-a1b2 > postmortem-timeline.md
      the run's timeline for the postmortem (--format json for scripts)
  preskool-dr restore latest --confirm preskool_db --log-format json 2>> /var/log/preskool-dr.jsonl
      one JSON line per event on stderr, for journald and log shippers

Order: steps 2-4 (identify, download, verify) run before step 1 (app offline), so a bad
backup costs no downtime. Run inside tmux or screen over SSH. Exit codes: 0 done,
1 a step failed, 2 usage / confirmation mismatch / backup not found, 130 interrupted.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "restore",
        help="run the nine-step restore headless (same engine as the TUI)",
        description="Restore a backup into the target database through the runbook's nine steps.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "backup",
        nargs="?",
        metavar="BACKUP",
        help="a path, a file name in BACKUP_DIR, s3://bucket/key, or 'latest'",
    )
    parser.add_argument(
        "--confirm",
        metavar="DBNAME",
        help="the target database's name, typed out: nothing runs unless it matches",
    )
    parser.add_argument("--target-db", metavar="NAME", help="restore into NAME instead of DB_NAME")
    parser.add_argument(
        "--mode",
        choices=("aside", "drop"),
        default="aside",
        help="aside (default): rename the old database to <name>_before_<run>; drop: the seed's DROP",
    )
    parser.add_argument(
        "--drill", action="store_true", help="a rehearsal: never touches production"
    )
    parser.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run")
    parser.add_argument(
        "--rollback", metavar="RUN_ID", help="put back the database kept aside by RUN_ID"
    )
    parser.add_argument("--drop-aside", metavar="RUN_ID", help="drop the copy kept aside by RUN_ID")
    parser.add_argument(
        "--list-runs", action="store_true", help="list runs in the journal and exit"
    )
    parser.add_argument(
        "--report",
        metavar="RUN_ID",
        help="print RUN_ID's timeline for the postmortem (steps, backup, RTO/RPO) and exit",
    )
    parser.add_argument(
        "--format",
        choices=("markdown", "json"),
        default="markdown",
        help="with --report: markdown (default) or json",
    )
    parser.add_argument(
        "--incident-at",
        metavar="ISO8601",
        help="when the incident was declared (UTC; default now): the RTO counts from here",
    )
    add_sign_off_options(parser)
    parser.add_argument(
        "--drop-after", action="store_true", help="drill: drop the drill database when done"
    )
    add_log_format_option(parser)
    parser.set_defaults(handler=lazy("restore_cmd", "run"))


def add_sign_off_options(parser: argparse.ArgumentParser) -> None:
    """A drill's entry in the drill log: who, signed how, where (restore and pitr)."""
    parser.add_argument(
        "--performed-by", metavar="NAME", help="operator name for the journal/drill log"
    )
    parser.add_argument(
        "--signer", metavar="PRINCIPAL", help="drill-log signer (default --performed-by)"
    )
    parser.add_argument(
        "--sign-key", type=Path, metavar="PATH", help="SSH key that signs the drill entry"
    )
    parser.add_argument(
        "--drill-log", type=Path, metavar="PATH", help="drill log file to append to"
    )
