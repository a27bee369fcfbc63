"""`check`: the seed's backup alerts (section 5) as Nagios states and Prometheus gauges.

Backup age comes from the name (UTC) of the newest logical backup in BACKUP_DIR, not from
the file's mtime, which a copy or a restore from S3 resets. A missing bucket is reported
but is not an alert; a restore test with no record in the state folder is a WARNING (never
run, or run by a user whose state this one does not share: nobody knows the backups restore).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.backup.base_info import pitr_health
from preskool_dr.core.backup.common import human_size
from preskool_dr.core.backup.wal.settings import WAL_DIRNAME
from preskool_dr.core.base.age import is_encrypted_name
from preskool_dr.core.base.errors import DrError, NotFoundError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.paths import ensure_private_dir, state_modes
from preskool_dr.core.base.settings import Config
from preskool_dr.core.drill.entry import LogRecord, log_head, read_log
from preskool_dr.core.drill.recorded import journal_entries, lost_entries
from preskool_dr.core.monitor.report import (
    CheckResult,
    HealthReport,
    Metric,
    Status,
    unknown_report,
)
from preskool_dr.core.restore.test_record import (
    RestoreTestResult,
    read_restore_test_result,
    restore_test_path,
)
from preskool_dr.core.storage import catalog
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.core.storage.repository import Repository

DRILL_LOG_SEEN_FILE = "drill-log-seen.json"  # what `check` last saw of each drill log
CLOCK_SKEW_SECONDS = 300  # a backup dated further in the future than this is suspicious


def run_checks(config: Config, now: datetime | None = None) -> HealthReport:
    now = now or utcnow()
    try:
        latest, latest_s3 = _latest_local(config)
    except DrError as exc:  # e.g. BACKUP_DIR unreadable: the check cannot answer
        return unknown_report(str(exc))
    metrics: list[Metric] = []
    perfdata = ""
    s3_check = _s3_check(config, latest_s3, now)
    restore_check, restore = _restore_test_check(config, now)
    drill_checks, drill_metrics = _drill_log_checks(config)
    metrics += drill_metrics
    checks = (
        _age_check(config, latest, now),
        _size_check(config, latest),
        s3_check,
        restore_check,
        *_wal_checks(config, now),
        *drill_checks,
        *_permission_checks(config),
        *_encryption_check(config, latest),
    )
    if latest is not None:
        age = (now - latest.time).total_seconds()
        size = latest.size or 0
        t = config.thresholds
        metrics += [
            Metric("preskool_dr_latest_backup_age_seconds", "Age of the newest backup.", age),
            Metric(
                "preskool_dr_latest_backup_timestamp_seconds",
                "Time (from its name) of the newest backup.",
                latest.time.timestamp(),
            ),
            Metric("preskool_dr_latest_backup_bytes", "Size of the newest backup.", size),
        ]
        perfdata = (
            f"backup_age={age:.0f}s;{t.backup_warn_age_hours * 3600:.0f};"
            f"{t.backup_missing_hours * 3600:.0f};0 backup_size={size}B;{t.min_backup_bytes}:;;0"
        )
    if restore is not None:
        metrics += [
            Metric(
                "preskool_dr_restore_test_ok", "1 when the last restore test passed.", restore.ok
            ),
            Metric(
                "preskool_dr_restore_test_timestamp_seconds",
                "When the last restore test finished.",
                restore.finished_at.timestamp(),
            ),
        ]
    replicated = s3_check.value
    if isinstance(replicated, bool):  # None: no bucket, or S3 could not be asked
        metrics.append(
            Metric(
                "preskool_dr_s3_replicated",
                "1 when the newest backup meant for S3 is there.",
                replicated,
            )
        )
    return HealthReport(checks, tuple(metrics), perfdata, now)


# ---------------------------------------------------------------- the checks


def _wal_checks(config: Config, now: datetime) -> tuple[CheckResult, ...]:
    """The WAL archive (age against thresholds.rpo_wal_hours, gaps), once point-in-time
    recovery is in use: a local archive or a base backup exists."""
    found = pitr_health(config, now)
    if found is None:
        return ()
    status, summary, age = found
    return (CheckResult("wal_archive", Status[status], summary, age),)


def _drill_log_checks(config: Config) -> tuple[tuple[CheckResult, ...], list[Metric]]:
    """The drill log, once one is in use (it exists, a journal recorded an entry in it, or
    check saw it before): its entry count and head, CRITICAL when it went backwards since
    the last check or lost an entry a run journal recorded (a cut tail, an emptied or
    replaced file)."""
    path = config.drill_log_path
    seen_path = config.state_dir / DRILL_LOG_SEEN_FILE
    seen = _read_seen(seen_path)
    key = str(path.absolute())
    last = seen.get(key)
    recorded = journal_entries(config.state_dir, path, config.drill_log_path)
    try:
        records = read_log(path)
    except NotFoundError:
        if last is None and not recorded:
            return (), []  # no drill here yet
        records = []
    except DrError as exc:
        return (CheckResult("drill_log", Status.UNKNOWN, str(exc)),), []
    complete = [r for r in records if r.complete]
    entries, head = len(complete), log_head(records)
    now = {"entries": entries, "head_sha256": head}
    metrics = [Metric("preskool_dr_drill_log_entries", "Complete lines in the drill log.", entries)]
    if head is not None:
        metrics.append(
            Metric(
                "preskool_dr_drill_log_head_info",
                "The drill log's last line: its sha256 is the head_sha256 label.",
                1,
                (("head_sha256", head),),
            )
        )
    about = f"drill log {path}: {entries} entries, head {head[:12] if head else 'none'}"
    alerts = []
    if last is not None and _went_back(complete, last):
        alerts.append(
            f"Drill log cut or rewritten: {about}, but check saw {last['entries']} entries "
            f"(head {str(last['head_sha256'])[:12]}) before; restore it from a copy (if "
            f"the change was intended, remove {seen_path} to accept it)"
        )
    lost = lost_entries(records, recorded)
    if lost:
        runs = ", ".join(sorted({entry.run_id for entry in lost}))
        alerts.append(
            f"Drill log lost entries: {len(lost)} drill entries recorded by run journals "
            f"(runs {runs}) are not in {about}; restore it from a copy "
            "(`preskool-dr drill-log verify` names them)"
        )
    if alerts:  # what was seen before stays the mark until the log is whole again
        return (
            CheckResult("drill_log", Status.CRITICAL, "; ".join(alerts), entries, now),
        ), metrics
    if last != now:
        try:
            ensure_private_dir(seen_path.parent)
            seen[key] = now
            text = json.dumps(seen, indent=2, sort_keys=True) + "\n"
            atomic_write(seen_path, text.encode(), mode=state_modes(seen_path.parent)[1])
        except OSError as exc:
            owner = _foreign_owner(seen_path.parent)
            if isinstance(exc, PermissionError) and owner is not None:
                # A system install's shared state, read by the monitoring user: the owner's
                # scheduled check keeps the mark; this one compared against it all the same.
                about += f" (the mark is kept by {owner}'s check: {seen_path.parent} is theirs)"
                return (CheckResult("drill_log", Status.OK, about, entries, now),), metrics
            summary = f"{about}; cannot remember it in {seen_path} ({exc.strerror}): a cut "
            summary += "would go unnoticed"
            return (CheckResult("drill_log", Status.WARNING, summary, entries, now),), metrics
    if records and not records[-1].complete:
        summary = (
            f"Drill log torn: {about}, then an incomplete line {records[-1].number}; run "
            f"`preskool-dr drill-log repair --drill-log {path}`"
        )
        return (CheckResult("drill_log", Status.WARNING, summary, entries, now),), metrics
    return (CheckResult("drill_log", Status.OK, about, entries, now),), metrics


def _went_back(complete: list[LogRecord], last: Mapping[str, Any]) -> bool:
    """Fewer lines than last time, or the line that was last is not there any more."""
    count, head = last.get("entries"), last.get("head_sha256")
    if not isinstance(count, int) or count <= 0:
        return False
    return len(complete) < count or complete[count - 1].sha256 != head


def _read_seen(path: Path) -> dict[str, Any]:
    """`<state dir>/drill-log-seen.json`: {log path: {entries, head_sha256}}; {} if none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # first check, or a damaged file: start again from what is there now
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _permission_checks(config: Config) -> tuple[CheckResult, ...]:
    """A warning when other users can list or enter BACKUP_DIR (o+r or o+x): backups hold the
    whole database; or when group or others can write it (g+w or o+w): downloads refuse such
    a folder, as a path there can be swapped for a symlink. Nothing to report when it is
    private or missing (the backup checks say)."""
    directory = config.backups.dir
    try:
        info = directory.stat()
    except OSError:
        return ()
    mode, owner = info.st_mode, info.st_uid
    if not stat.S_ISDIR(mode):
        return ()
    if owner not in (0, os.geteuid()):
        return (
            CheckResult(
                "backup_dir_permissions",
                Status.WARNING,
                f"BACKUP_DIR {directory} belongs to uid {owner}, not to this user or root: "
                "that user could plant backups there, so backups and restores from S3 refuse "
                f"it; check what is in it, then run `chown {os.geteuid()} {directory}`",
                stat.S_IMODE(mode),
            ),
        )
    if not mode & (stat.S_IROTH | stat.S_IXOTH | 0o022):
        return ()
    fix = f"chmod 700 {directory}"
    try:
        wal_dir = (directory / WAL_DIRNAME).stat()
    except OSError:
        wal_dir = None
    if wal_dir is not None and wal_dir.st_uid != owner:
        # WAL archiving: the server's OS user must still enter BACKUP_DIR to reach wal/.
        group = _group_name(wal_dir.st_gid)
        fix = f"chgrp {group} {directory} && chmod 750 {directory}"
    return (
        CheckResult(
            "backup_dir_permissions",
            Status.WARNING,
            f"BACKUP_DIR {directory} is open to other users (mode "
            f"{stat.S_IMODE(mode):04o}) and backups hold the whole database"
            f"{'; restores from S3 refuse to download into it' if mode & 0o022 else ''}: "
            f"run `{fix}`",
            stat.S_IMODE(mode),
        ),
    )


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _latest_local(config: Config) -> tuple[BackupRecord | None, BackupRecord | None]:
    """The newest logical backup, and the newest one of a kind that is uploaded to S3."""
    try:
        listed = catalog.list_backups(config, "local")
    except NotFoundError:
        return None, None  # BACKUP_DIR never created: no backup was ever taken here
    records = [r for r in listed if r.kind != "base"]
    latest = records[0] if records else None
    repo = Repository.from_config(config)
    uploaded = next((r for r in records if repo.keeps_in_s3(r.kind)), None)
    return latest, uploaded


def _age_check(config: Config, latest: BackupRecord | None, now: datetime) -> CheckResult:
    t = config.thresholds
    if latest is None:
        return CheckResult(
            "backup_age", Status.CRITICAL, f"Backup missing: no backup in {config.backups.dir}"
        )
    age = (now - latest.time).total_seconds()
    hours = age / 3600
    kind = latest.kind if latest.kind != "unknown" else "kind unknown: no meta.json"
    about = f"latest backup {latest.name} ({kind})"
    if age < -CLOCK_SKEW_SECONDS:
        return CheckResult(
            "backup_age",
            Status.WARNING,
            f"Backup in the future: {about} is dated {-hours:.1f} h ahead; check the clocks",
            age,
        )
    if hours > t.backup_missing_hours:
        return CheckResult(
            "backup_age",
            Status.CRITICAL,
            f"Backup missing: no new backup for {hours:.1f} h (> {t.backup_missing_hours:g} h); "
            f"{about}",
            age,
        )
    if hours > t.backup_warn_age_hours:
        return CheckResult(
            "backup_age",
            Status.WARNING,
            f"Backup late: {about} is {hours:.1f} h old (> {t.backup_warn_age_hours:g} h)",
            age,
        )
    return CheckResult("backup_age", Status.OK, f"{about} is {hours:.1f} h old", age)


def _encryption_check(config: Config, latest: BackupRecord | None) -> tuple[CheckResult, ...]:
    """With encryption.recipients configured, the newest logical backup must be an
    encrypted `.age` one: a clear-text backup taken since is CRITICAL (a runbook not in
    effect for the scheduled backup, or a tool that writes clear text anyway)."""
    if not config.encryption.enabled:
        return ()
    if latest is None:
        return (CheckResult("encryption", Status.OK, "no backup to check yet"),)
    if not is_encrypted_name(latest.name):
        return (
            CheckResult(
                "encryption",
                Status.CRITICAL,
                f"Backup not encrypted: the newest backup {latest.name} is clear text although "
                "encryption.recipients is configured; check that the scheduled backup uses "
                "this runbook, then take a backup (it will be .sql.gz.age)",
                False,
            ),
        )
    return (CheckResult("encryption", Status.OK, f"{latest.name} is encrypted (age)", True),)


def _size_check(config: Config, latest: BackupRecord | None) -> CheckResult:
    if latest is None:
        return CheckResult("backup_size", Status.OK, "no backup to measure")
    size = latest.size or 0
    limit = config.thresholds.min_backup_bytes
    if size < limit:
        return CheckResult(
            "backup_size",
            Status.WARNING,
            f"Backup small: {latest.name} is {human_size(size)} (< {human_size(limit)})",
            size,
        )
    return CheckResult("backup_size", Status.OK, f"latest backup is {human_size(size)}", size)


def _s3_check(config: Config, latest: BackupRecord | None, now: datetime) -> CheckResult:
    repo = Repository.from_config(config)
    if not repo.has_s3:
        return CheckResult("s3_replication", Status.OK, "S3 not configured")
    if latest is None:
        return CheckResult("s3_replication", Status.OK, "no local backup meant for S3 yet")
    try:
        obj = repo.s3.head(latest.name)
    except NotFoundError as exc:  # the object, or the whole bucket
        return CheckResult("s3_replication", Status.WARNING, f"S3 upload failed: {exc}", False)
    except DrError as exc:
        return CheckResult("s3_replication", Status.WARNING, f"S3 check failed: {exc}")
    if repo.object_lock_mode is not None and repo.lock_for(latest.kind, now) is not None:
        if obj.lock_mode is None or obj.lock_until is None:
            return CheckResult(
                "s3_replication",
                Status.WARNING,
                f"S3 copy not locked: {latest.name} is in {repo.url('')} without Object Lock "
                f"although backups.object_lock.mode is {repo.object_lock_mode} (does the "
                "bucket have Object Lock enabled?)",
                True,
            )
        locked = f", Object Lock {obj.lock_mode} until {obj.lock_until:%Y-%m-%d %H:%M} UTC"
    else:
        locked = ""
    return CheckResult(
        "s3_replication",
        Status.OK,
        f"{latest.name} is in {repo.url('')} ({obj.storage_class}{locked})",
        True,
    )


# ---------------------------------------------------------------- restore-test results


def _foreign_owner(folder: Path) -> str | None:
    """The name of the user `folder` belongs to, when that is not this user."""
    try:
        uid = folder.stat().st_uid
    except OSError:
        return None
    if uid == os.geteuid():
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _restore_test_check(
    config: Config, now: datetime
) -> tuple[CheckResult, RestoreTestResult | None]:
    try:
        result = read_restore_test_result(config.state_dir)
    except DrError as exc:
        return CheckResult("restore_test", Status.WARNING, f"Restore test unknown: {exc}"), None
    if result is None:
        # Never run, or run by someone whose state this user does not share: either way
        # nobody knows the backups restore (the seed's weekly test is part of the schedule).
        where = restore_test_path(config.state_dir)
        summary = (
            f"Restore test never run: no record in {where} (run `preskool-dr restore-test`; "
            "if it runs as another user, give both the same state_dir in runbook.yaml)"
        )
        return CheckResult("restore_test", Status.WARNING, summary), None
    days = (now - result.finished_at).total_seconds() / 86400
    when = f"{days:.1f} d ago on {result.backup}"
    limit = config.thresholds.restore_test_max_age_days
    if not result.ok:
        summary = f"Restore test failed {when}: {result.detail}"
        return CheckResult("restore_test", Status.WARNING, summary, False), result
    if days > limit:
        summary = f"Restore test stale: last passed {when} (> {limit:g} d)"
        return CheckResult("restore_test", Status.WARNING, summary, True), result
    return CheckResult("restore_test", Status.OK, f"restore test passed {when}", True), result
