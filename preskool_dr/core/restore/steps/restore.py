"""Step 6, restore: load the verified backup, check it, and only then open it as the target.

The loaders connect as the app role (the backup's SQL never runs as superuser), and
PostgreSQL cannot admit one session of a role and refuse another: so the load goes into
`<target>_loading_<run id>`, a name no application uses, that other roles may not connect
to, while the target stays step 5's closed, empty placeholder. When the restore-test's
checks pass on the load, it takes the target's name and opens.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import humanize
import psycopg

from preskool_dr.core.base import age, database
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import Notice
from preskool_dr.core.restore import restore_test
from preskool_dr.core.restore.journal import LoadRecord, StepRecord
from preskool_dr.core.restore.loaders import parallel as parallel_restore
from preskool_dr.core.restore.loaders import pg_restore
from preskool_dr.core.restore.loaders.stream import StreamResult, stream_restore
from preskool_dr.core.restore.steps.context import StepOutcome, StepRun
from preskool_dr.core.restore.steps.db_names import loading_name
from preskool_dr.core.restore.steps.verify_gate import verified_files
from preskool_dr.core.storage.layout import companion_path
from preskool_dr.core.storage.meta import read_meta


def restore(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 6."""
    s = run.state
    db = run.config.database
    run.ensure_server_lock()
    loading = loading_name(s.target_db, s.run_id)
    try:
        # The verify gate: the files are opened (and checked against step 4's record)
        # before the target is touched, and the loaders read those open files; leaving
        # the block checks that nothing wrote to them meanwhile.
        with verified_files(run, record, cancel, rehash=False) as (backup, companion):
            # Redo from a clean database every time: a retry or a resumed run may find a
            # half load.
            with database.connect(db, admin=True) as conn:
                for name in (s.target_db, loading):
                    if database.database_exists(conn, name):
                        database.block_and_terminate(conn, name)
                        database.drop_database(conn, name)
                database.create_database(conn, s.target_db, None, allow_connections=False)
                closed_acl = _create_loading(conn, loading, db.user)
            env = database.load_env(db, loading, run.config.restore.maintenance_work_mem)
            result, how = _load(run, backup, companion, env, record, cancel, loading)
            checks = _validate(run, loading)
            failed = [c for c in checks if not c["ok"]]
            if failed:
                raise DrError(
                    f"restore loaded but validation failed: {failed[0]['name']}: {failed[0]['detail']}"
                )
    except BaseException:
        # a half or failed load stays closed to everyone (the next attempt drops it)
        with (
            contextlib.suppress(DrError, psycopg.Error),
            database.connect(db, admin=True) as conn,
        ):
            database.block_and_terminate(conn, loading)
        raise
    _open_loaded(run, loading, closed_acl)
    return (
        f"loaded {len(result.tables_loaded)} tables, "
        f"{humanize.naturalsize(result.compressed_bytes, binary=True)} compressed in "
        f"{result.seconds:.1f} s ({how}); {len(checks)} checks passed"
    )


def _load(
    run: StepRun,
    backup: Path,
    companion: Path | None,
    env: dict[str, str],
    record: StepRecord,
    cancel: threading.Event,
    loading: str,
) -> tuple[StreamResult, str]:
    """The loader (restore.method): the custom-format companion step 4 accepted goes to
    pg_restore -j (never with method serial: `verified_files` offers none); without one,
    auto and parallel split the plain file over `jobs` sessions when the scanner accepts
    it (auto only with 2 sessions or more: one only adds work), else the runbook's serial
    stream (auto also when the parallel load stops on text it cannot split after it began:
    `loading` is then made afresh). Which path and why goes to the step's output (a notice)
    and the journal (`RunState.load`); the returned text (for the step's detail) says both."""
    method = run.config.restore.method
    jobs = parallel_restore.resolve_jobs(run.config.restore.jobs)
    sink, step = run.on_event, record.id
    name = run.state.backup.name if run.state.backup else backup.name
    run.state.load = None

    def chose(loader: str, how: str, reason: str, level: str = "info") -> None:
        run.state.load = LoadRecord(loader, how, reason)
        run.save()
        sink(Notice(level, f"loading {name}: {how}, because {reason}", step))

    def serial() -> StreamResult:
        return stream_restore(backup, env, on_event=sink, step_id=step, cancel=cancel)

    if age.is_encrypted_name(name):
        # decrypted in the stream: the parallel loader would need the clear text on disk
        identities = age.need_identities(run.config.encryption.identity, name)
        chose(
            "serial",
            "serial, decrypted in the stream",
            "the backup is encrypted and only the serial stream decrypts as it loads",
            "warn" if method == "parallel" else "info",
        )
        result = stream_restore(
            backup, env, on_event=sink, step_id=step, cancel=cancel, identities=identities
        )
        return result, _said(run.state.load)
    if companion is not None:
        chose(
            "pg_restore",
            f"pg_restore -j {jobs} of {companion.name}",
            f"restore.method is {method} and step 4 verified the custom-format companion",
        )
        result = pg_restore.custom_restore(
            companion, env, jobs=jobs, on_event=sink, step_id=step, cancel=cancel
        )
        return result, _said(run.state.load)
    if method == "serial":
        chose("serial", "serial", "restore.method is serial")
        return serial(), _said(run.state.load)
    no_companion = _no_companion_reason(run)
    unsupported = parallel_restore.unsupported_reason(backup)
    if unsupported is None and method == "auto" and jobs < 2:
        chose("serial", "serial", f"{no_companion}, and restore.jobs gives one session")
        return serial(), _said(run.state.load)
    if unsupported is not None:
        chose("serial", "serial", f"the parallel loader cannot split it: {unsupported}", "warn")
        return serial(), _said(run.state.load)
    chose("parallel", f"{jobs} parallel sessions", f"restore.method is {method}: {no_companion}")
    try:
        result = parallel_restore.parallel_restore(
            backup, env, jobs=jobs, on_event=sink, step_id=step, cancel=cancel
        )
    except parallel_restore.SplitUnsure as exc:
        if method != "auto":
            raise
        sink(Notice("warn", f"{exc.error} at line {exc.line:,}: starting again", step))
        with database.connect(run.config.database, admin=True) as conn:
            database.block_and_terminate(conn, loading)
            database.drop_database(conn, loading)
            _create_loading(conn, loading, run.config.database.user)
        chose(
            "serial",
            "serial",
            f"the parallel loader could not split {backup.name} with certainty at line "
            f"{exc.line:,} ({exc.error})",
            "warn",
        )
        return serial(), _said(run.state.load)
    if result.serial_reason is not None:  # it handed the file to the serial stream
        run.state.load = LoadRecord("serial", "serial", result.serial_reason)
        run.save()
    return result, _said(run.state.load)


def _said(load: LoadRecord | None) -> str:
    """The loader and its reason, for the step's detail."""
    assert load is not None
    return f"{load.how}: {load.reason}"


def _create_loading(conn: psycopg.Connection, loading: str, owner: str) -> list[str] | None:
    """The database the load goes into, owned by the app role, closed to other roles;
    returns the ACL that left (for `_open_loaded`)."""
    database.create_database(conn, loading, owner)
    return database.revoke_public_connect(conn, loading)


def _no_companion_reason(run: StepRun) -> str:
    """Why step 6 has no custom-format companion to load (method auto or parallel)."""
    choice = run.state.backup
    local = Path(choice.local_path) if choice and choice.local_path else None
    if local is None or not companion_path(local).is_file():
        return "no usable custom-format companion (.dump) beside the backup"
    # step 4 or the verify gate refused it, and said why in a warning
    return "its custom-format companion was not accepted (see the warning above)"


def _validate(run: StepRun, dbname: str) -> list[dict[str, object]]:
    """The restore-test's checks on the restored database (`dbname`, the loading name):
    required tables, row counts equal to those recorded at backup time, smoke queries."""
    s = run.state
    local = Path(s.backup.local_path) if s.backup and s.backup.local_path else None
    meta = read_meta(local) if local else None
    rt = run.config.restore_test
    # as the app role, never the admin: the checks run inside what the backup made
    with database.connect(run.config.database, dbname) as conn:
        checks, _ = restore_test.validate_restored(
            conn, rt.required_tables, meta.row_counts if meta else None, rt.smoke_queries
        )
    s.validation = [c.to_json() for c in checks]
    return s.validation


def _open_loaded(run: StepRun, loading: str, closed_acl: list[str] | None) -> None:
    """The checks passed: the loaded database takes the target's name and opens, with the
    privileges a fresh database has (or those the backup's SQL set itself)."""
    s = run.state
    with database.connect(run.config.database, admin=True) as conn:
        database.block_and_terminate(conn, loading)  # closed for the rename
        if database.database_exists(conn, s.target_db):
            database.block_and_terminate(conn, s.target_db)
            database.drop_database(conn, s.target_db)  # the empty placeholder
        database.rename_database(conn, loading, s.target_db)
        database.restore_public_connect(conn, s.target_db, closed_acl)
        database.allow_connections(conn, s.target_db)
