"""Where the WAL archive lives (BACKUP_DIR/wal and s3://$S3_BUCKET/wal/) and the modes of
its files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.settings import BackupSettings, Config
from preskool_dr.core.storage.repository import Repository

WAL_DIRNAME = "wal"
S3_PREFIX = "wal/"
# The archive belongs to the database server's OS user (wal-push runs as postgres). Group
# read, never others: an operator in the postgres group runs `check` (lists the folder) and
# pitr drills without root, whose recovering server runs wal-fetch as that operator and
# reads these files. Backups hold the whole database: nothing is world-readable.
FILE_MODE = 0o640
ARCHIVE_DIR_MODE = 0o750


@dataclass(frozen=True)
class WalSettings:
    """Where the archive lives. The CLI takes it from the environment only (see above)."""

    backup_dir: Path
    bucket: str | None = None

    @property
    def archive_dir(self) -> Path:
        return self.backup_dir / WAL_DIRNAME

    @property
    def repository(self) -> Repository:
        """The archive folder and, with a bucket, s3://$S3_BUCKET/wal/."""
        return Repository(self.archive_dir, self.bucket, S3_PREFIX)

    @property
    def where(self) -> str:
        return self.repository.where("and")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WalSettings:
        env = os.environ if env is None else env
        directory = env.get("BACKUP_DIR")
        backup_dir = Path(directory).expanduser().absolute() if directory else BackupSettings().dir
        return cls(backup_dir, env.get("S3_BUCKET") or None)

    @classmethod
    def from_config(cls, config: Config) -> WalSettings:
        return cls(config.backups.dir, config.backups.s3_bucket)
