"""The plain-format parallel restore ends where the serial one ends: same schema (pg_dump
--schema-only), same rows (per-relation checksums), same sequences and large objects, on the
PreSkool schema, pgbench, and a schema full of the awkward parts (triggers, functions,
domains, partitions, inheritance, FK cycles, quoted names, tricky COPY data). And it fails
like the serial one: first error stops everything, nothing left running."""

from __future__ import annotations

import gzip
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from preskool_dr.core.base.errors import Cancelled, VerificationError
from preskool_dr.core.base.events import Event, LogLine, Progress
from preskool_dr.core.restore.loaders.parallel import (
    parallel_restore,
    resolve_jobs,
    unsupported_reason,
)
from preskool_dr.core.restore.loaders.stream import RestoreError, stream_restore
from tests.support.backups import dump_gz
from tests.support.db import Database, as_app, libpq
from tests.support.leaks import assert_no_secrets
from tests.support.loaders import (
    AWKWARD_SCHEMA,
    assert_same,
    fingerprint,
    psql_children,
    schema_dump,
    server_sessions,
    wait_until,
)

# PGPASSWORD set for the loaders
pytestmark = pytest.mark.usefixtures("pgpassword")


def restore_both(
    backup: Path, serial: Database, parallel: Database, jobs: int, **options: int
) -> list[Event]:
    stream_restore(backup, libpq(serial))
    events: list[Event] = []
    parallel_restore(backup, libpq(parallel), jobs=jobs, on_event=events.append, **options)
    return events


def parts_logged(events: list[Event], table: str) -> list[str]:
    """The log lines of a table's COPY parts ("COPY t: part 2, ...")."""
    return [
        e.text
        for e in events
        if isinstance(e, LogLine) and e.text.startswith(f"COPY {table}: part ")
    ]


# ---------------------------------------------------------------- equal to serial


def test_preskool_schema_parallel_equals_serial(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    backup = dump_gz(database, tmp_path / "preskool.sql.gz")
    serial, parallel = scratch(), scratch()
    events = restore_both(backup, serial, parallel, jobs=2)
    assert_same(serial, parallel)
    assert fingerprint(parallel) == fingerprint(database)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == backup.stat().st_size
    assert progress[-1].items_done == 18  # every PreSkool table loaded
    assert all(e.done <= e.total for e in progress if e.total)
    dones = [e.done for e in progress]
    assert dones == sorted(dones)  # never backwards
    logged = [e.text for e in events if isinstance(e, LogLine)]
    assert any(line.startswith("COPY public.attendance: ") for line in logged)
    assert not parts_logged(events, "public.attendance")  # smaller than a part
    assert_no_secrets(*logged, *(str(e) for e in progress))


def test_tables_split_into_parts_equal_serial(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """Every table bigger than 16 KiB loads in parts over three sessions: the same end state,
    every table counted once, progress never going back."""
    backup = dump_gz(database, tmp_path / "preskool.sql.gz")
    serial, parallel = scratch(), scratch()
    events = restore_both(backup, serial, parallel, jobs=3, split_bytes=16384)
    assert_same(serial, parallel)
    assert len(parts_logged(events, "public.attendance")) > 3
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].items_done == 18
    dones = [e.done for e in progress]
    assert dones == sorted(dones)


@pytest.mark.slow
def test_awkward_schema_in_parts_equals_serial(
    scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """Partitions, inheritance and the rows that look like dump syntax, cut into parts."""
    source = scratch()
    with as_app(source) as conn:
        conn.execute(AWKWARD_SCHEMA)
    backup = dump_gz(source, tmp_path / "awkward.sql.gz")
    serial, parallel = scratch(), scratch()
    events = restore_both(backup, serial, parallel, jobs=2, split_bytes=4096)
    assert_same(serial, parallel)
    assert fingerprint(parallel) == fingerprint(source)
    assert parts_logged(events, "public.orders_2026")


@pytest.mark.parametrize(
    ("split", "parts"),
    [
        (10, 1000),  # every row its own part
        (4999, 2),  # the row end at byte 4,999 ends part 1
        (5000, 2),
        (5001, 2),  # the next row end, at 5,009
        (9999, 1),  # the cut falls on the terminator: no empty second part
        (10000, 1),
        (10001, 1),
    ],
)
def test_part_boundaries(
    split: int, parts: int, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """1,000 rows of 10 bytes (9 characters and the newline): 10,000 bytes of COPY data. A
    part ends at the first row end at or after `split` bytes; the session loading it and the
    scanner cutting the next one must agree on it, also where it meets the block's end."""
    source = scratch()
    with as_app(source) as conn:
        conn.execute("CREATE TABLE fixed (v text NOT NULL)")
        conn.execute(
            "INSERT INTO fixed SELECT lpad(i::text, 9, '0') FROM generate_series(1, 1000) i"
        )
    backup = dump_gz(source, tmp_path / "fixed.sql.gz")
    target = scratch()
    events: list[Event] = []
    result = parallel_restore(
        backup, libpq(target), jobs=2, on_event=events.append, split_bytes=split
    )
    assert result.tables_loaded == ("public.fixed",)
    assert len(parts_logged(events, "public.fixed")) == (parts if parts > 1 else 0)
    assert fingerprint(target) == fingerprint(source)


@pytest.mark.slow
def test_pgbench_parallel_equals_serial(scratch: Callable[[], Database], tmp_path: Path) -> None:
    source = scratch()
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", "1", "--foreign-keys"],
        env={**os.environ, **libpq(source)},
        capture_output=True,
        check=True,
    )
    backup = dump_gz(source, tmp_path / "pgbench.sql.gz")
    serial, parallel = scratch(), scratch()
    restore_both(backup, serial, parallel, jobs=3)
    assert_same(serial, parallel)
    assert fingerprint(parallel)["public.pgbench_accounts"][0] == 100_000  # type: ignore[index]


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.slow
def test_awkward_schema_parallel_equals_serial(
    jobs: int, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    source = scratch()
    with as_app(source) as conn:
        conn.execute(AWKWARD_SCHEMA)
    backup = dump_gz(source, tmp_path / "awkward.sql.gz")
    serial, parallel = scratch(), scratch()
    restore_both(backup, serial, parallel, jobs=jobs)
    assert_same(serial, parallel)
    assert fingerprint(parallel) == fingerprint(source)
    with parallel.connect() as conn:
        # the audit trigger did not fire during the load; the odd rows came back as they were
        assert conn.execute("SELECT count(*) FROM ONLY audit_events").fetchone() == (300,)
        rows = [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY ctid")]
        assert rows[:5] == [
            "--",
            "-- Name: fake; Type: TABLE DATA; Schema: public; Owner: x",
            "--",
            "COPY public.fake (a) FROM stdin;",
            "\\.",
        ]


def test_schema_only_dump_loads(scratch: Callable[[], Database], tmp_path: Path) -> None:
    source = scratch()
    with as_app(source) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY); CREATE INDEX t_idx ON t (id)")
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-password"],
        env={**os.environ, **libpq(source)},
        capture_output=True,
        check=True,
    ).stdout
    backup = tmp_path / "schema.sql.gz"
    backup.write_bytes(gzip.compress(out))
    target = scratch()
    result = parallel_restore(backup, libpq(target), jobs=2)
    assert result.tables_loaded == ()
    assert schema_dump(target) == schema_dump(source)


# ---------------------------------------------------------------- failing like the serial load


def tampered(backup: Path, old: bytes, new: bytes, dest: Path) -> Path:
    text = gzip.decompress(backup.read_bytes())
    assert old in text
    dest.write_bytes(gzip.compress(text.replace(old, new, 1)))
    return dest


def test_bad_row_stops_every_session(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    good = dump_gz(database, tmp_path / "good.sql.gz")
    text = gzip.decompress(good.read_bytes())
    start = text.index(b"COPY public.students ")
    row = text.index(b"\n", start) + 1  # the first data row: its id becomes "xx"
    bad = tmp_path / "bad.sql.gz"
    bad.write_bytes(gzip.compress(text[:row] + b"xx" + text[text.index(b"\t", row) :]))
    target = scratch()
    with pytest.raises(RestoreError) as caught:
        parallel_restore(bad, libpq(target), jobs=2)
    message = str(caught.value)
    assert "public.students" in message
    assert "invalid input syntax" in message
    assert "partial load" in message
    assert psql_children() == []
    wait_until(lambda: server_sessions(target) == 0, "no session of the load left")
    assert_no_secrets(message)


def test_bad_row_in_a_later_part_stops_every_session(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    good = dump_gz(database, tmp_path / "good.sql.gz")
    text = gzip.decompress(good.read_bytes())
    start = text.index(b"COPY public.attendance ")
    end = text.index(b"\n\\.\n", start)
    row = text.rindex(b"\n", start, end - 1) + 1  # the last row: far beyond the first part
    bad = tmp_path / "bad.sql.gz"
    bad.write_bytes(gzip.compress(text[:row] + b"xx" + text[text.index(b"\t", row) :]))
    target = scratch()
    with pytest.raises(RestoreError) as caught:
        parallel_restore(bad, libpq(target), jobs=2, split_bytes=16384)
    assert "public.attendance" in str(caught.value)
    assert "invalid input syntax" in str(caught.value)
    assert psql_children() == []
    wait_until(lambda: server_sessions(target) == 0, "no session of the load left")


def test_duplicate_key_fails_in_post_data(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    good = dump_gz(database, tmp_path / "good.sql.gz")
    text = gzip.decompress(good.read_bytes())
    start = text.index(b"COPY public.roles ")
    first = text.index(b"\n", start) + 1
    line = text[first : text.index(b"\n", first) + 1]
    bad = tampered(good, line, line + line, tmp_path / "dup.sql.gz")  # the row twice
    target = scratch()
    with pytest.raises(RestoreError) as caught:
        parallel_restore(bad, libpq(target), jobs=2)
    assert "roles_pkey" in str(caught.value) or "roles_name_key" in str(caught.value)
    assert "is duplicated" in caught.value.error
    assert psql_children() == []


def test_schema_error_names_the_file_line(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    good = dump_gz(database, tmp_path / "good.sql.gz")
    bad = tampered(
        good,
        b"CREATE TABLE public.students (",
        b"CREATE TABLE public.students (nickname no_such_type,",
        tmp_path / "syntax.sql.gz",
    )
    serial, target = scratch(), scratch()
    with pytest.raises(RestoreError) as serial_error:
        stream_restore(bad, libpq(serial))
    with pytest.raises(RestoreError) as caught:
        parallel_restore(bad, libpq(target), jobs=2)
    line = serial_error.value.line
    assert line is not None
    assert caught.value.line == line  # the pre-data session reads the file's own lines
    assert f"input line {line:,} of syntax.sql.gz (schema)" in str(caught.value)
    assert 'type "no_such_type" does not exist' in str(caught.value)
    assert psql_children() == []


def test_corrupt_and_truncated_gzip(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    good = dump_gz(database, tmp_path / "good.sql.gz").read_bytes()
    truncated = tmp_path / "truncated.sql.gz"
    truncated.write_bytes(good[: len(good) * 2 // 3])
    corrupt = tmp_path / "corrupt.sql.gz"
    middle = len(good) // 2
    corrupt.write_bytes(
        good[:middle] + bytes(b ^ 0x5A for b in good[middle : middle + 64]) + good[middle + 64 :]
    )
    empty = tmp_path / "empty.sql.gz"
    empty.write_bytes(b"")
    for path, words in ((truncated, "truncated"), (corrupt, "corrupt"), (empty, "empty")):
        for split in (0, 16384):  # whole blocks, and parts starting past the damage
            target = scratch()
            with pytest.raises(VerificationError, match=words):
                parallel_restore(path, libpq(target), jobs=2, split_bytes=split)
            assert psql_children() == []


def test_wrong_password(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = dump_gz(database, tmp_path / "b.sql.gz")
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(
        RestoreError, match=r"psql could not connect.*password authentication failed"
    ):
        parallel_restore(backup, libpq(database), jobs=2)
    assert psql_children() == []


def test_cancel_stops_everything(
    database: Database, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    backup = dump_gz(database, tmp_path / "b.sql.gz")
    target = scratch()
    cancel = threading.Event()

    def on_event(event: Event) -> None:
        # at the load's first progress report, with its sessions up: waiting for the first
        # table raced the end of this small load (its only such report can be the last)
        if isinstance(event, Progress):
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled"):
        parallel_restore(backup, libpq(target), jobs=2, on_event=on_event, cancel=cancel)
    assert psql_children() == []
    # the load's sessions were ended and waited for; the short session that ended them
    # (named like them) may still be leaving the server's list a moment after it closed
    wait_until(lambda: server_sessions(target) == 0, "no session of the load left")


def test_unsupported_reason(database: Database, tmp_path: Path) -> None:
    assert unsupported_reason(dump_gz(database, tmp_path / "b.sql.gz")) is None
    other = tmp_path / "hand.sql.gz"
    other.write_bytes(gzip.compress(b"CREATE TABLE t (a int);\n"))
    assert "pg_dump" in (unsupported_reason(other) or "")
    cluster_dump = tmp_path / "all.sql.gz"
    cluster_dump.write_bytes(
        gzip.compress(b"--\n-- PostgreSQL database dump\n--\n\n\\connect other\n")
    )
    # no fallback to the serial load for \connect: the sessions refuse it (test_hostile_backups)
    assert unsupported_reason(cluster_dump) is None
    not_gzip = tmp_path / "plain.sql.gz"
    not_gzip.write_bytes(b"-- not compressed\n")
    assert unsupported_reason(not_gzip) is not None


def test_resolve_jobs() -> None:
    assert resolve_jobs(3) == 3
    assert resolve_jobs(0) == len(os.sched_getaffinity(0))
