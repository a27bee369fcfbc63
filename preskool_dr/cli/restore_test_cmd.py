"""`preskool-dr restore-test`: the runbook's weekly restore test (section 3.1)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from preskool_dr.cli.notifying import notifier
from preskool_dr.cli.output import add_log_format_option, print_json, tagged
from preskool_dr.cli.restore_cmd import print_event
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import ignore_events
from preskool_dr.core.base.notify import Notification
from preskool_dr.core.restore.restore_test import run_restore_test

DESCRIPTION = """\
Restore a backup into a scratch database (restore_test.database in runbook.yaml,
normally preskool_restore_test), check it, and drop it again.

The backup is verified first (MD5 sidecar + gzip integrity); a backup that fails is
never restored. Then: restore with psql (ON_ERROR_STOP), count the tables, check every
restore_test.required_tables table exists, compare row counts with those recorded at
backup time (the .meta.json beside the backup), and run each restore_test.smoke_queries
query. The scratch database is dropped at the end, also after a failure, Ctrl-C or
SIGTERM. The result is recorded for `preskool-dr check`.
"""

EPILOG = """\
examples:
  preskool-dr restore-test                   test the newest backup (local or S3)
  preskool-dr restore-test preskool-backup-20260220_020000.sql.gz
  preskool-dr restore-test s3://preskool-prod-backups/preskool-backups/preskool-backup-20260220_020000.sql.gz
  preskool-dr restore-test --json            machine-readable: ok, backup, checks[], seconds

cron (the seed's schedule: Sunday 03:00 UTC, after the weekly backup at 01:00; CRON_TZ=UTC):
  0 3 * * 0  preskool-dr restore-test >> /var/log/preskool-restore-test.log 2>&1

Needs DB_HOST/DB_PORT/DB_USER and PGPASSWORD for a role that may create and drop
databases (database.admin_user, normally postgres). Exit 0 passed, 1 failed,
2 backup not found or bad arguments, 3 the backup is archived in Glacier and must be
restored in S3 first.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore-test",
        help="restore a backup into a scratch database, check it, drop it",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "backup",
        nargs="?",
        default="latest",
        metavar="BACKUP",
        help="a path, a file name in BACKUP_DIR, s3://bucket/key, or latest (default)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of tagged lines"
    )
    add_log_format_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Any) -> int:
    on_event = ignore_events if args.json else print_event
    config = ctx.config
    # with --json, stdout is one JSON object: a delivery warning goes to stderr
    notify = notifier(config, sys.stderr if args.json else None)
    try:
        with _interrupts_stop_once():
            report = run_restore_test(config, args.backup, on_event=on_event)
    except DrError as exc:  # no backup to test, Glacier, no space: the test did not pass
        notify.send(Notification("restore_test_failed", args.backup, str(exc)))
        raise
    if not report.ok:
        details = {"database": report.database, "seconds": round(report.seconds, 1)}
        notify.send(
            Notification("restore_test_failed", report.backup, report.detail, details=details)
        )
    if args.json:
        print_json(report.to_json())
    else:
        verdict = "passed" if report.ok else "failed"
        tagged(
            "PASS" if report.ok else "FAIL",
            f"restore test of {report.backup} {verdict}: {report.detail}",
        )
    return 0 if report.ok else 1


@contextmanager
def _interrupts_stop_once() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the test like Ctrl-C (KeyboardInterrupt, so the scratch
    database is dropped on the way out); any further signal is ignored, so an impatient
    second Ctrl-C cannot interrupt that drop."""

    def cleaning_up(signum: int, frame: FrameType | None) -> None:
        print("preskool-dr: dropping the scratch database, please wait", file=sys.stderr)

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in handled:
            signal.signal(sig, cleaning_up)
        raise KeyboardInterrupt

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
