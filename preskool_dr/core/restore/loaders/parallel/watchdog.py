"""The parallel load's watchdog: fail the load when nothing moves for `seconds` (no bytes
scanned or loaded, no job done, no server session of the load working), naming what it
waited for, instead of waiting forever on a lock nobody releases or a sync marker that never
comes back. A CREATE INDEX that runs for an hour is progress (its server session is
active); one that waits for a lock is not."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import psycopg

from preskool_dr.core.restore.loaders.parallel.jobs import COPY, Job
from preskool_dr.core.restore.loaders.parallel.sessions import connect_env
from preskool_dr.core.restore.loaders.stream import RestoreError, one_line

if TYPE_CHECKING:
    from preskool_dr.core.restore.loaders.parallel.feed import ScanFeed
    from preskool_dr.core.restore.loaders.parallel.scheduler import Scheduler
    from preskool_dr.core.restore.loaders.parallel.sessions import Psql

# Seconds without progress (no bytes scanned or loaded, no job finished, no server session
# of the load running) after which a wait is given up: a CREATE INDEX that runs for an hour
# is progress (its server session is active); one that waits for a lock nobody releases,
# or a psql that never answers its sync marker, is not.
WATCHDOG_SECONDS = 300.0
# what a server session of the load waits for when it is not working
_STALLED_WAITS = frozenset({"Lock", "Client", "Timeout", "BufferPin", "Extension"})


class Watchdog:
    """What moved last, and when (monotonic seconds); `watch_server` runs in a thread of
    its own and notes whether the load's server sessions work."""

    def __init__(self, seconds: float, env: Mapping[str, str], appname: str) -> None:
        self.seconds = seconds
        self._env = env
        self._appname = appname
        self._mark: tuple[object, ...] = ()
        self._moved_at = time.monotonic()
        self.server_working_at = 0.0  # the last time a server session of the load worked
        self.server_note = "the server was not asked yet"

    def expired(self, mark: tuple[object, ...]) -> bool:
        """`mark`: everything that shows progress, now. True when neither it nor the
        server sessions moved for `seconds`."""
        now = time.monotonic()
        if mark != self._mark:
            self._mark, self._moved_at = mark, now
        moved = max(self._moved_at, self.server_working_at)
        return now - moved >= self.seconds

    def stalled(
        self, name: str, feed: ScanFeed, plan: Scheduler, assigned: Mapping[Psql, Job | None]
    ) -> RestoreError | None:
        """Under the load's lock: its failure when nothing has moved for `seconds` - no bytes
        scanned or loaded, no job finished, no server session of the load working (a psql
        that never answers its sync marker, a COPY or an index build waiting for a lock
        nobody releases); else None."""
        running = sorted(plan.running, key=lambda j: j.seq)
        mark = (
            feed.scan_offset,
            plan.copies_done,
            plan.post_done,
            feed.serial_done,
            feed.pre_data_running,
            tuple((job.seq, job.pos) for job in running),
        )
        if not self.expired(mark):
            return None
        waits = waited_for(
            pre_data=feed.pre_data_running,
            jobs=[(s.role, job) for s, job in assigned.items() if job is not None],
            data_session=feed.serial_closed and not feed.serial_done,
            scanning=not feed.scan_done,
        )
        return self.failure(name, waits)

    def failure(self, name: str, waits: list[str]) -> RestoreError:
        """The load's failure, naming `waits` (what it waits for, most telling first)."""
        what = waits[0] if waits else "the load made no progress"
        others = f" (also: {'; '.join(waits[1:3])})" if len(waits) > 1 else ""
        return RestoreError(
            f"restore of {name} stopped: {what} for {self.seconds:.0f} s: "
            f"{self.server_note}{others} - the database holds a partial load; end what "
            "blocks it (see pg_stat_activity and pg_locks on the server), then run the "
            "restore again",
            error=f"{what} for {self.seconds:.0f} s",
        )

    def watch_server(self, stop: threading.Event) -> None:
        """Ask the server, every few seconds, whether a session of the load is working:
        an index build that runs for an hour is progress, and so is a stream of short
        statements (a session's state changed since the last look); a lock wait is not."""
        every = max(0.2, min(10.0, self.seconds / 5))
        conn: psycopg.Connection | None = None
        changes: set[tuple[int, object]] = set()
        while not stop.wait(every):
            try:
                if conn is None:
                    conn = connect_env(self._env, f"{self._appname}-watch")
                found = conn.execute(
                    """SELECT pid, state, coalesce(wait_event_type, ''),
                              coalesce(wait_event, ''), pg_blocking_pids(pid), state_change
                       FROM pg_stat_activity WHERE application_name = %s ORDER BY pid""",
                    (self._appname,),
                ).fetchall()
            except psycopg.Error as exc:
                self.server_note = f"the server did not answer ({one_line(str(exc))})"
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                continue
            rows = [(pid, st, kind, event, blockers) for pid, st, kind, event, blockers, _ in found]
            seen = {(row[0], row[5]) for row in found}
            working = any(
                st == "active" and kind not in _STALLED_WAITS for _, st, kind, _, _ in rows
            )
            if working or seen - changes:
                self.server_working_at = time.monotonic()
            changes = seen
            self.server_note = describe_sessions(rows)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def waited_for(
    *, pre_data: bool, jobs: list[tuple[str, Job]], data_session: bool, scanning: bool
) -> list[str]:
    """What the load waits for, in the words of the watchdog's message: the schema session
    (`pre_data`), the sessions' running `jobs` (role, job), the data session finishing,
    the scanner (`scanning`: said only when nothing else is waited for)."""
    waits = []
    if pre_data:
        waits.append("psql schema session did not finish the schema (pre-data)")
    for role, job in jobs:
        if job.group == COPY:
            waits.append(f"{role} did not finish loading COPY {job.label}")
        else:
            waits.append(f"psql {role} did not answer its sync marker ({job.label})")
    if data_session:
        waits.append("psql data session did not finish the sequence values and data entries")
    if not waits and scanning:
        waits.append("the scanner did not read further into the file")
    return waits


def describe_sessions(rows: list[tuple[int, str, str, str, list[int]]]) -> str:
    """What the load's server sessions do, for the watchdog's message."""
    if not rows:
        return "the load has no session on the server"
    said = []
    for pid, state, kind, event, blockers in rows[:4]:
        if blockers:
            said.append(
                f"server session {pid} waits for a lock ({event or kind}) held by "
                + ", ".join(f"pid {b}" for b in blockers)
            )
        elif state != "active":
            said.append(f"server session {pid} is {state} (waiting for psql)")
        else:
            said.append(f"server session {pid} is active ({kind}: {event})" if kind else "")
    return "; ".join(s for s in said if s) or "its server sessions are idle"
