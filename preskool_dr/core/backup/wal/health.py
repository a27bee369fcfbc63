"""What `check` reports about the WAL archive: the newest segment and its age, gaps, and
segments not in S3 yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from preskool_dr.core.backup.wal.listing import (
    ArchivedFile,
    find_gaps,
    list_archive,
    segment_size,
)
from preskool_dr.core.backup.wal.names import Segment
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.errors import DrError

# A segment archived locally less than this long ago may still be on its way to S3.
S3_GRACE_SECONDS = 300


@dataclass(frozen=True)
class ArchiveHealth:
    """What `check` reports about the WAL archive."""

    where: str
    segments: int
    newest: str | None
    newest_time: datetime | None
    missing: tuple[str, ...]  # gap segments (since the oldest base backup)
    not_in_s3: int
    s3_error: str | None = None
    # the newest S3 segment, when it has no Object Lock although backups.object_lock is set
    unlocked: str | None = None
    lock_mode: str | None = None

    def age_seconds(self, now: datetime) -> float | None:
        if self.newest_time is None:
            return None
        return (now - self.newest_time).total_seconds()

    def verdict(self, rpo_hours: float, now: datetime) -> tuple[str, str]:
        """(Nagios state name, one-line summary). No archive at all is reported, not alerted."""
        if self.s3_error is not None and self.segments == 0:
            return "WARNING", f"WAL archive unknown: {self.s3_error}"
        age = self.age_seconds(now)
        if self.newest is None or age is None:
            return "OK", (
                f"no WAL archive in {self.where}: point-in-time recovery is not set up "
                "(see docs/PITR.md)"
            )
        hours = age / 3600
        newest = f"newest WAL {self.newest} archived {hours:.1f} h ago"
        if self.missing:
            first = self.missing[0]
            return "CRITICAL", (
                f"WAL gap: {len(self.missing)} segment(s) missing from {self.where}, first "
                f"{first}: point-in-time recovery cannot pass it; take a new base backup "
                "(preskool-dr backup --kind base)"
            )
        if hours > 2 * rpo_hours:
            return "CRITICAL", (
                f"WAL archiving stalled: {newest} (> {2 * rpo_hours:g} h); check the server "
                "log for archive_command errors and pg_stat_archiver"
            )
        if hours > rpo_hours:
            return "WARNING", (
                f"WAL archive late: {newest} (> RPO {rpo_hours:g} h); check archive_command "
                "and archive_timeout"
            )
        if self.s3_error is not None:
            return "WARNING", f"{newest}, but S3 could not be checked: {self.s3_error}"
        if self.unlocked is not None:
            return "WARNING", (
                f"S3 copy not locked: WAL segment {self.unlocked} is in S3 without Object Lock "
                f"although backups.object_lock.mode is {self.lock_mode} (does the bucket have "
                f"Object Lock enabled?); {newest}"
            )
        if self.not_in_s3:
            return "WARNING", (
                f"{self.not_in_s3} archived WAL segment(s) are not in S3 yet; {newest}"
            )
        return "OK", f"{newest}; {self.segments} segments, no gaps"


def _newest_unlocked(
    settings: WalSettings, segments: list[ArchivedFile], now: datetime
) -> str | None:
    """The newest segment in S3 when it carries no Object Lock although one is configured
    (one HEAD); None when it is locked, or no lock is configured, or S3 cannot tell."""
    if settings.lock(now) is None:
        return None
    newest = max((f for f in segments if f.s3), key=lambda f: (f.time, f.name), default=None)
    if newest is None:
        return None
    try:
        head = settings.repository.s3.head(newest.s3_file or newest.name)
    except DrError:
        return None  # gone meanwhile, or S3 unreachable: the listing already said so
    return None if head.lock_mode else newest.name


def archive_health(
    settings: WalSettings, now: datetime, since: Segment | None = None
) -> ArchiveHealth:
    s3_error = None
    try:
        files = list_archive(settings)
    except DrError as exc:
        s3_error = str(exc)
        files = list_archive(settings, include_s3=False)
    segments = [f for f in files.values() if Segment.parse(f.name)]
    newest = max(segments, key=lambda f: f.time, default=None)
    # Timelines older than the base backup's are history no recovery from it needs.
    relevant = [
        f.name for f in segments if since is None or Segment.timeline_of(f.name) >= since.timeline
    ]
    gaps = find_gaps(relevant, segment_size(segments), since)
    late = [
        f
        for f in segments
        if settings.bucket and not f.s3 and (now - f.time).total_seconds() > S3_GRACE_SECONDS
    ]
    return ArchiveHealth(
        unlocked=None if s3_error else _newest_unlocked(settings, segments, now),
        lock_mode=settings.lock_mode,
        where=settings.where,
        segments=len(segments),
        newest=newest.name if newest else None,
        newest_time=newest.time if newest else None,
        missing=tuple(gaps),
        not_in_s3=0 if s3_error else len(late),
        s3_error=s3_error,
    )
