"""Step 5, recreate_db: replace the target with an empty database, closed until step 6's
checks pass. The only destructive step: it runs on the typed target name alone.

By default ("aside" mode) the old database is renamed `<target>_before_<run id>` instead
of dropped; `rollback` puts it back, `drop_aside` drops it on the operator's word once the
health check (step 9) passed. "drop" mode drops it, as the runbook's seed commands do.
"""

from __future__ import annotations

import threading
from pathlib import Path

import humanize

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.events import Notice, StepStatus, utcnow
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.journal import RunState, StepRecord
from preskool_dr.core.restore.server_space import check_server_space
from preskool_dr.core.restore.steps.context import (
    StepOutcome,
    StepRun,
    chosen_backup,
    local_backup,
)
from preskool_dr.core.restore.steps.db_names import aside_name, loading_name
from preskool_dr.core.restore.steps.verify_gate import verified_files
from preskool_dr.core.storage.meta import read_meta


def recreate_db(run: StepRun, record: StepRecord, cancel: threading.Event) -> StepOutcome:
    """Step 5."""
    s = run.state
    db = run.config.database
    run.ensure_server_lock()
    # The verify gate, before anything is destroyed: the backup (and the companion step 6
    # would load) is read again in full and must have the MD5 step 4 recorded. Not the file
    # step 6's load, started early, holds open: it hashed that file through its descriptor
    # before it began, and a file replaced or written since has another identity, which the
    # gate rehashes.
    held = run.early_load.holds if run.early_load is not None else None
    with verified_files(run, record, cancel, rehash=True, held=held.path if held else None):
        pass
    space = server_space(run)  # NoSpaceError before anything is renamed or dropped
    snap = database.snapshot(db, s.target_db)
    if s.destroyed is None:
        s.destroyed = {
            "database": snap.database,
            "existed": snap.exists,
            "size_bytes": snap.size_bytes,
            "row_estimates": snap.row_estimates,
            "recorded_at": utcnow().isoformat(timespec="seconds"),
        }
    s.confirmed_at = utcnow()
    use_aside = s.recreate_mode == "aside"
    if use_aside and s.aside_db is None:
        s.aside_db = aside_name(s.target_db, s.run_id)
        s.aside_state = "planned"
    run.save()  # what is about to be destroyed is on disk before anything is
    with database.connect(db, admin=True) as conn:
        database.require_role(conn, db.user)  # before anything is renamed or dropped
        aside_exists = bool(s.aside_db) and database.database_exists(conn, s.aside_db or "")
        target_exists = database.database_exists(conn, s.target_db)
        if use_aside and aside_exists:
            s.aside_state = "renamed"  # a resumed run: the rename already happened
        if target_exists:
            ended = database.block_and_terminate(conn, s.target_db)
            run.on_event(Notice("info", f"ended {ended} session(s) on {s.target_db}", record.id))
            if use_aside and not aside_exists:
                database.rename_database(conn, s.target_db, s.aside_db or "")
                # open again under its new name: rows written after the backup can be
                # salvaged from it; the app only ever connects to the target's name
                database.allow_connections(conn, s.aside_db or "")
                s.aside_state = "renamed"
                run.save()
            else:
                # drop mode, or our own half-made database from an interrupted attempt
                database.drop_database(conn, s.target_db)
        # closed (and owned by the admin role, so the app role cannot open it) until
        # step 6 has loaded and checked the backup: nothing reads or backs up a half load
        database.create_database(conn, s.target_db, None, allow_connections=False)
    closed = f"closed to connections until step 6's checks pass; {space}"
    if use_aside and s.aside_state == "renamed":
        return f"old database kept as {s.aside_db}; empty {s.target_db} created, {closed}"
    if snap.exists:
        size = humanize.naturalsize(snap.size_bytes, binary=True)
        return f"dropped {s.target_db} ({size}); created it empty, {closed}"
    return f"created {s.target_db}, {closed}; there was no database to replace"


def server_space(
    run: StepRun, downloading: tuple[Path, int] | None = None, *, load_first: bool = False
) -> str:
    """Room on the database server for the chosen backup restored (core/restore/
    server_space.py): checked by step 4, before the headless restore takes the app offline,
    and again by step 5, before anything is renamed or dropped; and by a load started while
    step 3 is `downloading` the backup (its local path, and the bytes still to come: the
    server's disk needs room for them too when it is BACKUP_DIR's). `load_first`: a load
    writes before step 5 drops the target, so the target's space is not free for it.
    NoSpaceError when short."""
    s = run.state
    chosen_backup(run)  # DrError when step 2 has not chosen one
    local = local_backup(run, downloading)
    meta = read_meta(local) if local else None
    # aside mode keeps the old database (renamed); what step 5 drops frees its space, and
    # what a load started early wrote already is part of what is needed
    keeps_old = s.recreate_mode == "aside" and s.aside_state != "renamed"
    dropped = None if keeps_old or load_first else s.target_db
    loading = loading_name(s.target_db, s.run_id) if run.early_load else None
    incoming = (downloading[0].parent, downloading[1]) if downloading else None
    return check_server_space(
        run.config.database, meta, dropped=dropped, loading=loading, incoming=incoming
    ).detail


def production_state(s: RunState) -> str:
    """One honest sentence about where production is, for failures and summaries."""
    recreate = s.step(StepId.RECREATE_DB)
    if recreate.status is StepStatus.PENDING and s.aside_state is None:
        return f"production database {s.target_db} has not been touched"
    if s.aside_state == "rolled-back":
        return f"production database {s.target_db} was rolled back to its state before this run"
    if s.aside_db and s.aside_state == "renamed":
        return (
            f"the old database is kept as {s.aside_db}; {s.target_db} holds this run's restore "
            f"(roll back: preskool-dr restore --rollback {s.run_id} --confirm {s.target_db})"
        )
    if s.recreate_mode == "drop" and recreate.status is not StepStatus.PENDING:
        return f"the old {s.target_db} was dropped (drop mode); only the backup can bring it back"
    return f"production database {s.target_db} has not been touched"


def rollback(run: StepRun) -> None:
    """Put the aside copy back as the target database (after a failed or bad restore);
    the caller checked the typed target name."""
    s = run.state
    if s.aside_state != "renamed" or not s.aside_db:
        raise UsageError(
            f"run {s.run_id} has no aside copy to roll back to ({production_state(s)})"
        )
    run.ensure_server_lock()
    with database.connect(run.config.database, admin=True) as conn:
        if not database.database_exists(conn, s.aside_db):
            raise DrError(f"the aside copy {s.aside_db} no longer exists: nothing to roll back to")
        # the target, and a half load step 6 left under its loading name
        for name in (s.target_db, loading_name(s.target_db, s.run_id)):
            database.end_and_drop(conn, name)
        database.rename_database(conn, s.aside_db, s.target_db)
        database.allow_connections(conn, s.target_db)
    s.aside_state = "rolled-back"
    s.result = "rolled-back"
    s.finished_at = utcnow()
    s.notes.append(f"{utcnow().isoformat(timespec='seconds')} rolled back to {s.aside_db}")
    run.save()
    run.on_event(
        Notice("ok", f"rolled back: {s.target_db} is the database from before run {s.run_id}")
    )


def drop_aside(run: StepRun, confirmation: str | None) -> None:
    """Drop the aside copy once the operator is satisfied (needs its name typed)."""
    s = run.state
    if s.aside_state != "renamed" or not s.aside_db:
        raise UsageError(f"run {s.run_id} has no aside copy to drop")
    if run.step(StepId.HEALTH).status is not StepStatus.DONE:
        raise UsageError("the aside copy is kept until the health check (step 9) has passed")
    if confirmation != s.aside_db:
        raise UsageError(
            f"type the aside copy's name {s.aside_db!r} to drop it: nothing was changed"
        )
    run.ensure_server_lock()
    with database.connect(run.config.database, admin=True) as conn:
        database.drop_database(conn, s.aside_db)
    s.aside_state = "dropped"
    run.save()
    run.on_event(Notice("ok", f"dropped the aside copy {s.aside_db}"))
