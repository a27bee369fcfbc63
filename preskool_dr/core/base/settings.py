"""The typed settings a runbook.yaml and the environment give (core/base/config.py reads
them): immutable records, with their defaults; no secrets (those stay in the environment)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Range:
    """The numbers a runbook key accepts. A timeout of 0 or -5 seconds, port 70000 or a
    negative retention is a typo: refused at its line, never acted on (a 0-second timeout
    would fail every app command; a negative retention would delete every backup)."""

    low: float
    high: float = math.inf
    low_open: bool = False  # `low` itself is refused: "more than 0"
    note: str = ""  # what a value means, when that is not obvious

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        if self.high != math.inf:
            text = f"from {self.low:g} to {self.high:g}"
        else:
            text = f"more than {self.low:g}" if self.low_open else f"{self.low:g} or more"
        return f"{text} ({self.note})" if self.note else text


def _within(
    default: Any, low: float, high: float = math.inf, *, low_open: bool = False, note: str = ""
) -> Any:
    """A dataclass field whose runbook value must lie in a Range (checked by `_Reader`)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, note)})


@dataclass(frozen=True)
class StepText:
    """What the operator reads about one of the nine steps."""

    id: str
    title: str
    explain: str
    command: str


@dataclass(frozen=True)
class AppCommands:
    """Application control; every command is an argv list run without a shell."""

    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    migrate: tuple[str, ...] = ()
    cwd: str | None = None
    health_url: str | None = None
    timeout_seconds: float = _within(300.0, 0, low_open=True)  # for each command
    # how long step 9 polls the health URL for a 2xx
    health_wait_seconds: float = _within(120.0, 0, low_open=True)


@dataclass(frozen=True)
class Retention:
    local_days: int | None = _within(None, 1)
    s3_days: int | None = _within(None, 1)
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class SmokeQuery:
    """A query that must return a single row; `min_value` checks its first column."""

    name: str
    sql: str
    min_value: float | None = None


@dataclass(frozen=True)
class Thresholds:
    rto_minutes: float = _within(120.0, 0, low_open=True)
    rpo_hours: float = _within(24.0, 0, low_open=True)
    rpo_wal_hours: float = _within(1.0, 0, low_open=True)
    backup_warn_age_hours: float = _within(25.0, 0, low_open=True)
    backup_missing_hours: float = _within(26.0, 0, low_open=True)
    min_backup_bytes: int = _within(1_048_576, 0)
    restore_test_max_age_days: float = _within(8.0, 0, low_open=True)


@dataclass(frozen=True)
class DatabaseSettings:
    host: str = "localhost"
    port: int = _within(5432, 1, 65535)
    name: str = "preskool_db"
    user: str = "preskool"
    admin_user: str = "postgres"
    admin_db: str = "postgres"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.host}:{self.port}"


OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


@dataclass(frozen=True)
class ObjectLockSettings:
    """S3 Object Lock on every upload: this mode, retained until upload time + the kind's
    `s3_days` (the bucket must have been created with Object Lock enabled)."""

    mode: str  # GOVERNANCE | COMPLIANCE


@dataclass(frozen=True)
class BackupSettings:
    dir: Path = Path("/var/backups/preskool")
    s3_bucket: str | None = None
    s3_prefix: str = "preskool-backups/"
    retention: dict[str, Retention] = field(default_factory=dict)
    compress_level: int = _within(6, 0, 9, note="gzip levels")
    # a pg_dump -Fc companion (NAME.dump, gzip level 1) of the same snapshot beside every
    # logical backup, dumped at the same time, for pg_restore -j in step 6 (it costs ~1.2x
    # the .sql.gz's space); false: only the runbook's .sql.gz (never with encryption)
    companion: bool = True
    object_lock: ObjectLockSettings | None = None


@dataclass(frozen=True)
class EncryptionSettings:
    """age encryption of backups (core/base/age.py). `recipients`: public keys only (age1...,
    ssh-ed25519 ..., ssh-rsa ...); the identity that decrypts belongs off the database host
    where possible, and comes from `--identity FILE` or PRESKOOL_DR_AGE_IDENTITY (which win
    over `identity` here)."""

    recipients: tuple[str, ...] = ()
    identity: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.recipients)


@dataclass(frozen=True)
class RestoreTestSettings:
    database: str = "preskool_restore_test"
    required_tables: tuple[str, ...] = ()
    smoke_queries: tuple[SmokeQuery, ...] = ()


RESTORE_METHODS = ("auto", "serial", "parallel")
# restore.maintenance_work_mem: a PostgreSQL size, nothing else, as it goes into PGOPTIONS
MEMORY_SIZE = re.compile(r"[1-9][0-9]{0,8}(kB|MB|GB)", re.ASCII)


@dataclass(frozen=True)
class RestoreSettings:
    """How step 6 loads a backup (see core/restore/loaders/parallel/ and core/restore/loaders/pg_restore.py)."""

    method: str = "auto"  # auto | parallel | serial (runbook.yaml says what each does)
    jobs: int = _within(0, 0, note="0 = one per CPU core")  # sessions for a parallel load
    # for the load's own sessions only (PGOPTIONS): index and key builds sort in memory
    # instead of on disk; None keeps the server's setting
    maintenance_work_mem: str | None = "512MB"
    # headless runs start step 6's load (into its closed database) as step 4 begins, or
    # from S3 once step 3 has the companion (core/restore/steps/early_load.py); false: the
    # load waits for step 4
    early_load: bool = True


@dataclass(frozen=True)
class DrillSettings:
    target_db: str = "preskool_drill"
    app: AppCommands = AppCommands()
    sign_key: Path | None = None
    log: Path | None = None
    drop_after: bool = False
    allowed_signers: Path | None = None  # the drill log's trust root (drill-log verify)


@dataclass(frozen=True)
class NotifySettings:
    """Where events go (core/base/notify.py). URLs holding tokens belong in the environment
    (PRESKOOL_DR_NOTIFY_URLS, which wins over `urls`), not in the runbook."""

    urls: tuple[str, ...] = ()  # Apprise URLs: json://host:port/path, slack://..., mailto://...
    command: tuple[str, ...] = ()  # argv, no shell; the event as JSON in $PRESKOOL_DR_EVENT
    on_success: bool = False  # also a notification for each backup that succeeded
    timeout_seconds: float = _within(5.0, 0, 60, low_open=True, note="per delivery attempt")


@dataclass(frozen=True)
class Config:
    """Everything preskool-dr knows about the site; built by `load_config`."""

    source: Path | None
    database: DatabaseSettings
    backups: BackupSettings
    thresholds: Thresholds
    restore_test: RestoreTestSettings
    app: AppCommands
    drill: DrillSettings
    steps: tuple[StepText, ...]
    state_dir: Path
    restore: RestoreSettings = RestoreSettings()
    notify: NotifySettings = NotifySettings()
    encryption: EncryptionSettings = EncryptionSettings()
    runbook_state_dir: Path | None = None  # the runbook's own `state_dir`, if it names one

    def step(self, step_id: str) -> StepText:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def drill_log_path(self) -> Path:
        return self.drill.log or self.state_dir / "drill-log.jsonl"


@dataclass(frozen=True)
class RunbookFile:
    """The shape of runbook.yaml itself (defaults come from the dataclasses above)."""

    version: int = 1
    database: DatabaseSettings = DatabaseSettings()
    backups: BackupSettings = BackupSettings()
    thresholds: Thresholds = Thresholds()
    restore_test: RestoreTestSettings = RestoreTestSettings()
    app: AppCommands = AppCommands()
    drill: DrillSettings = DrillSettings()
    restore: RestoreSettings = RestoreSettings()
    notify: NotifySettings = NotifySettings()
    encryption: EncryptionSettings = EncryptionSettings()
    steps: tuple[StepText, ...] = ()
    # The state folder for everyone who uses this runbook (root's restore-test and the
    # monitoring user's `check` alike); PRESKOOL_DR_STATE_DIR wins; None: the user's own
    # $XDG_STATE_HOME/preskool-dr.
    state_dir: Path | None = None
