"""The parser of `preskool-dr list` (its options and help): imported to build the
command line; the command itself (cli/list_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from typing import Any

from preskool_dr.cli.args.lazy import lazy

# core/storage/catalog.py's SOURCES (a test keeps them equal)
SOURCES = ("local", "s3", "all")


DESCRIPTION = """\
Show every backup preskool-dr can find: files in BACKUP_DIR and objects under
s3://$S3_BUCKET/preskool-backups/, merged by name, newest first.

Columns: NAME, KIND (daily/weekly/pre-deploy/base, "unknown" without a .meta.json),
TIME (UTC, from the name), AGE, SIZE, WHERE (local, s3), CLASS (S3 storage class),
MD5 (a checksum sidecar exists; after CLASS, `(locked MODE to DATE)` when the S3 copy is
under Object Lock and backups.object_lock is configured), RESTORE (for GLACIER/DEEP_ARCHIVE copies:
needs restore / in progress / available). WHERE says BAD for a backup whose S3
objects are refused (a key that would be saved outside BACKUP_DIR): it is never
downloaded, and `latest` skips it. A .meta.json that cannot be read is reported
as bad metadata; the backup is still listed (kind unknown).
"""


EPILOG = """\
examples:
  preskool-dr list                      everything, local and S3
  preskool-dr list --source s3          only what is in the bucket
  preskool-dr list --json | jq '.[0]'   the newest backup, for scripts

next step in an outage:
  preskool-dr verify latest             checksum + gzip check of the newest backup
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "list",
        help="show the backup catalog (local and S3)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="all",
        help="where to look: BACKUP_DIR, the S3 bucket, or both (default: all)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list of records instead of a table"
    )
    parser.set_defaults(handler=lazy("list_cmd", "run"))
