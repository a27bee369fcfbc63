"""`preskool-dr wal-push PATH` / `wal-fetch NAME DEST`: PostgreSQL's archive_command and
restore_command. Silent when they succeed (the server log would get a line per segment);
errors go to stderr, which PostgreSQL copies into its log."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from preskool_dr.core.backup.wal.alert import clear_push_failure, notify_push_failure
from preskool_dr.core.backup.wal.fetch import WalMissing, fetch
from preskool_dr.core.backup.wal.push import push
from preskool_dr.core.backup.wal.settings import RECIPIENTS_ENV, WalSettings, push_recipients
from preskool_dr.core.base.age import IDENTITY_ENV
from preskool_dr.core.base.errors import DrError, UsageError

# restore_command exit status 1 tells PostgreSQL "no such file": recovery ends there. A
# segment that exists but cannot be trusted must stop recovery instead, and PostgreSQL
# aborts on any status above 125. (126/127 read as "command not executable/not found".)
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

Encryption (docs/ENCRYPTION.md): {RECIPIENTS_ENV} (age recipients, comma-separated)
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
or {IDENTITY_ENV} (a path readable by the server's OS user). Exit 0 restored; 1 NAME is not in the archive (PostgreSQL reads that
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
    push_parser.set_defaults(handler=run)
    fetch_parser = subparsers.add_parser(
        "wal-fetch",
        help="restore_command: fetch one archived WAL segment, verified",
        description="Restore one archived WAL file (%f) to the path PostgreSQL asks for (%p).",
        epilog=FETCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch_parser.add_argument("name", metavar="NAME", help="the WAL file name (%%f)")
    fetch_parser.add_argument("dest", metavar="DEST", type=Path, help="where to write it (%%p)")
    fetch_parser.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Any) -> int:
    settings = WalSettings.from_env()
    if ctx.identity is not None:
        settings = dataclasses.replace(settings, identity=ctx.identity.expanduser().absolute())
    if args.command == "wal-push":
        try:
            recipients, _ = push_recipients(ctx.runbook)
            settings = dataclasses.replace(settings, recipients=recipients)
            push(args.path, settings)
        except DrError as exc:  # whatever the cause, PostgreSQL keeps the segment and retries
            notify_push_failure(settings, args.path.name, str(exc))
            raise DrError(str(exc), exit_code=1) from None
        clear_push_failure(settings)
        return 0
    try:
        result = fetch(args.name, args.dest, settings)
    except WalMissing as exc:
        # Not an error in PostgreSQL's eyes: it probes for history files and the segment
        # after the last one; the line helps only when hunting a gap.
        print(f"preskool-dr wal-fetch: {exc} (exit 1: the end of the archive)", file=sys.stderr)
        return exc.exit_code
    except UsageError as exc:  # a broken restore_command: stop too, and say only that
        raise DrError(str(exc), exit_code=EXIT_ABORT_RECOVERY) from None
    except DrError as exc:
        raise _abort_recovery(args.name, str(exc)) from None
    except Exception as exc:
        raise _abort_recovery(args.name, f"wal-fetch failed unexpectedly: {exc!r}") from None
    if result.warning:
        print(f"preskool-dr: warning: {result.warning}", file=sys.stderr)
    return 0


def _abort_recovery(name: str, why: str) -> DrError:
    """NAME exists but cannot be delivered intact: exit 1 would let PostgreSQL end the
    recovery early, before NAME, and (with no recovery target) promote a copy missing
    everything after it. The exit status above 125 makes it stop instead, with this line
    in its log."""
    return DrError(
        f"{why} - wal-fetch exits {EXIT_ABORT_RECOVERY} so PostgreSQL stops the recovery at "
        f"{name} instead of ending it early there: put an intact copy of {name} (with its "
        ".md5) into the archive, or choose a target before it, and run pitr again",
        exit_code=EXIT_ABORT_RECOVERY,
    )
