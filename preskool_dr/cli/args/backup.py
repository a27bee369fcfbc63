"""The parser of `preskool-dr backup` (its options and help): imported to build the
command line; the command itself (cli/backup_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from typing import Any

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.cli.args.options import add_log_format_option

# the logical backups' kinds: core/backup/logical.py's LOGICAL_KINDS (a test keeps them equal)
LOGICAL_KINDS = ("daily", "weekly", "pre-deploy")

EPILOG = """\
examples:
  preskool-dr backup                       daily backup (what cron runs at 02:00 UTC)
  preskool-dr backup --kind pre-deploy     before a release; kept locally for 7 days
  preskool-dr backup --kind weekly         Sunday archive; uploaded as GLACIER
  preskool-dr backup --format plain        only the runbook's .sql.gz this time (no
                                           .dump companion; see backups.companion)
  preskool-dr backup --kind base           physical base backup for `pitr` (docs/PITR.md)
  S3_BUCKET=preskool-prod-backups preskool-dr backup

cron (the seed's schedule):
  0 2 * * *  preskool-dr backup >> /var/log/preskool-backup.log 2>&1
  0 1 * * 0  preskool-dr backup --kind weekly >> /var/log/preskool-backup.log 2>&1

The database comes from DB_HOST/DB_PORT/DB_NAME/DB_USER with PGPASSWORD in the
environment; the file goes to BACKUP_DIR as preskool-backup-YYYYMMDD_HHMMSS.sql.gz
(UTC) with a .md5 sidecar and a .meta.json (kind, row counts). Beside it, from the
same snapshot, a pg_dump -Fc companion NAME.dump (own .md5) that step 6 restores with
pg_restore -j, unless backups.companion is false or backups are encrypted. A backup that
fails leaves no file behind under that name. Exit 0 when every step passed, 1 otherwise.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backup",
        help="dump the database now: gzip, md5 sidecar, verify, upload, retention",
        description=(
            "Dump the database with pg_dump (plain SQL, gzip), write the .md5 sidecar, read\n"
            "the file back to verify it, upload it when S3_BUCKET is set, and delete backups\n"
            "of the same kind that are past their retention."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--kind",
        choices=(*LOGICAL_KINDS, "base"),
        default="daily",
        help="which schedule this backup belongs to; sets retention and S3 storage class "
        "(default: daily)",
    )
    parser.add_argument(
        "--no-upload",
        action="store_true",
        help="keep this backup local only and do not touch S3 (not even retention there)",
    )
    parser.add_argument(
        "--format",
        choices=("plain", "custom"),
        default=None,
        help="plain: only the runbook's .sql.gz; custom: also a pg_dump -Fc companion "
        "NAME.dump of the same snapshot (own .md5, uploaded beside it) that step 6 restores "
        "with pg_restore -j (default: as backups.companion in runbook.yaml says: custom, "
        "plain when backups are encrypted)",
    )
    add_log_format_option(parser)
    parser.set_defaults(handler=lazy("backup_cmd", "run"))
