"""The parallel loader's watchdog without a server: when it fires (nothing moved, the
server's sessions did not work) and how its message names what the load waited for.
tests/faults/test_hostile_sql.py has it fire on a real lock wait."""

from __future__ import annotations

import time

from preskool_dr.core.restore.loaders.parallel.jobs import COPY, Job
from preskool_dr.core.restore.loaders.parallel.watchdog import (
    Watchdog,
    describe_sessions,
    waited_for,
)


def job(label: str, group: str) -> Job:
    return Job(seq=1, label=label, group=group, stage=1, settings=b"")


def test_fires_only_when_nothing_moved_for_its_seconds() -> None:
    watchdog = Watchdog(0.5, {}, "app")
    assert not watchdog.expired((1, 0))
    time.sleep(0.55)
    assert watchdog.expired((1, 0))
    assert not watchdog.expired((2, 0))  # the load moved: the wait starts over
    time.sleep(0.55)
    watchdog.server_working_at = time.monotonic()  # a server session of the load works
    assert not watchdog.expired((2, 0))


def test_says_what_the_load_waits_for() -> None:
    jobs = [("session 1", job("public.big", COPY)), ("session 2", job("INDEX i", "build"))]
    waits = waited_for(pre_data=False, jobs=jobs, data_session=True, scanning=True)
    assert waits == [
        "session 1 did not finish loading COPY public.big",
        "psql session 2 did not answer its sync marker (INDEX i)",
        "psql data session did not finish the sequence values and data entries",
    ]
    assert waited_for(pre_data=True, jobs=[], data_session=False, scanning=True) == [
        "psql schema session did not finish the schema (pre-data)"
    ]
    assert waited_for(pre_data=False, jobs=[], data_session=False, scanning=True) == [
        "the scanner did not read further into the file"
    ]
    watchdog = Watchdog(300, {}, "app")
    watchdog.server_note = "server session 7 waits for a lock (advisory) held by pid 9"
    failure = watchdog.failure("b.sql.gz", waits)
    assert str(failure).startswith(
        "restore of b.sql.gz stopped: session 1 did not finish loading COPY public.big for "
        "300 s: server session 7 waits for a lock (advisory) held by pid 9 (also: psql "
        "session 2 did not answer its sync marker (INDEX i); psql data session"
    )
    assert failure.error == "session 1 did not finish loading COPY public.big for 300 s"
    assert watchdog.failure("b.sql.gz", []).error == "the load made no progress for 300 s"


def test_describes_the_server_sessions() -> None:
    assert describe_sessions([]) == "the load has no session on the server"
    rows = [
        (11, "active", "Lock", "relation", [12, 13]),
        (12, "idle", "Client", "ClientRead", []),
        (13, "active", "IO", "DataFileRead", []),
        (14, "active", "", "", []),
    ]
    assert describe_sessions(rows) == (
        "server session 11 waits for a lock (relation) held by pid 12, pid 13; "
        "server session 12 is idle (waiting for psql); "
        "server session 13 is active (IO: DataFileRead)"
    )
    assert describe_sessions([(14, "active", "", "", [])]) == "its server sessions are idle"
