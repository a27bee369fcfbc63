"""Where the WAL archive lives (BACKUP_DIR/wal and s3://$S3_BUCKET/wal/) and the modes of
its files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.age import IDENTITY_ENV
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.runbook_file import find_runbook, read_trusted
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
RECIPIENTS_ENV = "PRESKOOL_DR_AGE_RECIPIENTS"


@dataclass(frozen=True)
class WalSettings:
    """Where the archive lives. The CLI takes it from the environment only (see above)."""

    backup_dir: Path
    bucket: str | None = None
    # age recipients wal-push encrypts to (empty: clear text), the identity wal-fetch uses
    recipients: tuple[str, ...] = ()
    identity: Path | None = None

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
        return cls(
            config.backups.dir,
            config.backups.s3_bucket,
            recipients=tuple(config.encryption.recipients),
            identity=config.encryption.identity,
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
    try:
        path = find_runbook(runbook, env)
    except DrError:
        return (), ""  # no runbook on this host: nothing asks for encryption
    why = (
        f"- nothing was archived (PostgreSQL retries): it may configure encryption. Make it "
        f"readable by this user (e.g. chgrp postgres + chmod 0640), or set {RECIPIENTS_ENV} "
        "in archive_command"
    )
    import yaml  # here: `check` imports this module and must start without yaml

    try:
        data = yaml.safe_load(read_trusted(path))
    except OSError as exc:
        raise DrError(f"cannot read runbook {path}: {exc.strerror or exc} {why}") from None
    except DrError as exc:
        raise DrError(f"{exc} {why}") from None
    except yaml.YAMLError as exc:
        raise DrError(f"{path} is not valid YAML ({exc}) {why}") from None
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
