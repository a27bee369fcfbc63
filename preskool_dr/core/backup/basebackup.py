"""`backup --kind base`: a physical base backup (pg_basebackup) for point-in-time recovery.

Layout in BACKUP_DIR, mirrored under s3://$S3_BUCKET/preskool-backups/:

    preskool-base-YYYYMMDD_HHMMSS/base.tar.gz       the data directory (-Ft -z)
    preskool-base-YYYYMMDD_HHMMSS/pg_wal.tar.gz     WAL streamed during the backup (-X stream)
    preskool-base-YYYYMMDD_HHMMSS/backup_manifest   SHA-256 of every file and the WAL range
    preskool-base-YYYYMMDD_HHMMSS/<file>.md5        md5sum sidecars (`md5sum -c *.md5` inside)
    preskool-base-YYYYMMDD_HHMMSS.meta.json         kind base, start/end LSN and time

With encryption.recipients, pg_basebackup writes one gzip'd tar to its stdout (`-D - -Ft
-z -X fetch`: the WAL it needs and backup_manifest inside the tar), which is encrypted with
age as it is read: `base.tar.gz.age` and its md5 sidecar are the whole folder, and no clear
byte reaches the disk. `age -d -i KEY base.tar.gz.age | tar -xzf - -C DIR` restores it.

The folder is built under a hidden `.NAME.tmp` and renamed only once every file has been
read back (MD5 + gzip integrity), so a folder carrying a final name is complete, like a
logical backup file. In S3 the meta goes last: a base backup without its meta there is an
unfinished upload, and `pitr` does not use it. Old base backups expire by
backups.retention.base, and with them the archived WAL no remaining base backup needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from preskool_dr.core.backup.base_info import (
    BASE_KIND,
    BASE_TAR,
    BASE_TAR_AGE,
    MANIFEST,
    BaseBackupInfo,
    base_tar_md5,
)
from preskool_dr.core.backup.base_retention import apply_retention
from preskool_dr.core.backup.common import BackupResult, backup_dir_lock, human_size
from preskool_dr.core.backup.wal.names import parse_lsn
from preskool_dr.core.base import age, database, files, procs
from preskool_dr.core.base.errors import Cancelled, DrError, VerificationError
from preskool_dr.core.base.events import (
    EventSink,
    LogLine,
    Notice,
    ProgressMeter,
    ignore_events,
    utcnow,
)
from preskool_dr.core.base.paths import trusted_folder
from preskool_dr.core.base.settings import Config, DatabaseSettings
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.backup_names import BASE_PREFIX, backup_name
from preskool_dr.core.storage.fetch import ensure_dir
from preskool_dr.core.storage.layout import meta_path
from preskool_dr.core.storage.meta import BackupMeta, iso_utc
from preskool_dr.core.storage.repository import Repository

KIND = BASE_KIND
STEP_ID = "backup"
CLUSTER_LABEL = "(whole cluster)"  # BackupMeta.database: a base backup holds every database
_TEMP_SUFFIX = ".tmp"  # not `.part`: backup.py removes stale `.part` *files* under the lock


# ---------------------------------------------------------------- taking one


def run_base_backup(
    config: Config,
    *,
    upload: bool = True,
    at: datetime | None = None,
    on_event: EventSink = ignore_events,
    cancel: threading.Event | None = None,
) -> BackupResult:
    """pg_basebackup of the whole cluster into BACKUP_DIR/preskool-base-<UTC time>/."""
    at = (at or utcnow()).astimezone(UTC).replace(microsecond=0)
    # Fails closed: unusable recipients stop the backup before anything is written.
    recipients = age.recipients(config.encryption.recipients) if config.encryption.enabled else None
    backup_dir = config.backups.dir
    ensure_dir(backup_dir)
    trusted_folder(backup_dir, "BACKUP_DIR", follow=True, nothing="nothing was saved")
    with backup_dir_lock(backup_dir):
        for stale in backup_dir.glob(f".{BASE_PREFIX}*{_TEMP_SUFFIX}"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:  # rmtree does not remove a symlink (nor follow it): only the link goes
                stale.unlink(missing_ok=True)
            on_event(Notice("warn", f"Removed {stale.name} left by an interrupted backup", STEP_ID))
        final = backup_dir / backup_name(KIND, at)
        if final.exists():
            raise DrError(f"{final} already exists (a backup ran this second): retry in a moment")
        db = config.database
        facts = _server_facts(db)
        on_event(
            Notice(
                "info",
                f"Base backup of the cluster at {db.host}:{db.port} "
                f"(PostgreSQL {facts.version.split()[0]}, pg_basebackup tar+gzip, manifest)...",
                STEP_ID,
            )
        )
        if recipients is not None:
            on_event(
                Notice(
                    "info",
                    f"Encrypted with age to {len(recipients)} recipient(s) as it is written: "
                    f"{BASE_TAR_AGE} (WAL and manifest inside)",
                    STEP_ID,
                )
            )
        if facts.archive_mode == "off":
            on_event(
                Notice(
                    "warn",
                    "WAL archiving is off on this server: this base backup restores only to its "
                    "own end; set archive_command to preskool-dr wal-push (docs/PITR.md)",
                    STEP_ID,
                )
            )
        info, meta = _take(config, final, at, facts, on_event, cancel, recipients)
        on_event(
            Notice(
                "ok",
                f"Base backup created: {final} ({human_size(meta.size)}; WAL {info.start_lsn} "
                f"to {info.end_lsn} on timeline {info.timeline})",
                STEP_ID,
            )
        )
        on_event(Notice("ok", "Checksums written and verified ✓", STEP_ID))
        on_event(
            Notice(
                "ok",
                f"Recoverable from {iso_utc(info.end_time)} on, with the WAL archive",
                STEP_ID,
            )
        )
        repo = Repository.from_config(config)
        local_only = "backups.retention.base has no s3_days"
        s3 = repo.uploads(
            KIND, upload=upload, local_only=local_only, on_event=on_event, step_id=STEP_ID
        )
        uploaded = repo.put(final, KIND, on_event=on_event, step_id=STEP_ID) if s3 else ()
        deleted = apply_retention(config, keep=final.name, now=at, s3=s3, on_event=on_event)
        on_event(Notice("ok", f"Deleted {deleted} old base backup(s)", STEP_ID))
        return BackupResult(final, meta, uploaded, deleted)


@dataclass(frozen=True)
class _ServerFacts:
    version: str
    archive_mode: str
    segment_size: int
    now: datetime


def _server_facts(db: DatabaseSettings) -> _ServerFacts:
    query = """SELECT current_setting('server_version'), current_setting('wal_level'),
                      current_setting('archive_mode'),
                      pg_size_bytes(current_setting('wal_segment_size')), now()"""
    try:
        with database.connect(db, admin=True) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise DrError(f"cannot read the server settings: {database.first_line(exc)}") from None
    assert row is not None
    version, wal_level, archive_mode, segment_size, now = row
    if wal_level == "minimal":
        raise DrError(
            "wal_level is minimal on this server: base backups and PITR need "
            "wal_level = replica (the default); change it and restart the server"
        )
    return _ServerFacts(str(version), str(archive_mode), int(segment_size), now)


def _server_now(db: DatabaseSettings) -> datetime:
    try:
        with database.connect(db, admin=True) as conn:
            row = conn.execute("SELECT now()").fetchone()
    except psycopg.Error as exc:
        raise DrError(f"cannot read the server clock: {database.first_line(exc)}") from None
    assert row is not None
    now: datetime = row[0]
    return now


def _take(
    config: Config,
    final: Path,
    at: datetime,
    facts: _ServerFacts,
    on_event: EventSink,
    cancel: threading.Event | None,
    recipients: list[object] | None = None,
) -> tuple[BaseBackupInfo, BackupMeta]:
    """pg_basebackup into `.NAME.tmp`, checksums, meta, rename; nothing survives a failure."""
    db = config.database
    tmp = final.with_name(f".{final.name}{_TEMP_SUFFIX}")
    meta_file = meta_path(final)
    try:
        if recipients is not None:
            tool_version, wal_range = _pg_basebackup_encrypted(
                db, tmp, final.name, recipients, on_event, cancel
            )
            end_time = _server_now(db)
            timeline, start_lsn, end_lsn = wal_range
        else:
            tool_version = _pg_basebackup(db, tmp, final.name, on_event, cancel)
            end_time = _server_now(db)
            timeline, start_lsn, end_lsn = _manifest_range(tmp / MANIFEST)
        members = _checksum_members(tmp, on_event, cancel)
        info = BaseBackupInfo(
            name=final.name,
            server=f"{db.host}:{db.port}",
            server_version=facts.version,
            timeline=timeline,
            start_lsn=start_lsn,
            end_lsn=end_lsn,
            start_time=facts.now,
            end_time=end_time,
            wal_segment_size=facts.segment_size,
            members=members,
            archive_mode=facts.archive_mode,
        )
        meta = BackupMeta(
            name=final.name,
            kind=KIND,
            created_at=at,
            database=CLUSTER_LABEL,
            size=sum((tmp / m).stat().st_size for m in members),
            md5=base_tar_md5(members) or "",
            pg_dump_version=tool_version,
        )
        text = json.dumps({**meta.to_json(), "base": info.to_json()}, indent=2, sort_keys=True)
        files.atomic_write(meta_file, text.encode() + b"\n")
        tmp.rename(final)
        files.fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        meta_file.unlink(missing_ok=True)
        raise
    return info, meta


def _pg_basebackup(
    db: DatabaseSettings,
    tmp: Path,
    label: str,
    on_event: EventSink,
    cancel: threading.Event | None,
) -> str:
    """Run pg_basebackup; Progress counts the compressed bytes it has written so far."""
    version = procs.run_command(["pg_basebackup", "--version"], timeout=60)
    if not version.ok:
        raise DrError(
            f"cannot run pg_basebackup ({version.describe()}): install the PostgreSQL client "
            "tools (postgresql-client) and make sure pg_basebackup is on PATH"
        )
    argv = [
        "pg_basebackup",
        f"--pgdata={tmp}",
        "--format=tar",
        "--gzip",
        "--wal-method=stream",
        "--manifest-checksums=SHA256",
        "--checkpoint=fast",
        f"--label={label}",
        "--no-password",
        "--verbose",
    ]
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_size, args=(tmp, on_event, stop), daemon=True)
    watcher.start()
    try:
        result = procs.run_command(
            argv,
            env=database.libpq_env(db, db.admin_db, admin=True),
            on_line=lambda line: on_event(LogLine("pg_basebackup", line, STEP_ID)),
            cancel=cancel,
        )
    finally:
        stop.set()
        watcher.join()
    if cancel is not None and cancel.is_set():
        raise Cancelled("base backup cancelled: the partial folder was removed")
    if not result.ok:
        errors = [ln for ln in result.output.splitlines() if "error" in ln.lower()]
        first = (errors or result.output.strip().splitlines()[-1:] or ["no output"])[0]
        raise DrError(
            f"pg_basebackup failed (exit status {result.returncode}): {first} - nothing was "
            "saved; the admin role needs REPLICATION and pg_hba.conf a `replication` line "
            "for this host"
        )
    return version.output.strip().splitlines()[0] if version.output.strip() else ""


_START = re.compile(r"write-ahead log start point: (\S+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: (\S+)")


def _pg_basebackup_encrypted(
    db: DatabaseSettings,
    tmp: Path,
    label: str,
    recipients: list[object],
    on_event: EventSink,
    cancel: threading.Event | None,
) -> tuple[str, tuple[int, str, str]]:
    """pg_basebackup's tar stream (stdout), encrypted with age into `tmp/base.tar.gz.age` as
    it is read; (tool version, (timeline, start LSN, end LSN) from its --verbose lines)."""
    version = procs.run_command(["pg_basebackup", "--version"], timeout=60)
    if not version.ok:
        raise DrError(
            f"cannot run pg_basebackup ({version.describe()}): install the PostgreSQL client "
            "tools (postgresql-client) and make sure pg_basebackup is on PATH"
        )
    argv = [
        "pg_basebackup",
        "--pgdata=-",
        "--format=tar",
        "--gzip",
        "--wal-method=fetch",  # stream cannot go to stdout; the WAL lands inside the tar
        "--manifest-checksums=SHA256",
        "--checkpoint=fast",
        f"--label={label}",
        "--no-password",
        "--verbose",
    ]
    tmp.mkdir(mode=0o700)
    target = tmp / BASE_TAR_AGE
    meter = ProgressMeter(on_event, STEP_ID, "base backup", None)
    with tempfile.TemporaryFile() as errors:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                proc = procs.spawn(
                    argv, env=database.libpq_env(db, db.admin_db, admin=True), stderr=errors
                )
            except OSError as exc:
                raise DrError(f"cannot start pg_basebackup: {exc.strerror}") from None
            assert proc.stdout is not None
            encryptor = age.Encryptor(recipients, out.write)
            try:
                while chunk := proc.stdout.read(checksum.CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("base backup cancelled: the partial folder was removed")
                    encryptor.write(chunk)
                    meter.add(len(chunk))
                encryptor.close()
                returncode = proc.wait()
            except BaseException:
                encryptor.abort()
                procs.terminate(proc)
                raise
            finally:
                proc.stdout.close()
            out.flush()
            os.fsync(out.fileno())
        meter.finish()
        errors.seek(0)
        text = errors.read().decode("utf-8", "replace")
    for line in text.splitlines():
        on_event(LogLine("pg_basebackup", procs.redact(line), STEP_ID))
    if returncode != 0:
        lines = [ln for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines()
        first = procs.redact(lines[0]) if lines else "no output"
        raise DrError(
            f"pg_basebackup failed (exit status {returncode}): {first} - nothing was "
            "saved; the admin role needs REPLICATION and pg_hba.conf a `replication` line "
            "for this host"
        )
    start, end = _START.search(text), _END.search(text)
    if start is None or end is None:
        raise VerificationError(
            "pg_basebackup did not report its WAL start and end points: nothing was saved"
        )
    try:
        parse_lsn(start[1])
        parse_lsn(end[1])
    except ValueError as exc:
        raise VerificationError(f"pg_basebackup reported {exc}: nothing was saved") from None
    tool = version.output.strip().splitlines()[0] if version.output.strip() else ""
    return tool, (int(start[2]), start[1], end[1])


def _watch_size(folder: Path, on_event: EventSink, stop: threading.Event) -> None:
    meter = ProgressMeter(on_event, STEP_ID, "base backup", None)
    while not stop.wait(0.5):
        try:
            size = sum(p.stat().st_size for p in folder.iterdir())
        except OSError:
            continue  # not created yet, or a file renamed under us
        if size > meter.done:
            meter.add(size - meter.done)
    meter.finish()


def _manifest_range(manifest: Path) -> tuple[int, str, str]:
    """(timeline, start LSN, end LSN) from backup_manifest's WAL-Ranges."""
    try:
        ranges = json.loads(manifest.read_bytes())["WAL-Ranges"]
        first, last = ranges[0], ranges[-1]
        start, end = str(first["Start-LSN"]), str(last["End-LSN"])
        parse_lsn(start)
        parse_lsn(end)
        return int(last["Timeline"]), start, end
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise VerificationError(
            f"pg_basebackup wrote no usable {MANIFEST} ({exc}): nothing was saved; "
            "check the pg_basebackup version (15 or newer)"
        ) from None


def _checksum_members(
    folder: Path, on_event: EventSink, cancel: threading.Event | None
) -> dict[str, str]:
    """Read every file once (MD5, and full decompression of .gz) and write its sidecar."""
    members: dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        result = checksum.verify_file(
            path,
            None,
            on_event=on_event,
            step_id=STEP_ID,
            cancel=cancel,
            check_gzip=path.name.endswith(".gz"),
        )
        if not result.gzip_ok:
            raise VerificationError(
                f"{path.name} written by pg_basebackup fails the gzip check "
                f"({result.gzip_error}); check the disk and run the backup again"
            )
        checksum.write_sidecar(path, result.actual_md5)
        members[path.name] = result.actual_md5
    if base_tar_md5(members) is None:
        raise VerificationError(f"pg_basebackup wrote no {BASE_TAR}: nothing was saved")
    return members
