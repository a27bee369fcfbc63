"""Step 6: the recovered server replays the archived WAL up to the target, then promotes;
followed through its log and over SQL, with the WAL replayed so far as progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from preskool_dr.core.backup.wal.names import parse_lsn
from preskool_dr.core.base.events import EventSink, Progress
from preskool_dr.core.pitr.request import iso
from preskool_dr.core.pitr.server import RecoveredServer

POLL_SECONDS = 1.0


def follow_replay(
    server: RecoveredServer,
    start_lsn: str,
    target: datetime,
    on_event: EventSink,
    between_polls: Callable[[], None],
) -> None:
    """Returns once the server has left recovery (over SQL) or its log shows the promotion;
    `between_polls` raises when the run must stop (the server died, a cancel)."""
    start = parse_lsn(start_lsn)
    while True:
        server.forward_log()
        status = server.poll()
        if status is not None:
            in_recovery, lsn, replayed = status
            if lsn is not None:
                on_event(
                    Progress(
                        "replay",
                        "replay",
                        max(0, parse_lsn(lsn) - start),
                        None,
                        current=f"replayed to {iso(replayed)} (target {iso(target)})",
                    )
                )
            if not in_recovery:
                return
        if server.log.promoted():
            return
        between_polls()
        time.sleep(POLL_SECONDS)
