"""Step 6, restore: load the verified backup, check it, and only then open it as the target.

The loaders connect as the app role (the backup's SQL never runs as superuser), and
PostgreSQL cannot admit one session of a role and refuse another: so the load goes into
`<target>_loading_<run id>`, a name no application uses, that other roles may not connect
to, while the target stays step 5's closed, empty placeholder. When the restore-test's
checks pass on the load, it takes the target's name and opens. A headless run started
that load before step 4 passed (early_load.py): step 6 then waits for it instead.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import humanize
import psycopg

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import Notice
from preskool_dr.core.restore import restore_test
from preskool_dr.core.restore.journal import LoadRecord, StepRecord
from preskool_dr.core.restore.loaders.stream import StreamResult
from preskool_dr.core.restore.steps import loader
from preskool_dr.core.restore.steps.context import StepOutcome, StepRun, chosen_backup
from preskool_dr.core.restore.steps.db_names import loading_name
from preskool_dr.core.restore.steps.early_load import EARLY
from preskool_dr.core.restore.steps.verify_gate import verified_files
from preskool_dr.core.storage.meta import read_meta


def restore(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 6."""
    s = run.state
    db = run.config.database
    run.ensure_server_lock()
    loading = loading_name(s.target_db, s.run_id)
    early, run.early_load = run.early_load, None  # taken once: a retry loads afresh
    s.load = None
    try:
        if early is not None and (why := early.unusable_reason(chosen_backup(run))):
            run.on_event(Notice("warn", f"the load started early is dropped: {why}", record.id))
            early.stop()
            early = None
        if early is not None:
            result, choice = early.wait(cancel)
            closed_acl = early.closed_acl
        else:
            result, choice, closed_acl = _load_verified(run, record, cancel, loading)
        s.load = choice
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
    finally:
        if early is not None:
            early.close()
    _open_loaded(run, loading, closed_acl)
    return (
        f"loaded {len(result.tables_loaded)} tables, "
        f"{humanize.naturalsize(result.compressed_bytes, binary=True)} compressed in "
        f"{result.seconds:.1f} s ({choice.how}: {choice.reason})"
        f"{', ' + EARLY if choice.early else ''}; {len(checks)} checks passed"
    )


def _load_verified(
    run: StepRun, record: StepRecord, cancel: threading.Event, loading: str
) -> tuple[StreamResult, LoadRecord, list[str] | None]:
    """The load as step 6 makes it itself: through the verify gate, into `loading` made
    afresh (a retry or a resumed run may find a half load), next to step 5's closed
    placeholder. Returns the result, the loader chosen and why, and the ACL `loading` lost."""
    s = run.state
    db = run.config.database

    def decided(choice: LoadRecord) -> None:
        s.load = choice
        run.save()  # the journal names the loader before the load runs

    # The verify gate: the files are opened (and checked against step 4's record) before
    # the target is touched, and the loaders read those open files; leaving the block
    # checks that nothing wrote to them meanwhile.
    with verified_files(run, record, cancel, rehash=False) as (backup, companion):
        with database.connect(db, admin=True) as conn:
            for name in (s.target_db, loading):
                database.end_and_drop(conn, name)
            database.create_database(conn, s.target_db, None, allow_connections=False)
            closed_acl = loader.create_loading(conn, loading, db.user)
        env = database.load_env(db, loading, run.config.restore.maintenance_work_mem)
        result, choice = loader.load(
            run, backup, companion, env, cancel, loading, sink=run.on_event, decided=decided
        )
    return result, choice, closed_acl


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
