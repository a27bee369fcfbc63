"""The runbook's weekly restore test (section 3.1): restore a backup into a scratch
database, check what came back, and drop the scratch database again - always.

A backup that fails its checksum is never restored. The scratch database is dropped on
success, on failure, on an exception and on Ctrl-C/SIGTERM (the CLI turns those into
KeyboardInterrupt), so a weekly cron job never leaves a copy of the school's data behind.
"""

from __future__ import annotations

import getpass
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import humanize
import psycopg

from preskool_dr.core.base import age, database
from preskool_dr.core.base.errors import (
    ArchivedError,
    Cancelled,
    DrError,
    NoSpaceError,
    UsageError,
)
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.lock import TargetLock, lock_path
from preskool_dr.core.base.settings import Config, SmokeQuery
from preskool_dr.core.restore import pinned
from preskool_dr.core.restore.loaders.stream import stream_restore
from preskool_dr.core.restore.server_space import check_server_space
from preskool_dr.core.restore.test_record import record_restore_test_result
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.fetch import fetch_backup
from preskool_dr.core.storage.meta import read_meta

STEP_ID = "restore-test"


@dataclass(frozen=True)
class Check:
    """One line of the report: `status` is ok, fail, or skipped (nothing to compare with)."""

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail}


def _passed(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _failed(name: str, detail: str) -> Check:
    return Check(name, "fail", detail)


@dataclass(frozen=True)
class RestoreTestReport:
    backup: str  # the backup's name
    database: str  # the scratch database
    checks: tuple[Check, ...]
    seconds: float
    row_counts: dict[str, int] = field(default_factory=dict)  # of the required tables

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def detail(self) -> str:
        """One line for `check` and the final PASS/FAIL line."""
        bad = next((c for c in self.checks if not c.ok), None)
        if bad is not None:
            return f"{bad.name}: {bad.detail}"
        return f"{len(self.checks)} checks passed in {self.seconds:.1f} s"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "backup": self.backup,
            "database": self.database,
            "checks": [c.to_json() for c in self.checks],
            "row_counts": dict(self.row_counts),
            "seconds": round(self.seconds, 3),
        }


def validate_restored(
    conn: psycopg.Connection,
    required_tables: tuple[str, ...] | list[str],
    recorded_counts: Mapping[str, int] | None,
    smoke_queries: tuple[SmokeQuery, ...] = (),
) -> tuple[list[Check], dict[str, int]]:
    """The checks a restored database must pass: tables, required tables, row counts equal
    to those recorded at backup time (same snapshot as the dump), smoke queries.
    Returns the checks and the row counts of the required tables that exist."""
    tables = database.list_tables(conn)
    present = set(tables)
    checks = [
        _passed("tables", f"{len(tables)} tables in schema public")
        if tables
        else _failed("tables", "the restored database holds no tables in schema public")
    ]
    missing = [t for t in required_tables if t not in present]
    checks.append(
        _failed("required tables", f"missing {len(missing)}: {', '.join(missing)}")
        if missing
        else _passed("required tables", f"all {len(required_tables)} present")
    )
    counts = database.row_counts(conn, [t for t in required_tables if t in present])
    checks.append(_row_count_check(counts, recorded_counts))
    checks.extend(_smoke_check(conn, query) for query in smoke_queries)
    return checks, counts


def _row_count_check(counts: dict[str, int], recorded: Mapping[str, int] | None) -> Check:
    total = sum(counts.values())
    if not recorded:
        return Check(
            "row counts",
            "skipped",
            f"{humanize.intcomma(total)} rows in the required tables; the backup has no "
            "recorded counts to compare with (no .meta.json)",
        )
    compared = {t: n for t, n in counts.items() if t in recorded}
    wrong = [f"{t} {n:,} (backup {recorded[t]:,})" for t, n in compared.items() if n != recorded[t]]
    if wrong:
        return _failed(
            "row counts", f"{len(wrong)} differ from the backup's record: {'; '.join(wrong)}"
        )
    return _passed(
        "row counts",
        f"{len(compared)} tables match the counts recorded at backup time "
        f"({humanize.intcomma(sum(compared.values()))} rows)",
    )


# Smoke queries are the site's own SQL from runbook.yaml and name their tables unqualified
# (`SELECT count(*) FROM students`), so they run with public on the path - after pg_catalog,
# named first so no function or operator of the backup's can take a built-in's exact name.
# A backup's function can still be picked for a closer type match (public.lower(varchar)
# over pg_catalog.lower(text)), and a view runs whatever it likes: what bounds that code is
# the role. Every query inside a restored database runs as the app role (DB_USER), the
# non-superuser that owns the database and already ran the whole dump while loading it, so
# nothing a check runs has rights the backup's text did not have anyway.
SMOKE_SEARCH_PATH = "pg_catalog, public"


def _smoke_check(conn: psycopg.Connection, query: SmokeQuery) -> Check:
    name = f"smoke: {query.name}"
    try:
        with conn.transaction():  # SET LOCAL: the pinned path is back for the next query
            conn.execute(f"SET LOCAL search_path = {SMOKE_SEARCH_PATH}")
            rows = conn.execute(query.sql).fetchall()  # the site's own SQL from runbook.yaml
    except psycopg.Error as exc:
        return _failed(name, f"query failed: {database.first_line(exc)}")
    if len(rows) != 1 or not rows[0]:
        return _failed(name, f"expected one row, got {len(rows)}")
    value = rows[0][0]
    if query.min_value is None:
        return _passed(name, f"returned {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _failed(
            name, f"returned {value!r}, not a number to compare with {query.min_value:g}"
        )
    if number < query.min_value:
        return _failed(name, f"returned {value!r}, below the minimum {query.min_value:g}")
    return _passed(name, f"returned {value!r} (minimum {query.min_value:g})")


class _Run:
    """One restore test: collects checks (announcing each as a Notice) and cleans up."""

    def __init__(self, config: Config, on_event: EventSink, cancel: threading.Event | None) -> None:
        self.config = config
        self.on_event = on_event
        self.cancel = cancel
        self.checks: list[Check] = []
        self.row_counts: dict[str, int] = {}
        self.test_db = scratch_database_name(config)
        self._identities: list[Any] | None = None  # of an encrypted backup

    def add(self, check: Check) -> None:
        self.checks.append(check)
        level = {"ok": "ok", "fail": "error"}.get(check.status, "info")
        self.on_event(Notice(level, f"{check.name}: {check.detail}", STEP_ID))

    def info(self, text: str) -> None:
        self.on_event(Notice("info", text, STEP_ID))

    def attempt(self, name: str, action: Callable[[], str]) -> bool:
        """Run one step; an expected failure becomes a failed check, not an exception."""
        try:
            detail = action()
        except (Cancelled, UsageError, ArchivedError):
            raise
        except DrError as exc:
            self.add(_failed(name, str(exc)))
            return False
        self.add(_passed(name, detail))
        return True

    def test(self, backup: Path) -> None:
        """Verify, then restore into the scratch database and check it; drops it always."""
        try:
            identities = (
                age.need_identities(self.config.encryption.identity, backup.name)
                if age.is_encrypted_name(backup.name)
                else None
            )
            verify = checksum.verify_with_sidecar(
                backup,
                on_event=self.on_event,
                step_id=STEP_ID,
                cancel=self.cancel,
                check_dump=True,
                identities=identities,
            )
        except (age.DecryptionError, age.IdentityMissing) as exc:  # recorded: `check` sees it
            self.add(_failed("decrypt", f"{exc} - not restored"))
            return
        self.add(
            _passed("checksum", verify.findings())
            if verify.ok
            else _failed("checksum", f"{verify.findings()} - not restored")
        )
        if not verify.ok or not self._server_space(backup):
            return
        self._identities = identities
        db = self.config.database
        lock = lock_path(self.config.state_dir, db.host, db.port, self.test_db)
        operator = _operator()
        with TargetLock(lock, run_id=f"restore-test-{os.getpid()}", operator=operator):
            try:
                if self.attempt("create database", self._create):
                    self._restore_and_check(backup, verify)
            finally:
                self._drop()

    def _server_space(self, backup: Path) -> bool:
        """Room on the server for the restored database, as step 5 checks it: a failed
        check when short (nothing is created), skipped when it cannot be measured."""
        try:
            space = check_server_space(
                self.config.database, read_meta(backup), dropped=self.test_db
            )
        except NoSpaceError as exc:
            self.add(_failed("server space", str(exc)))
            return False
        self.add(Check("server space", "ok" if space.measured else "skipped", space.detail))
        return True

    def _create(self) -> str:
        db = self.config.database
        with database.connect(db, admin=True) as conn:
            if database.database_exists(conn, self.test_db):
                database.block_and_terminate(conn, self.test_db)
                database.drop_database(conn, self.test_db)
                self.info(f"dropped {self.test_db} left over from an earlier, interrupted test")
            database.create_database(conn, self.test_db, db.user)
        return f"{self.test_db} created on {db.host}:{db.port} (owner {db.user})"

    def _restore_and_check(self, backup: Path, verified: checksum.VerifyResult) -> None:
        db = self.config.database
        folder = self.config.state_dir / "load" / f"restore-test-{os.getpid()}"

        def load() -> str:
            # The verify gate, as in the nine steps: the load reads the open file whose MD5
            # is the one just verified, never whatever the path names by then.
            with pinned.open_verified(
                backup,
                verified.actual_md5,
                verified.identity,
                folder,
                on_event=self.on_event,
                step_id=STEP_ID,
                cancel=self.cancel,
            ) as pin:
                result = stream_restore(
                    pin.load_path,
                    database.load_env(db, self.test_db, self.config.restore.maintenance_work_mem),
                    on_event=self.on_event,
                    step_id=STEP_ID,
                    cancel=self.cancel,
                    identities=self._identities,
                )
            return (
                f"{len(result.tables_loaded)} tables loaded from "
                f"{humanize.naturalsize(result.compressed_bytes, binary=True)} "
                f"({humanize.naturalsize(result.sql_bytes, binary=True)} of SQL) "
                f"in {result.seconds:.1f} s"
            )

        if not self.attempt("restore", load):
            return
        meta = read_meta(backup)
        settings = self.config.restore_test
        try:
            with database.connect(db, self.test_db) as conn:
                checks, self.row_counts = validate_restored(
                    conn,
                    settings.required_tables,
                    meta.row_counts if meta else None,
                    settings.smoke_queries,
                )
        except psycopg.Error as exc:
            self.add(
                _failed("checks", f"querying {self.test_db} failed: {database.first_line(exc)}")
            )
            return
        for check in checks:
            self.add(check)

    def _drop(self) -> None:
        """Drop the scratch database; a Ctrl-C during the drop does not stop the drop."""
        interrupted: BaseException | None = None
        for _ in range(2):
            try:
                self.attempt("drop database", self._drop_once)
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted

    def _drop_once(self) -> str:
        with database.connect(self.config.database, admin=True) as conn:
            if database.database_exists(conn, self.test_db):
                database.block_and_terminate(conn, self.test_db)
                database.drop_database(conn, self.test_db)
        return f"{self.test_db} dropped"


def scratch_database_name(config: Config) -> str:
    """The scratch database; refused when it names a database that must never be dropped."""
    name = database.check_database_name(config.restore_test.database)
    protected = {config.database.name: "the production database (DB_NAME)"}
    protected.setdefault(config.drill.target_db, "the drill database (drill.target_db)")
    if name in protected:
        raise UsageError(
            f"restore_test.database is {name!r}, {protected[name]}: the restore test drops "
            "its database at the end; set restore_test.database to a scratch name in runbook.yaml"
        )
    return name


def run_restore_test(
    config: Config,
    spec: str = "latest",
    *,
    on_event: EventSink = ignore_events,
    cancel: threading.Event | None = None,
) -> RestoreTestReport:
    """Resolve, fetch, verify, restore into `restore_test.database`, check, drop; the result
    is recorded for `preskool-dr check`. NotFoundError/UsageError (exit 2) and ArchivedError
    (exit 3) are raised before anything is created; Cancelled/KeyboardInterrupt after cleanup."""
    started = time.monotonic()
    run = _Run(config, on_event, cancel)
    record = catalog.resolve_backup(config, spec)
    if record.kind == "base":
        raise UsageError(
            f"{record.name} is a base backup: the restore test loads plain-SQL backups "
            "(preskool-backup-*.sql.gz); name one of those or use `latest`"
        )
    run.info(f"restore test of {record.name} into {run.test_db}")
    local = fetch_backup(config, record, on_event=on_event, step_id=STEP_ID, cancel=cancel)
    if local.is_dir():
        raise UsageError(f"{local} is a directory: the restore test loads one .sql.gz file")
    run.test(local)
    report = RestoreTestReport(
        backup=record.name,
        database=run.test_db,
        checks=tuple(run.checks),
        seconds=time.monotonic() - started,
        row_counts=run.row_counts,
    )
    record_restore_test_result(
        config.state_dir,
        ok=report.ok,
        backup=report.backup,
        detail=report.detail,
        extra={"checks": [c.to_json() for c in report.checks], "seconds": report.seconds},
    )
    return report


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
