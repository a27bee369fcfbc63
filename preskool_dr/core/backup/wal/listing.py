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
from preskool_dr.core.base.age import AGE_SUFFIX
from preskool_dr.core.base.errors import DrError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    size: int
    time: datetime  # when it was archived: the file's mtime, or S3's LastModified
    local: bool
    s3: bool
    # The archived file's own name where it differs from `name`: `<name>.age` (encrypted).
    local_file: str = ""
    s3_file: str = ""

    @property
    def encrypted(self) -> bool:
        return (self.local_file or self.s3_file).endswith(AGE_SUFFIX)


def wal_name(stored: str) -> str | None:
    """The WAL file name an archived file holds (`<name>` or encrypted `<name>.age`), or None
    for anything else (sidecars, temp files, marks)."""
    name = stored.removesuffix(AGE_SUFFIX)
    return name if NAME_RE.fullmatch(name) else None


def list_archive(settings: WalSettings, *, include_s3: bool = True) -> dict[str, ArchivedFile]:
    """Every WAL file name in the local archive and (with a bucket) in S3, merged."""
    files: dict[str, ArchivedFile] = {}
    try:
        with os.scandir(settings.archive_dir) as entries:
            for entry in entries:
                name = wal_name(entry.name)
                if name is None:
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # pruned while we listed
                if entry.is_file():
                    at = datetime.fromtimestamp(stat.st_mtime, UTC)
                    files[name] = ArchivedFile(name, stat.st_size, at, True, False, entry.name)
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
            stored = store.name_of(obj.key)
            name = wal_name(stored)
            if name is None:
                continue
            known = files.get(name)
            if known is not None:
                files[name] = ArchivedFile(
                    name, known.size, known.time, True, True, known.local_file, stored
                )
            else:
                files[name] = ArchivedFile(
                    name, obj.size, obj.last_modified, False, True, "", stored
                )
    return files


def segment_size(files: Iterable[ArchivedFile]) -> int:
    """Every segment file is exactly wal_segment_size bytes: the commonest size is it."""
    sizes = Counter(_clear_size(f) for f in files if Segment.parse(f.name) and f.size > 0)
    return sizes.most_common(1)[0][0] if sizes else DEFAULT_SEGMENT_SIZE


def _clear_size(item: ArchivedFile) -> int:
    """A segment's size; an encrypted one is a little larger (age adds a header and 16 bytes
    per 64 KiB, under 1 %) than its segment, whose size is a power of two."""
    if not item.encrypted:
        return item.size
    return 1 << (item.size.bit_length() - 1)


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
