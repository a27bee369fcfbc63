"""`preskool-dr list`: the backup catalog, local BACKUP_DIR and S3 merged, newest first."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import humanize

from preskool_dr.cli.output import print_json
from preskool_dr.core.storage.catalog import BackupRecord, list_backups

COLUMNS = ("NAME", "KIND", "TIME (UTC)", "AGE", "SIZE", "WHERE", "CLASS", "MD5", "RESTORE")
_RESTORE_TEXT = {None: "needs restore", "in-progress": "in progress", "available": "available"}


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
