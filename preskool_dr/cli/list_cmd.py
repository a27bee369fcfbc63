"""`preskool-dr list`: the backup catalog, local BACKUP_DIR and S3 merged, newest first."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import humanize

from preskool_dr.cli.output import print_json
from preskool_dr.core.storage.catalog import SOURCES, BackupRecord, list_backups

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

COLUMNS = ("NAME", "KIND", "TIME (UTC)", "AGE", "SIZE", "WHERE", "CLASS", "MD5", "RESTORE")
_RESTORE_TEXT = {None: "needs restore", "in-progress": "in progress", "available": "available"}


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
    parser.set_defaults(handler=run)


def row(record: BackupRecord, now: datetime) -> tuple[str, ...]:
    if not record.archived:
        restore = "-"
    elif record.local_path is not None and record.restore_state is None:
        restore = "local copy"
    else:
        restore = _RESTORE_TEXT.get(record.restore_state, record.restore_state or "-")
    return (
        record.name,
        record.kind,
        record.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        humanize.naturaltime(now - record.time),
        humanize.naturalsize(record.size, binary=True) if record.size is not None else "?",
        "+".join(record.locations)
        + (" (.part)" if record.has_part else "")
        + (" BAD" if record.bad else ""),
        (record.storage_class or "-")
        + (
            f" (locked {record.lock_mode} to {record.lock_until:%Y-%m-%d})"
            if record.lock_until is not None and record.lock_until > now
            else ""
        ),
        "yes" if record.has_md5 else "no",
        restore,
    )


def format_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in [COLUMNS, *rows]
    ]


def run(args: argparse.Namespace, ctx: Any) -> int:
    config = ctx.config
    warnings: list[str] = []
    records = list_backups(config, args.source, warnings)
    for record in records:
        if record.future:
            warnings.append(
                f"{record.name} is dated in the future (its name's time is past this host's "
                "clock): `latest` never picks it; check the clock of the host that made it, or "
                "who wrote it"
            )
    for warning in warnings:
        print(f"preskool-dr: warning: {warning}", file=sys.stderr)
    for record in records:
        if record.meta_error:
            print(
                f"preskool-dr: warning: {record.name}: bad metadata in its .meta.json "
                f"({record.meta_error}); kind and row counts unknown, the backup itself is "
                "checked by its .md5 as always",
                file=sys.stderr,
            )
    if args.json:
        print_json([record.to_json() for record in records])
        return 0
    if not records:
        bucket = config.backups.s3_bucket
        where = {
            "local": str(config.backups.dir),
            "s3": f"s3://{bucket}/{config.backups.s3_prefix}",
            "all": str(config.backups.dir) + (f" or s3://{bucket}/" if bucket else ""),
        }[args.source]
        print(f"No backups found in {where}. Make one with: preskool-dr backup")
        return 0
    now = datetime.now(UTC)
    for line in format_table([row(record, now) for record in records]):
        print(line)
    bad = [r for r in records if r.bad]
    if bad:
        print()
    for record in bad:
        print(f"BAD {record.name}: {record.bad}; it is never downloaded")
    waiting = [r for r in records if r.needs_restore and r.restore_state is None]
    if waiting:
        print(
            f"\n{len(waiting)} archived backup(s) need a restore before download: "
            f"preskool-dr verify {waiting[0].name} --request-restore"
        )
    return 0
