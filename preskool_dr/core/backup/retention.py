"""Retention: old backups of a kind deleted after their days, locally and in S3."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from preskool_dr.core.base.config import Config
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.s3store import S3Store


def apply_retention(config: Config, kind: str, *, keep: str, now: datetime, s3: bool) -> int:
    """Delete backups of `kind` older than its retention, locally and (with `s3`) in S3.

    Only backups whose meta names `kind` go: one of unknown kind is never deleted, nor is
    `keep`. The backup goes first and its meta last, so an interrupted deletion never leaves
    a backup whose kind can no longer be read. Local and S3 copies count separately.
    """
    policy = config.backups.retention.get(kind)
    if policy is None:
        return 0
    deleted = 0
    if policy.local_days is not None:
        for record in _expired(
            config, "local", kind, keep, now - timedelta(days=policy.local_days)
        ):
            assert record.local_path is not None
            for path in with_attributes(record.local_path):
                path.unlink(missing_ok=True)
            deleted += 1
    if s3 and policy.s3_days is not None:
        store = S3Store(str(config.backups.s3_bucket), config.backups.s3_prefix)
        for record in _expired(config, "s3", kind, keep, now - timedelta(days=policy.s3_days)):
            for path in with_attributes(Path(record.name)):
                store.delete(path.name)  # deleting a key that is not there is not an error
            deleted += 1
    return deleted


def _expired(
    config: Config, source: str, kind: str, keep: str, cutoff: datetime
) -> list[BackupRecord]:
    return [
        r
        for r in catalog.list_backups(config, source)
        if r.kind == kind and r.name != keep and r.time < cutoff
    ]


def with_attributes(backup: Path) -> tuple[Path, ...]:
    companion = catalog.companion_path(backup)  # meta stays last (see apply_retention)
    return (
        backup,
        checksum.sidecar_path(backup),
        companion,
        checksum.sidecar_path(companion),
        catalog.meta_path(backup),
    )
