"""The parser of `preskool-dr wal` (its options and help): imported to build the
command line; the command itself (cli/wal_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from preskool_dr.cli.args.lazy import lazy

EXIT_ABORT_RECOVERY = 255


ENVIRONMENT = """\
environment (the database server's, as PostgreSQL runs these as its OS user):
  BACKUP_DIR   the archive is BACKUP_DIR/wal/ (default /var/backups/preskool)
  S3_BUCKET    also s3://$S3_BUCKET/wal/, with AWS_* (incl. AWS_ENDPOINT_URL) for access
runbook.yaml is not read for these: set them in archive_command itself (see docs/PITR.md).
"""


PUSH_EPILOG = f"""\
postgresql.conf (one line; see docs/PITR.md):
  archive_mode = on
  archive_command = 'BACKUP_DIR=/var/backups/preskool /opt/preskool-dr/bin/preskool-dr wal-push %p'
  archive_timeout = 300

{ENVIRONMENT}
Copies the segment into BACKUP_DIR/wal/<name> (temp file, fsync, read back, .md5
sidecar, rename), then uploads it to S3 with Content-MD5 and checks what S3 stored.
Pushing the same segment again succeeds; different content under an archived name is
refused. Exit 0 archived, 1 not archived (PostgreSQL keeps the segment and retries).
With PRESKOOL_DR_NOTIFY_URLS in that environment (Apprise URLs, comma-separated), a
failure sends wal_push_failed: once, again hourly while it lasts, and anew after a push
has succeeded (the mark: BACKUP_DIR/wal/.push-failure-notified).

Encryption (docs/ENCRYPTION.md): PRESKOOL_DR_AGE_RECIPIENTS (age recipients, comma-separated)
or else `encryption.recipients` of the runbook found the usual way (--runbook,
PRESKOOL_DR_RUNBOOK, ~/.config/preskool-dr/, /etc/preskool-dr/; only that key is
read). Then the archive holds <name>.age (+ .md5 over the encrypted bytes, + .sha256
of the clear segment) and nothing clear. Fails closed: a configured recipient that is
unusable, or a runbook that exists but cannot be read, is exit 1 with nothing written.
"""


FETCH_EPILOG = f"""\
recovery settings (preskool-dr pitr writes these itself):
  restore_command = 'BACKUP_DIR=/var/backups/preskool /opt/preskool-dr/bin/preskool-dr wal-fetch %f %p'

{ENVIRONMENT}
Copies NAME from BACKUP_DIR/wal/ (else from S3) to DEST through a temp file, checked
against its MD5; an encrypted <name>.age is decrypted on the way with --identity FILE
or PRESKOOL_DR_AGE_IDENTITY (a path readable by the server's OS user). Exit 0 restored; 1 NAME is not in the archive (PostgreSQL reads that
as the end of the archive); {EXIT_ABORT_RECOVERY} NAME exists but is damaged or unreadable, which
makes PostgreSQL stop the recovery instead of ending it early at that point.
"""


def register(subparsers: Any) -> None:
    push_parser = subparsers.add_parser(
        "wal-push",
        help="archive_command: archive one WAL segment locally and to S3, verified",
        description="Archive one WAL segment (PostgreSQL's %p) into BACKUP_DIR/wal and S3.",
        epilog=PUSH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push_parser.add_argument("path", metavar="PATH", type=Path, help="the segment file (%%p)")
    push_parser.set_defaults(handler=lazy("wal_cmd", "run"))
    fetch_parser = subparsers.add_parser(
        "wal-fetch",
        help="restore_command: fetch one archived WAL segment, verified",
        description="Restore one archived WAL file (%f) to the path PostgreSQL asks for (%p).",
        epilog=FETCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch_parser.add_argument("name", metavar="NAME", help="the WAL file name (%%f)")
    fetch_parser.add_argument("dest", metavar="DEST", type=Path, help="where to write it (%%p)")
    fetch_parser.set_defaults(handler=lazy("wal_cmd", "run"))
