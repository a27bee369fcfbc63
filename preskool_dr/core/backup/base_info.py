"""What a base backup's folder holds (its file names) and the `base` section of its
meta.json (`BaseBackupInfo`): what `pitr` plans with and WAL retention counts from. Read
from the local meta, or else the S3 one. Taking a base backup: basebackup.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.backup.wal.health import archive_health
from preskool_dr.core.backup.wal.names import Segment
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage import catalog
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.layout import META_SUFFIX, meta_path
from preskool_dr.core.storage.meta import iso_utc, load_untrusted_json
from preskool_dr.core.storage.repository import Repository

BASE_KIND = "base"  # basebackup.KIND
BASE_TAR = "base.tar.gz"
WAL_TAR = "pg_wal.tar.gz"
MANIFEST = "backup_manifest"
# Encrypted (age): the whole backup is one tar stream, the WAL and the manifest inside it.
BASE_TAR_AGE = BASE_TAR + ".age"


def base_tar_md5(members: dict[str, str]) -> str | None:
    """The MD5 of the base tar, clear or encrypted."""
    return members.get(BASE_TAR) or members.get(BASE_TAR_AGE)


@dataclass(frozen=True)
class BaseBackupInfo:
    """The `base` section of a base backup's meta.json: what pitr needs to plan a recovery."""

    name: str
    server: str  # host:port it was taken from
    server_version: str
    timeline: int
    start_lsn: str
    end_lsn: str
    start_time: datetime  # the server's clock just before the backup started
    end_time: datetime  # the server's clock after it ended: the earliest possible target
    wal_segment_size: int
    members: dict[str, str]  # file in the folder -> md5
    archive_mode: str

    @property
    def start_segment(self) -> Segment:
        return Segment.for_lsn(self.timeline, self.start_lsn, self.wal_segment_size)

    @property
    def end_segment(self) -> Segment:
        return Segment.for_lsn(self.timeline, self.end_lsn, self.wal_segment_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "server_version": self.server_version,
            "timeline": self.timeline,
            "start_lsn": self.start_lsn,
            "end_lsn": self.end_lsn,
            "start_wal": self.start_segment.name,
            "start_time": iso_utc(self.start_time),
            "end_time": iso_utc(self.end_time),
            "wal_segment_size": self.wal_segment_size,
            "members": dict(self.members),
            "archive_mode": self.archive_mode,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BaseBackupInfo:
        """ValueError/KeyError/TypeError when `data` is not a base section."""
        members = data["members"]
        if not isinstance(members, dict) or not (BASE_TAR in members or BASE_TAR_AGE in members):
            raise ValueError(f"members must name {BASE_TAR} or {BASE_TAR_AGE}")
        size = int(data["wal_segment_size"])
        if size <= 0 or size & (size - 1):
            raise ValueError(f"wal_segment_size {size} is not a power of two")
        info = cls(
            name=str(data["name"]),
            server=str(data["server"]),
            server_version=str(data["server_version"]),
            timeline=int(data["timeline"]),
            start_lsn=str(data["start_lsn"]),
            end_lsn=str(data["end_lsn"]),
            start_time=_utc(str(data["start_time"])),
            end_time=_utc(str(data["end_time"])),
            wal_segment_size=size,
            members={str(k): str(v) for k, v in members.items()},
            archive_mode=str(data.get("archive_mode", "")),
        )
        info.start_segment  # noqa: B018 - validates the LSNs and segment size now
        info.end_segment  # noqa: B018
        return info


def _utc(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_info(data: bytes | None) -> BaseBackupInfo | None:
    """The base section of meta.json bytes; None when absent or not a base backup's meta."""
    if data is None:
        return None
    try:
        parsed = load_untrusted_json(data)  # Infinity, 1e400, deep nesting: ValueError
        return BaseBackupInfo.from_json(parsed["base"])
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, RecursionError):
        return None


def local_info(path: Path) -> BaseBackupInfo | None:
    try:
        return parse_info(meta_path(path).read_bytes())
    except OSError:
        return None


def record_info(config: Config, record: BackupRecord) -> BaseBackupInfo | None:
    """The base section for a catalog record, from the local meta or else the S3 one."""
    if record.local_path is not None:
        info = local_info(record.local_path)
        if info is not None:
            return info
    repo = Repository.from_config(config)
    if record.s3_url is None or not repo.has_s3:
        return None
    return parse_info(repo.get_bytes(record.name + META_SUFFIX))


def base_records(config: Config, source: str) -> list[BackupRecord]:
    return [r for r in catalog.list_backups(config, source) if r.kind == BASE_KIND]


def pitr_health(config: Config, now: datetime) -> tuple[str, str, float | None] | None:
    """(Nagios state name, summary, archive age in seconds) for `check`, or None when
    point-in-time recovery is not in use here (no local WAL archive and no base backup).
    Gaps count from the newest local base backup's first segment: older ones only narrow
    what older base backups can reach."""
    settings = WalSettings.from_config(config)
    try:
        records = base_records(config, "local") if config.backups.dir.is_dir() else []
        if not records and not settings.archive_dir.is_dir():
            return None
        since = next(
            (i.start_segment for r in records if r.local_path and (i := local_info(r.local_path))),
            None,
        )
        health = archive_health(settings, now, since)
    except DrError as exc:
        return "WARNING", f"WAL archive unknown: {exc}", None
    status, summary = health.verdict(config.thresholds.rpo_wal_hours, now)
    return status, summary, health.age_seconds(now)
