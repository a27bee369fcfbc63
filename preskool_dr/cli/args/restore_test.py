"""The parser of `preskool-dr restore-test` (its options and help): imported to build the
command line; the command itself (cli/restore_test_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from typing import Any

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.cli.args.options import add_log_format_option

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
    parser.set_defaults(handler=lazy("restore_test_cmd", "run"))
