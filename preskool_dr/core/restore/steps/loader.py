"""Step 6's choice of loader (restore.method) and the load itself, into the closed
`<target>_loading_<run id>` database; shared by step 6 (restore.py) and the load that
headless runs start before step 4 passes (early_load.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import psycopg

from preskool_dr.core.base import age, database
from preskool_dr.core.base.events import EventSink, Notice
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.journal import LoadRecord
from preskool_dr.core.restore.loaders import parallel as parallel_restore
from preskool_dr.core.restore.loaders import pg_restore
from preskool_dr.core.restore.loaders.stream import StreamResult, stream_restore
from preskool_dr.core.restore.steps.context import StepRun
from preskool_dr.core.storage.layout import companion_path

# Records the loader taken and why; with a level, also says it in a notice (None: quietly)
Chose = Callable[[str, str, str, str | None], None]


def load(
    run: StepRun,
    backup: Path,
    companion: Path | None,
    env: dict[str, str],
    cancel: threading.Event,
    loading: str,
    *,
    sink: EventSink,
    early: bool = False,
    decided: Callable[[LoadRecord], None] | None = None,
) -> tuple[StreamResult, LoadRecord]:
    """Load `backup` (or its `companion`) into `loading`; returns the result and which
    loader took it and why (`early`: a load started before step 4 passed). That choice is
    also said in a notice to `sink` and given to `decided` the moment it is made, before
    the load runs (step 6 puts it in the journal, `RunState.load`)."""
    name = run.state.backup.name if run.state.backup else backup.name
    chosen: list[LoadRecord] = []

    def chose(loader: str, how: str, reason: str, level: str | None) -> None:
        chosen.append(LoadRecord(loader, how, reason, early))
        if decided is not None:
            decided(chosen[-1])
        if level is not None:
            sink(Notice(level, f"loading {name}: {how}, because {reason}", StepId.RESTORE))

    result = _load(run, name, backup, companion, env, cancel, loading, sink, chose)
    return result, chosen[-1]


def _load(
    run: StepRun,
    name: str,
    backup: Path,
    companion: Path | None,
    env: dict[str, str],
    cancel: threading.Event,
    loading: str,
    sink: EventSink,
    chose: Chose,
) -> StreamResult:
    """The loader (restore.method): the custom-format companion step 4 accepted goes to
    pg_restore -j (never with method serial: `verified_files` offers none); without one,
    auto and parallel split the plain file over `jobs` sessions when the scanner accepts
    it (auto only with 2 sessions or more: one only adds work), else the runbook's serial
    stream (auto also when the parallel load stops on text it cannot split after it began:
    `loading` is then made afresh). Every path tells `chose` which it took and why."""
    method = run.config.restore.method
    jobs = parallel_restore.resolve_jobs(run.config.restore.jobs)
    step = StepId.RESTORE

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
        return stream_restore(
            backup, env, on_event=sink, step_id=step, cancel=cancel, identities=identities
        )
    if companion is not None:
        chose(
            "pg_restore",
            f"pg_restore -j {jobs} of {companion.name}",
            f"restore.method is {method} and step 4 verified the custom-format companion",
            "info",
        )
        return pg_restore.custom_restore(
            companion, env, jobs=jobs, on_event=sink, step_id=step, cancel=cancel
        )
    if method == "serial":
        chose("serial", "serial", "restore.method is serial", "info")
        return serial()
    no_companion = _no_companion_reason(run)
    unsupported = parallel_restore.unsupported_reason(backup)
    if unsupported is None and method == "auto" and jobs < 2:
        chose("serial", "serial", f"{no_companion}, and restore.jobs gives one session", "info")
        return serial()
    if unsupported is not None:
        chose("serial", "serial", f"the parallel loader cannot split it: {unsupported}", "warn")
        return serial()
    chose(
        "parallel",
        f"{jobs} parallel sessions",
        f"restore.method is {method}: {no_companion}",
        "info",
    )
    try:
        result = parallel_restore.parallel_restore(
            backup, env, jobs=jobs, on_event=sink, step_id=step, cancel=cancel
        )
    except parallel_restore.SplitUnsure as exc:
        if method != "auto":
            raise
        sink(Notice("warn", f"{exc.error} at line {exc.line:,}: starting again", step))
        with database.connect(run.config.database, admin=True) as conn:
            database.end_and_drop(conn, loading)
            create_loading(conn, loading, run.config.database.user)
        chose(
            "serial",
            "serial",
            f"the parallel loader could not split {backup.name} with certainty at line "
            f"{exc.line:,} ({exc.error})",
            "warn",
        )
        return serial()
    if result.serial_reason is not None:  # it handed the file to the serial stream
        chose("serial", "serial", result.serial_reason, None)  # it said so itself
    return result


def create_loading(conn: psycopg.Connection, loading: str, owner: str) -> list[str] | None:
    """The database the load goes into, owned by the app role, closed to other roles;
    returns the ACL that left (for step 6's `_open_loaded`)."""
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
