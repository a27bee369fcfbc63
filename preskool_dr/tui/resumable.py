"""Which unfinished runs this TUI may resume: only runs of its own mode (a drill never
resumes a production restore, nor the other way round), of its target database, on the
server DB_HOST/DB_PORT name. Resuming any other would act on a database this session was
not started for."""

from __future__ import annotations

from preskool_dr.core.base.errors import DrError, LockedError
from preskool_dr.core.base.lock import TargetLock, lock_path
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.engine import same_server
from preskool_dr.core.restore.journal import RunState


def mode_name(drill: bool) -> str:
    return "drill" if drill else "restore"


def why_not_resumable(state: RunState, config: Config, *, drill: bool, target_db: str) -> str:
    """Why this TUI must not resume `state`; "" when it may."""
    mode = mode_name(drill)
    if state.mode != mode:
        return f"run {state.run_id} is a {state.mode} run and this is a {mode}"
    if state.target_db != target_db:
        return f"run {state.run_id} restores {state.target_db}, not {target_db}"
    if not same_server(config.database, state):
        return (
            f"run {state.run_id} ran on {state.db_host}:{state.db_port}, not on "
            f"{config.database.host}:{config.database.port}"
        )
    return ""


def resumable_runs(
    runs: list[RunState], config: Config, *, drill: bool, target_db: str
) -> list[RunState]:
    return [s for s in runs if not why_not_resumable(s, config, drill=drill, target_db=target_db)]


def still_running(config: Config, state: RunState) -> bool:
    """Whether a process holds the run's target lock (the journal says "running" also for
    a process that was killed): taken and let go at once when it is free."""
    path = lock_path(config.state_dir, state.db_host, state.db_port, state.target_db)
    probe = TargetLock(path, run_id=state.run_id, operator="resume offer")
    try:
        probe.acquire()
    except LockedError:
        return True
    except DrError:  # an unsafe lock path: the resume itself will say why
        return False
    probe.release()
    return False
