"""The parser of `preskool-dr verify` (its options and help): imported to build the
command line; the command itself (cli/verify_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from typing import Any

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.cli.args.options import add_log_format_option

DESCRIPTION = """\
Check that a backup is usable before you restore it: the MD5 of the file must match
its .md5 sidecar, the whole gzip stream must decompress (no corruption, not
truncated, nothing after the end), and the text must be whole pg_dump output (its
opening banner and its closing `-- PostgreSQL database dump complete` line). The file
is read once for all checks.

An encrypted backup (`.sql.gz.age`) has its sidecar over the encrypted bytes: without a
key only the MD5 is checked (and the output says so); with --identity FILE (or
PRESKOOL_DR_AGE_IDENTITY) it is also decrypted in the same read and its gzip and text
checked. No clear text is written anywhere.

BACKUP is a path, a file name inside BACKUP_DIR, s3://bucket/key, or `latest`
(the newest logical backup). A backup that is only in S3 is downloaded into
BACKUP_DIR first (with its .md5 and .meta.json); an interrupted download resumes.

Exit status: 0 ok, 1 bad (checksum mismatch, corrupt or truncated gzip, missing or
malformed sidecar, not a pg_dump backup or one cut short), 2 not found, 3 archived in GLACIER/DEEP_ARCHIVE and not restored
yet (use --request-restore, wait, then run verify again).
"""


EPILOG = """\
examples:
  preskool-dr verify latest
  preskool-dr verify preskool-backup-20260220_020000.sql.gz
  preskool-dr verify s3://preskool-prod-backups/preskool-backups/preskool-backup-20260220_020000.sql.gz
  preskool-dr verify preskool-backup-20260215_010000.sql.gz --request-restore   (weekly, Glacier)

the same check by hand, inside BACKUP_DIR:
  md5sum --check preskool-backup-20260220_020000.sql.gz.md5
  gunzip -t preskool-backup-20260220_020000.sql.gz
  age -d -i KEY preskool-backup-20260220_020000.sql.gz.age | gunzip -t   (encrypted)
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "verify",
        help="check a backup's md5 sidecar and gzip integrity (downloads from S3 if needed)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "backup", metavar="BACKUP", help="path, name in BACKUP_DIR, s3://..., latest"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--request-restore",
        action="store_true",
        help="for a backup archived in GLACIER/DEEP_ARCHIVE: ask S3 to restore it (exit 3); "
        "a backup that needs no restore is verified as usual",
    )
    add_log_format_option(parser)
    parser.set_defaults(handler=lazy("verify_cmd", "run"))
