"""The two locks of one restore run (core/base/lock.py), held from the moment the run is
opened until `Engine.close()`: the local flock (state folder) and the server's advisory
lock on the target's name. A second restore of the same database is refused before it runs
anything (whatever host spelling, user or machine), and `backup` of the target is refused
while the old database is replaced and the new one loaded. The server's lock is taken at
open when the server answers, and checked again (taken, or taken back after a server
restart) before step 1 stops the app, before steps 5 and 6, and before a rollback or drop.
"""

from __future__ import annotations

from preskool_dr.core.base.lock import ServerLock, TargetLock, lock_path
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.journal import RunState


class RunLocks:
    """The run's local flock (`target`) and the server's lock (`server`)."""

    def __init__(self, config: Config, state: RunState) -> None:
        self.target = TargetLock(
            lock_path(config.state_dir, state.db_host, state.db_port, state.target_db),
            run_id=state.run_id,
            operator=state.operator,
        )
        self.server = ServerLock(
            config.database, state.target_db, run_id=state.run_id, operator=state.operator
        )

    def take(self) -> None:
        """The local flock, then the server's lock; a server that does not answer now is
        only needed (and its lock then required) by the steps that change it."""
        self.target.acquire()
        try:
            self.server.try_acquire()
        except BaseException:
            self.target.release()
            raise

    def release(self) -> None:
        self.server.release()
        self.target.release()

    def ensure_server(self) -> None:
        """Before the server is changed: its lock is held, or taken (back) now."""
        self.server.ensure()
