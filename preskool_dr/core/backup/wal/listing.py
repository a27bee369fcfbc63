"""What the WAL archive holds, locally and in S3, merged by name; its segment size and its
gaps."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from preskool_dr.core.backup.wal.names import NAME_RE, Segment
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.errors import DrError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    size: int
    time: datetime  # when it was archived: the file's mtime, or S3's LastModified
    local: bool
    s3: bool


def list_archive(settings: WalSettings, *, include_s3: bool = True) -> dict[str, ArchivedFile]:
    """Every WAL file name in the local archive and (with a bucket) in S3, merged."""
    files: dict[str, ArchivedFile] = {}
    try:
        with os.scandir(settings.archive_dir) as entries:
            for entry in entries:
                if not NAME_RE.fullmatch(entry.name):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # pruned while we listed
                if entry.is_file():
                    at = datetime.fromtimestamp(stat.st_mtime, UTC)
                    files[entry.name] = ArchivedFile(entry.name, stat.st_size, at, True, False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DrError(
            f"cannot read the WAL archive {settings.archive_dir}: {exc.strerror or exc}"
        ) from None
    repo = settings.repository
    if include_s3 and repo.has_s3:
        store = repo.s3
        for obj in store.list_objects(with_restore_state=False):
            name = store.name_of(obj.key)
            if not NAME_RE.fullmatch(name):
                continue
            known = files.get(name)
            if known is not None:
                files[name] = ArchivedFile(name, known.size, known.time, True, True)
            else:
                files[name] = ArchivedFile(name, obj.size, obj.last_modified, False, True)
    return files


def segment_size(files: Iterable[ArchivedFile]) -> int:
    """Every segment file is exactly wal_segment_size bytes: the commonest size is it."""
    sizes = Counter(f.size for f in files if Segment.parse(f.name) and f.size > 0)
    return sizes.most_common(1)[0][0] if sizes else DEFAULT_SEGMENT_SIZE


def find_gaps(names: Iterable[str], segment_size: int, since: Segment | None = None) -> list[str]:
    """Segment names missing inside each timeline's archived run (from `since` on its timeline)."""
    numbers: dict[int, set[int]] = {}
    for name in names:
        segment = Segment.parse(name)
        if segment is not None:
            numbers.setdefault(segment.timeline, set()).add(segment.number(segment_size))
    missing: list[str] = []
    for timeline, present in sorted(numbers.items()):
        low = min(present)
        if since is not None and since.timeline == timeline:
            low = since.number(segment_size)
        missing += [
            Segment.at(timeline, n, segment_size).name
            for n in range(low, max(present) + 1)
            if n not in present
        ]
    return missing
