"""Where the WAL archive lives (BACKUP_DIR/wal and s3://$S3_BUCKET/wal/) and the modes of
its files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preskool_dr.core.base.age import IDENTITY_ENV
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.runbook_file import find_runbook, read_trusted
from preskool_dr.core.base.settings import OBJECT_LOCK_MODES, BackupSettings, Config
from preskool_dr.core.storage.repository import Repository

if TYPE_CHECKING:
    from preskool_dr.core.storage.s3store import ObjectLock

WAL_DIRNAME = "wal"
S3_PREFIX = "wal/"
# The archive belongs to the database server's OS user (wal-push runs as postgres). Group
# read, never others: an operator in the postgres group runs `check` (lists the folder) and
# pitr drills without root, whose recovering server runs wal-fetch as that operator and
# reads these files. Backups hold the whole database: nothing is world-readable.
FILE_MODE = 0o640
ARCHIVE_DIR_MODE = 0o750
RECIPIENTS_ENV = "PRESKOOL_DR_AGE_RECIPIENTS"


@dataclass(frozen=True)
class WalSettings:
    """Where the archive lives. The CLI takes it from the environment only (see above)."""

    backup_dir: Path
    bucket: str | None = None
    # age recipients wal-push encrypts to (empty: clear text), the identity wal-fetch uses
    recipients: tuple[str, ...] = ()
    identity: Path | None = None
    # S3 Object Lock on every uploaded segment: this mode, until upload time + `lock_days`
    # (backups.retention.base.s3_days: WAL is pruned with the base backups that need it)
    lock_mode: str | None = None
    lock_days: int | None = None

    def lock(self, now: datetime) -> ObjectLock | None:
        """The Object Lock a segment uploaded at `now` carries; None without
        backups.object_lock, or when base backups have no `s3_days` (kept for ever in S3,
        so uploaded without a lock, as base backups are)."""
        if self.lock_mode is None or self.lock_days is None:
            return None
        from preskool_dr.core.storage.s3store import ObjectLock

        return ObjectLock(self.lock_mode, now + timedelta(days=self.lock_days))

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
        identity = env.get(IDENTITY_ENV)
        return cls(
            backup_dir,
            env.get("S3_BUCKET") or None,
            identity=Path(identity).expanduser().absolute() if identity else None,
        )

    @classmethod
    def from_config(cls, config: Config) -> WalSettings:
        backups = config.backups
        base = backups.retention.get("base")
        return cls(
            backups.dir,
            backups.s3_bucket,
            recipients=tuple(config.encryption.recipients),
            identity=config.encryption.identity,
            lock_mode=backups.object_lock.mode if backups.object_lock is not None else None,
            lock_days=base.s3_days if base is not None else None,
        )


def push_recipients(
    runbook: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], str]:
    """The age recipients wal-push encrypts to, and where they come from.

    PRESKOOL_DR_AGE_RECIPIENTS (comma-separated) wins; else `encryption.recipients` of the
    runbook found the usual way (--runbook, PRESKOOL_DR_RUNBOOK, XDG, /etc), when one exists:
    only that key is read, so another mistake in the runbook never stops archiving. No
    runbook anywhere: ((), "") and the segment is archived as it is. Fails closed: a runbook
    that exists but cannot be read or parsed is a DrError (the push writes nothing and
    PostgreSQL retries), since it may configure encryption."""
    env = os.environ if env is None else env
    listed = env.get(RECIPIENTS_ENV)
    if listed is not None and listed.strip():
        return tuple(r.strip() for r in listed.split(",") if r.strip()), RECIPIENTS_ENV
    data, path = _read_runbook(
        runbook,
        env,
        f"it may configure encryption. Make it readable by this user (e.g. "
        f"chgrp postgres + chmod 0640), or set {RECIPIENTS_ENV} in archive_command",
    )
    if path is None:
        return (), ""  # no runbook on this host: nothing asks for encryption
    section = data.get("encryption") if isinstance(data, dict) else None
    if section is None:
        return (), ""
    items = section.get("recipients") if isinstance(section, dict) else None
    if not items or not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise DrError(
            f"{path}: encryption.recipients must list at least one age recipient - nothing "
            "was archived (PostgreSQL retries)"
        )
    return tuple(items), str(path)


def push_lock(
    runbook: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[str | None, int | None]:
    """The Object Lock wal-push puts on each upload: (`backups.object_lock.mode`,
    `backups.retention.base.s3_days`) of the runbook found as for `push_recipients`, only
    those keys read; (None, None) without a runbook or without object_lock. Fails closed:
    a runbook that cannot be read or parsed, or an invalid mode or days, is a DrError (the
    push writes nothing and PostgreSQL retries) rather than an unlocked copy in S3."""
    env = os.environ if env is None else env
    data, path = _read_runbook(
        runbook,
        env,
        "it may configure Object Lock. Make it readable by this user (e.g. "
        "chgrp postgres + chmod 0640)",
    )
    backups = data.get("backups") if isinstance(data, dict) else None
    section = backups.get("object_lock") if isinstance(backups, dict) else None
    if path is None or section is None:
        return None, None
    mode = section.get("mode") if isinstance(section, dict) else None
    if mode not in OBJECT_LOCK_MODES:
        raise DrError(
            f"{path}: backups.object_lock.mode must be one of {', '.join(OBJECT_LOCK_MODES)} "
            "- nothing was archived (PostgreSQL retries)"
        )
    retention = backups.get("retention") if isinstance(backups, dict) else None
    base = retention.get("base") if isinstance(retention, dict) else None
    days = base.get("s3_days") if isinstance(base, dict) else None
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
        raise DrError(
            f"{path}: backups.retention.base.s3_days must be a whole number of days (1 or "
            "more) - nothing was archived (PostgreSQL retries)"
        )
    return str(mode), days


def _read_runbook(
    runbook: Path | None, env: Mapping[str, str], may: str
) -> tuple[Any, Path | None]:
    """The parsed runbook found the usual way and its path; (None, None) when there is none
    on this host. DrError (saying nothing was archived, and `may`) when it exists but cannot
    be read or parsed."""
    try:
        path = find_runbook(runbook, env)
    except DrError:
        return None, None
    why = f"- nothing was archived (PostgreSQL retries): {may}"
    import yaml  # here: `check` imports this module and must start without yaml

    try:
        return yaml.safe_load(read_trusted(path)), path
    except OSError as exc:
        raise DrError(f"cannot read runbook {path}: {exc.strerror or exc} {why}") from None
    except DrError as exc:
        raise DrError(f"{exc} {why}") from None
    except yaml.YAMLError as exc:
        raise DrError(f"{path} is not valid YAML ({exc}) {why}") from None
