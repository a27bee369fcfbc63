"""Step 7: the server stopped right after the target and promoted (its log, double-checked
over SQL); for a drill, the recovered database passes the restore-test checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import VerificationError
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.journal import PitrState
from preskool_dr.core.pitr.request import iso
from preskool_dr.core.pitr.server import RecoveredServer
from preskool_dr.core.restore import restore_test


def check_reached(
    state: PitrState,
    server: RecoveredServer,
    target: datetime,
    notice: Callable[[str, str, str], None],
) -> str:
    """Records where recovery stopped in `state` (stop_point, recovery_end, timeline);
    VerificationError unless it stopped right after `target` and promoted. Returns what
    was reached."""
    log = server.log
    stop = log.stop_point()
    if stop is None:
        raise VerificationError(
            "the server log has no 'recovery stopping before' line: the server did not "
            f"stop at the target; inspect {log.path} before using this copy"
        )
    state.stop_point = stop[1]
    state.recovery_end = log.last_transaction()
    state.timeline = log.new_timeline()
    status = server.poll()
    if status is not None:
        in_recovery, _, replayed = status
        if in_recovery:
            raise VerificationError("the server is still in recovery: it did not promote")
        state.recovery_end = replayed or state.recovery_end
    else:
        notice(
            "warn",
            f"could not connect to port {server.port} to double-check over SQL; "
            "the server log confirms the recovery",
            "verify",
        )
        if not log.promoted():
            raise VerificationError(f"the server log does not show the promotion: see {log.path}")
    if state.stop_point <= target:
        raise VerificationError(
            f"recovery stopped at a transaction of {iso(state.stop_point)}, not after the "
            f"target {iso(target)}"
        )
    end = state.recovery_end
    if end is not None and end > target:
        raise VerificationError(
            f"the last replayed transaction is from {iso(end)}, after the target {iso(target)}"
        )
    return (
        f"promoted on timeline {state.timeline or '?'}: last transaction {iso(end)}, "
        f"first one not replayed {iso(state.stop_point)}"
    )


def validate_copy(config: Config, port: int) -> list[dict[str, Any]]:
    """A drill's restore-test checks (runbook.yaml restore_test: required tables, smoke
    queries) on the recovered copy of the production database. No row counts to compare:
    a base backup records none, and the copy is of another moment anyway."""
    rt = config.restore_test
    db = dataclasses.replace(config.database, host="localhost", port=port)
    # as the app role, never the admin: the checks run inside what the backup made
    with database.connect(db, db.name) as conn:
        checks, _ = restore_test.validate_restored(conn, rt.required_tables, None, rt.smoke_queries)
    return [c.to_json() for c in checks]
