"""`backup`: pg_dump -> gzip -> BACKUP_DIR, meta, md5 sidecar, verify, upload, retention.

Invariant: a file carrying a final backup name in BACKUP_DIR is complete and has passed
verification. The dump is written under a hidden `.part` name and renamed only after
pg_dump exited 0, the bytes are on disk and they were read back from the file (MD5 and a
full decompression, while the dump still runs: no second pass after it); anything that
fails before then removes what it wrote, so `latest` can never pick a half or unverified
file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from preskool_dr.core.backup.common import (
    STEP_ID,
    BackupResult,
    backup_dir_lock,
    disk_error,
    human_size,
)
from preskool_dr.core.backup.companion import CompanionDigest, companion_dump
from preskool_dr.core.backup.gzip_writer import GzipWriter
from preskool_dr.core.backup.retention import apply_retention
from preskool_dr.core.base import age, database, files, procs
from preskool_dr.core.base.errors import (
    DrError,
    LockedError,
    UsageError,
)
from preskool_dr.core.base.events import EventSink, Notice, ignore_events, utcnow
from preskool_dr.core.base.lock import ServerLock
from preskool_dr.core.base.paths import ensure_private_dir, trusted_folder
from preskool_dr.core.base.settings import Config, DatabaseSettings
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.backup_names import backup_name
from preskool_dr.core.storage.layout import remove_local
from preskool_dr.core.storage.meta import BackupMeta, write_meta
from preskool_dr.core.storage.repository import Repository

LOGICAL_KINDS = ("daily", "weekly", "pre-deploy")


def logical_backup(
    config: Config,
    kind: str = "daily",
    *,
    upload: bool = True,
    at: datetime | None = None,
    on_event: EventSink = ignore_events,
    cancel: threading.Event | None = None,
    custom: bool | None = None,
) -> BackupResult:
    """Take one logical backup of `config.database` into BACKUP_DIR, named by `at` (UTC).
    `custom` adds a pg_dump -Fc companion of the same snapshot (core/backup/companion.py);
    None: as `backups.companion` says (on by default, never with encryption).

    It first takes the target's server lock shared (core/base/lock.py): while a restore
    replaces the database it refuses, before it writes anything."""
    if kind not in LOGICAL_KINDS:
        raise UsageError(f"unknown backup kind {kind!r}: use one of {', '.join(LOGICAL_KINDS)}")
    if config.encryption.enabled:
        # fails closed: every recipient parsed again before anything is written
        age.recipients(config.encryption.recipients)
        if custom:
            raise UsageError(
                "--format custom is not available with encryption yet: its companion would "
                "be written in clear text - nothing was written; take the plain backup "
                "(it is encrypted)"
            )
    if custom is None:
        custom = config.backups.companion and not config.encryption.enabled
    with _restore_guard(config.database, on_event):
        return _logical_backup(config, kind, upload, at, on_event, cancel, custom)


@contextlib.contextmanager
def _restore_guard(db: DatabaseSettings, on_event: EventSink) -> Iterator[None]:
    """The server lock of `db.name`, shared, as the app role in the admin database.

    LockedError (exit 1) when a restore holds it. When the app role may not connect to
    the admin database the backup goes on with a warning: a database being restored is
    closed to connections anyway, so pg_dump cannot read a half load."""
    guard = ServerLock(db, db.name, run_id=None, operator="", shared=True)
    try:
        guard.acquire()
    except LockedError:
        raise
    except DrError as exc:
        # The server itself (down, wrong password)? Then that is the error, said once;
        # only the admin database refused us: say so and go on.
        with database.connect(db):
            pass
        on_event(
            Notice(
                "warn",
                f"could not check for a restore of {db.name} in progress ({exc}); "
                "going on: a database being restored accepts no connections",
                STEP_ID,
            )
        )
    try:
        yield
    finally:
        guard.release()


def _logical_backup(
    config: Config,
    kind: str,
    upload: bool,
    at: datetime | None,
    on_event: EventSink,
    cancel: threading.Event | None,
    custom: bool,
) -> BackupResult:
    at = (at or utcnow()).astimezone(UTC).replace(microsecond=0)
    backup_dir = config.backups.dir
    try:
        ensure_private_dir(backup_dir)  # 0700, and so is every missing folder above it
    except FileExistsError:
        raise DrError(
            f"BACKUP_DIR {backup_dir} is not a directory: nothing was saved; "
            "set BACKUP_DIR (or backups.dir) to a folder"
        ) from None
    except OSError as exc:
        raise DrError(
            f"cannot create BACKUP_DIR {backup_dir}: {exc.strerror} - "
            "create it (writable by this user) or set BACKUP_DIR"
        ) from None
    trusted_folder(backup_dir, "BACKUP_DIR", follow=True, nothing="nothing was saved")
    with backup_dir_lock(backup_dir):
        _remove_stale_parts(backup_dir, on_event)
        encrypt = config.encryption.enabled
        final = backup_dir / backup_name(kind, at, encrypted=encrypt)
        recipients = age.recipients(config.encryption.recipients) if encrypt else None
        if final.exists():
            raise DrError(f"{final} already exists (a backup ran this second): retry in a moment")
        on_event(Notice("info", f"Dumping database '{config.database.name}'...", STEP_ID))
        dump = _dump(
            config.database,
            final,
            config.backups.compress_level,
            on_event,
            cancel,
            custom,
            recipients,
        )
        on_event(Notice("ok", f"Backup created: {final} ({human_size(dump.size)})", STEP_ID))
        on_event(Notice("ok", f"MD5: {dump.md5}", STEP_ID))
        meta = BackupMeta(
            name=final.name,
            kind=kind,
            created_at=at,
            database=config.database.name,
            size=dump.size,
            md5=dump.md5,
            row_counts=dump.row_counts,
            pg_dump_version=dump.pg_dump_version,
            companion_md5=dump.companion.md5,
            db_size_bytes=dump.db_size,
            encrypted=encrypt,
        )
        _finish_local(final, meta, on_event)
        if (said := dump.companion.notice(STEP_ID)) is not None:
            on_event(said)
        if encrypt:
            on_event(
                Notice("ok", f"Encrypted with age to {len(recipients or ())} recipient(s)", STEP_ID)
            )
            if config.backups.companion:
                on_event(
                    Notice(
                        "info",
                        "No custom-format companion (backups.companion): it would be written "
                        "in clear text beside the encrypted backup; a restore loads the "
                        ".sql.gz.age with the serial stream",
                        STEP_ID,
                    )
                )
        if dump.size < config.thresholds.min_backup_bytes:
            on_event(
                Notice(
                    "warn",
                    f"Backup is only {human_size(dump.size)} (alert threshold "
                    f"{human_size(config.thresholds.min_backup_bytes)}): "
                    f"check that {config.database.label} is the production database",
                    STEP_ID,
                )
            )
        repo = Repository.from_config(config)
        local_only = f"{kind} backups stay local (backups.retention.{kind} has no s3_days)"
        s3 = repo.uploads(
            kind, upload=upload, local_only=local_only, on_event=on_event, step_id=STEP_ID
        )
        uploaded = repo.put(final, kind, on_event=on_event, step_id=STEP_ID) if s3 else ()
        deleted = apply_retention(config, kind, keep=final.name, now=at, s3=s3, on_event=on_event)
        on_event(Notice("ok", f"Deleted {deleted} old backup(s)", STEP_ID))
        return BackupResult(final, meta, uploaded, deleted)


# ---------------------------------------------------------------- the dump


@dataclass(frozen=True)
class _Dump:
    size: int
    md5: str
    row_counts: dict[str, int]
    pg_dump_version: str
    companion: CompanionDigest
    db_size: int | None = None


def _dump(
    db: DatabaseSettings,
    final: Path,
    level: int,
    on_event: EventSink,
    cancel: threading.Event | None,
    custom: bool = False,
    recipients: list[object] | None = None,
) -> _Dump:
    """pg_dump into `.NAME.part`, then fsync + rename to `final`; the part never survives.
    With `custom`, the companion dump runs beside it in the same snapshot."""
    version = _pg_dump_version()
    part = final.with_name(f".{final.name}.part")
    try:
        with database.connect(db) as conn:
            # Counts taken in the snapshot pg_dump imports match the dump row for row,
            # however busy the application is meanwhile.
            conn.autocommit = False
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                row = conn.execute("SELECT pg_export_snapshot()").fetchone()
                snapshot_id = str(row[0]) if row else ""
                # what a restore of it will need on the server (checked before step 5)
                db_size = database.database_size(conn, db.name)
                with companion_dump(
                    db, snapshot_id, final, enabled=custom, on_event=on_event
                ) as companion:
                    size, md5, counts = _stream(
                        ["pg_dump", "--format=plain", "--no-password", f"--snapshot={snapshot_id}"],
                        database.libpq_env(db, db.name),
                        part,
                        level,
                        lambda: database.row_counts(conn),
                        on_event,
                        cancel,
                        recipients,
                    )
        os.rename(part, final)
        files.fsync_dir(final.parent)
    except psycopg.Error as exc:
        part.unlink(missing_ok=True)
        raise DrError(
            f"reading {db.label} failed: {database.first_line(exc)} - "
            "nothing was saved; check the server and run the backup again"
        ) from None
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise disk_error(part, exc) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return _Dump(size, md5, counts, version, companion, db_size)


def _pg_dump_version() -> str:
    result = procs.run_command(["pg_dump", "--version"], timeout=60)
    if not result.ok:
        raise DrError(
            f"cannot run pg_dump ({result.describe()}): install the PostgreSQL client "
            "tools (postgresql-client) and make sure pg_dump is on PATH"
        )
    return result.output.strip().splitlines()[0] if result.output.strip() else ""


def _stream(
    argv: list[str],
    env: dict[str, str],
    part: Path,
    level: int,
    count_rows: Callable[[], dict[str, int]],
    on_event: EventSink,
    cancel: threading.Event | None,
    recipients: list[object] | None = None,
) -> tuple[int, str, dict[str, int]]:
    """Run pg_dump, gzip its stdout into `part` in a thread while `count_rows` runs here
    (encrypted to `recipients` with age on the way, when given)."""
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with tempfile.TemporaryFile() as errors:
        try:
            proc = procs.spawn(argv, env=env, stderr=errors)
        except OSError as exc:
            os.close(fd)
            raise DrError(f"cannot start pg_dump: {exc.strerror}") from None
        writer = GzipWriter(proc, fd, part, level, on_event, cancel, recipients)
        thread = threading.Thread(target=writer.run, name="pg_dump-gzip", daemon=True)
        thread.start()
        try:
            counts = count_rows()
            thread.join()
            returncode = proc.wait()
        except BaseException:  # incl. Cancelled from SIGTERM while we wait
            procs.terminate(proc)
            # The writer owns fd: once it is joined the part is closed and may be unlinked.
            thread.join()
            raise
        if writer.error is not None:
            raise writer.error
        if returncode != 0:
            errors.seek(0)
            lines = [ln for ln in errors.read().decode("utf-8", "replace").splitlines() if ln]
            first = procs.redact(lines[0]) if lines else "no error message"
            raise DrError(
                f"pg_dump failed (exit status {returncode}): {first} - "
                "nothing was saved; fix the cause and run the backup again"
            )
    return writer.size, writer.md5, counts


def _finish_local(final: Path, meta: BackupMeta, on_event: EventSink) -> None:
    """Meta and sidecar beside the backup, which was read back before it got its name; any
    failure takes the backup away again."""
    try:
        write_meta(final, meta)
        checksum.write_sidecar(final, meta.md5)
    except BaseException:
        remove_local(final)
        raise
    on_event(Notice("ok", "Checksum verified ✓", STEP_ID))
    on_event(Notice("ok", "Gzip integrity check passed", STEP_ID))


def _remove_stale_parts(backup_dir: Path, on_event: EventSink) -> None:
    """Under the lock no other backup runs, so a `.part` left here is from a killed run."""
    for part in backup_dir.glob(".preskool-*.part"):
        part.unlink(missing_ok=True)
        on_event(Notice("warn", f"Removed {part.name} left by an interrupted backup", STEP_ID))
