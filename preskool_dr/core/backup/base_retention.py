"""Retention of base backups and the WAL they need: old base backups go (local and S3),
then archived WAL older than the oldest base backup left on each side, the way
pg_archivecleanup would; a copy under S3 Object Lock is kept and said so. Taking a base
backup: basebackup.py."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import partial

from preskool_dr.core.backup.base_info import BASE_KIND, base_records, record_info
from preskool_dr.core.backup.wal.listing import list_archive
from preskool_dr.core.backup.wal.names import Segment
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.errors import NotFoundError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events, utcnow
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.meta import iso_utc
from preskool_dr.core.storage.repository import Repository

KIND = BASE_KIND
STEP_ID = "backup"

_PRUNED = {
    "local": "Removed {} archived WAL file(s) no base backup needs",
    "s3": "Removed {} WAL file(s) from S3 no base backup needs",
}


def apply_retention(
    config: Config,
    *,
    keep: str,
    now: datetime,
    s3: bool,
    on_event: EventSink = ignore_events,
) -> int:
    """Delete base backups older than backups.retention.base (local and, with `s3`, in S3),
    then the archived WAL older than the oldest base backup left on each side."""
    repo = Repository.from_config(config)
    settings = WalSettings.from_config(config)
    listing = partial(base_records, config)
    deleted = 0
    for side in ("local", "s3") if s3 else ("local",):
        if repo.retention_days(KIND, side) is None:
            continue
        deleted += repo.retain(
            KIND, side, keep=keep, now=now, listing=listing, on_event=on_event, step_id=STEP_ID
        )
        pruned = _prune_wal(
            settings, listing(side), config, local=side == "local", on_event=on_event
        )
        if pruned:
            on_event(Notice("ok", _PRUNED[side].format(pruned), STEP_ID))
    return deleted


def _prune_wal(
    settings: WalSettings,
    remaining: Iterable[BackupRecord],
    config: Config,
    *,
    local: bool,
    on_event: EventSink = ignore_events,
) -> int:
    """Remove archived WAL before the oldest remaining base backup's first segment, the way
    pg_archivecleanup does (position only, any timeline; history files are kept). Nothing
    is removed unless every remaining base backup's meta can be read. An S3 segment still
    under Object Lock is kept (deleting it in a versioned bucket would only hide it behind
    a delete marker); a notice says how many and until when."""
    infos = [record_info(config, r) for r in remaining]
    if not infos or any(i is None for i in infos):
        return 0
    oldest = min(
        (i for i in infos if i is not None),
        key=lambda i: i.start_segment.number(i.wal_segment_size),
    )
    size = oldest.wal_segment_size
    limit = oldest.start_segment.number(size)
    removed = 0
    locked: list[datetime] = []
    archive = settings.repository
    now = utcnow()
    for name, item in list_archive(settings, include_s3=not local).items():
        segment = Segment.parse(name[:24])
        if segment is None or segment.number(size) >= limit:
            continue
        if local and item.local:
            stored = item.local_file or name
            for suffix in ("", ".md5", ".sha256"):  # .sha256: an encrypted one's clear digest
                (archive.directory / f"{stored}{suffix}").unlink(missing_ok=True)
            removed += 1
        elif not local and item.s3 and archive.has_s3:
            stored = item.s3_file or name
            try:
                head = archive.s3.head(stored)
            except NotFoundError:  # removed meanwhile (another host's pruning)
                continue
            if head.locked_at(now) and head.lock_until is not None:
                locked.append(head.lock_until)
                continue
            archive.s3.delete(stored)
            removed += 1
    if locked:
        on_event(
            Notice(
                "info",
                f"Kept {len(locked)} WAL file(s) in {archive.url('')} no base backup needs: "
                f"Object Lock until {iso_utc(min(locked))} to {iso_utc(max(locked))} "
                "(pruning deletes each after its date)",
                STEP_ID,
            )
        )
    return removed
