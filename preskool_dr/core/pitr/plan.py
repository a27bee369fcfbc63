"""Where pitr picks its base backup: what each base backup plus the WAL archive can reach
(its recoverable range), and the newest base backup that ended before the target
(`plan_recovery`, step 1), refused when the target lies outside its range.

The range's end is the last transaction archived without a gap: read from the archive's
segments with pg_waldump, before anything is written."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from preskool_dr.core.backup import base_info
from preskool_dr.core.backup.basebackup import BaseBackupInfo
from preskool_dr.core.backup.wal.fetch import fetch
from preskool_dr.core.backup.wal.listing import list_archive
from preskool_dr.core.backup.wal.names import Segment
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base import procs
from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.pgbin import find_pg_bin
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.request import iso
from preskool_dr.core.storage import catalog
from preskool_dr.core.storage.catalog import BackupRecord

MAX_COMMIT_PROBES = 64  # segments read backwards to find the archive's last transaction
_WALDUMP_XACT = re.compile(
    r"desc: (?:COMMIT|ABORT)(?:_PREPARED \d+:)? "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


@dataclass(frozen=True)
class RecoverableRange:
    """What one base backup plus the archive can reach: from `start` (the backup's end)
    up to, not including, `end` (the last transaction archived without a gap after it).
    PostgreSQL stops before the first transaction later than the target, so a target at
    or after `end` could never be reached."""

    base: BaseBackupInfo
    record: BackupRecord
    start: datetime
    end: datetime | None
    last_segment: str | None
    gap: str | None  # first missing segment when newer ones exist

    @property
    def usable(self) -> bool:
        return self.end is not None and self.end > self.start

    def contains(self, target: datetime) -> bool:
        return self.end is not None and self.start <= target < self.end

    def describe(self) -> str:
        source = f"base backup {self.base.name}"
        gap = f"; WAL gap: segment {self.gap} is missing" if self.gap else ""
        if not self.usable:
            return f"{iso(self.start)} only ({source}; no transaction archived after it{gap})"
        return (
            f"{iso(self.start)} .. {iso(self.end)} ({source} + archived WAL up to "
            f"{self.last_segment}{gap})"
        )


def recoverable_ranges(
    config: Config, *, on_event: EventSink = ignore_events
) -> list[RecoverableRange]:
    """Every base backup with a readable meta, newest first, with its recoverable range."""
    warnings: list[str] = []
    records = [r for r in catalog.list_backups(config, "all", warnings) if r.kind == "base"]
    for warning in warnings:
        on_event(Notice("warn", warning, "plan"))
    settings = WalSettings.from_config(config)
    archive = sorted(n for n in list_archive(settings) if Segment.parse(n))
    probed: dict[str, datetime | None] = {}
    ranges = []
    for record in records:
        if record.bad is not None:  # e.g. a member key with `..`: never downloaded
            on_event(Notice("warn", f"{record.name} is refused: {record.bad}; not used", "plan"))
            continue
        info = base_info.record_info(config, record)
        if info is None:
            on_event(
                Notice(
                    "warn",
                    f"{record.name} has no readable meta.json (an unfinished upload?): not used",
                    "plan",
                )
            )
            continue
        ranges.append(_range_for(info, record, archive, settings, probed))
    return ranges


def _range_for(
    info: BaseBackupInfo,
    record: BackupRecord,
    archive: list[str],
    settings: WalSettings,
    probed: dict[str, datetime | None],
) -> RecoverableRange:
    size = info.wal_segment_size
    present = {
        s.number(size)
        for s in (Segment.parse(n) for n in archive)
        if s is not None and s.timeline == info.timeline
    }
    first = info.end_segment.number(size)
    number = first
    while number in present:
        number += 1
    gap = Segment.at(info.timeline, number, size).name if any(n > number for n in present) else None
    if number == first:
        return RecoverableRange(info, record, info.end_time, None, None, gap)
    last = Segment.at(info.timeline, number - 1, size)
    if last.name not in probed:
        probed[last.name] = _last_transaction_time(settings, info.timeline, first, number - 1, size)
    return RecoverableRange(info, record, info.end_time, probed[last.name], last.name, gap)


def _last_transaction_time(
    settings: WalSettings, timeline: int, first: int, last: int, size: int
) -> datetime | None:
    """The newest commit/abort time in segments `last` down to `first` (pg_waldump)."""
    waldump = find_pg_bin("pg_waldump")
    with tempfile.TemporaryDirectory(prefix="preskool-pitr-") as folder:
        for number in range(last, max(first, last - MAX_COMMIT_PROBES + 1) - 1, -1):
            name = Segment.at(timeline, number, size).name
            fetch(name, Path(folder) / name, settings)  # verified copy, local or S3
            # The tail of the output is enough: it ends with the segment's last records (and
            # an error about the next segment, which is not there).
            dump = procs.run_command(
                [waldump, f"--path={folder}", "--rmgr=Transaction", name],
                env={"TZ": "UTC"},
                timeout=300,
            )
            (Path(folder) / name).unlink()
            times = _WALDUMP_XACT.findall(dump.output)
            if times:
                return datetime.fromisoformat(times[-1]).replace(tzinfo=UTC)
    return None


def plan_recovery(
    config: Config, target: datetime, *, on_event: EventSink = ignore_events
) -> RecoverableRange:
    """The range of the newest base backup that ended before `target`; UsageError (exit 2)
    naming the recoverable range when `target` is outside it."""
    ranges = recoverable_ranges(config, on_event=on_event)
    if not ranges:
        raise UsageError(
            f"no usable base backup (one with a readable meta.json) in {config.backups.dir}"
            f"{' or S3' if config.backups.s3_bucket else ''}: take one with "
            "`preskool-dr backup --kind base` (point-in-time recovery starts from it)"
        )
    before = [r for r in ranges if r.start <= target]
    if not before:
        earliest = min(ranges, key=lambda r: r.start)
        raise UsageError(
            f"target {iso(target)} is before the earliest recoverable time: the oldest base "
            f"backup ended at {iso(earliest.start)}; recoverable: {earliest.describe()}"
        )
    chosen = max(before, key=lambda r: r.start)
    if not chosen.contains(target):
        raise UsageError(
            f"target {iso(target)} is outside the recoverable range {chosen.describe()}: "
            "choose a time inside it"
        )
    return chosen
