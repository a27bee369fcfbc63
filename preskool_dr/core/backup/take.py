"""`backup`: the one entry point for every kind, logical (core/backup/logical.py) or the
physical base backup for point-in-time recovery (core/backup/basebackup.py)."""

from __future__ import annotations

import threading
from datetime import datetime

from preskool_dr.core.backup.basebackup import run_base_backup
from preskool_dr.core.backup.common import BackupResult
from preskool_dr.core.backup.logical import logical_backup
from preskool_dr.core.base.events import EventSink, ignore_events
from preskool_dr.core.base.settings import Config


def run_backup(
    config: Config,
    kind: str = "daily",
    *,
    upload: bool = True,
    at: datetime | None = None,
    on_event: EventSink = ignore_events,
    cancel: threading.Event | None = None,
    custom: bool | None = None,
) -> BackupResult:
    """Take one backup of `kind` into BACKUP_DIR (and S3), named by `at` (UTC). A logical
    backup gets its custom-format companion when `custom` says so, or with None as
    `backups.companion` says (core/backup/logical.py)."""
    if kind == "base":
        return run_base_backup(config, upload=upload, at=at, on_event=on_event, cancel=cancel)
    return logical_backup(
        config, kind, upload=upload, at=at, on_event=on_event, cancel=cancel, custom=custom
    )
