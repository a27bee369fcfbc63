"""stream_restore against the real cluster with real pg_dump output and real psql."""

from __future__ import annotations

import gzip
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import Cancelled, NotFoundError, VerificationError
from preskool_dr.core.base.events import Event, LogLine, Progress
from preskool_dr.core.base.settings import DatabaseSettings
from preskool_dr.core.restore.loaders.stream import RestoreError, StreamResult, stream_restore
from preskool_dr.core.storage.dumptext import DumpText
from preskool_dr.demo.cluster import Cluster
from tests.support.backups import dump_sql, write_backup
from tests.support.db import APP_ROLE, Database, drop_database, make_database
from tests.support.leaks import PASSWORD
from tests.support.loaders import LockWhenCreated, live_psql_children, wait_until

# ---------------------------------------------------------------- helpers


def sessions_on(cluster: Cluster, dbname: str) -> int:
    with psycopg.connect(cluster.conninfo(), password=PASSWORD, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchone()
        return int(row[0]) if row else 0


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def target(pg_cluster: Cluster) -> Iterator[Database]:
    """An empty database owned by the app role, dropped afterwards."""
    db = make_database(pg_cluster, seeded=False)
    yield db
    drop_database(pg_cluster, db.name)


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch, pg_cluster: Cluster, target: Database
) -> dict[str, str]:
    """libpq settings for the target, as the engine builds them; PGPASSWORD only in os.environ."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    settings = DatabaseSettings(host=pg_cluster.host, port=pg_cluster.port, user=APP_ROLE)
    return database.libpq_env(settings, target.name)


@pytest.fixture(scope="module")
def big_backup(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A backup large enough for several progress updates (a few MiB of SQL)."""
    db = make_database(pg_cluster, scale=0.3)
    try:
        path = tmp_path_factory.mktemp("big") / "preskool-backup-20260101_020000.sql.gz"
        yield write_backup(path, dump_sql(db))
    finally:
        drop_database(pg_cluster, db.name)


def split_after_copy(text: bytes, table: str) -> int:
    """The offset just after the `\\.` that ends `table`'s COPY data."""
    start = text.index(f"\nCOPY public.{table} ".encode())
    return text.index(b"\n\\.\n", start) + 4


# ---------------------------------------------------------------- loading


def test_restore_reproduces_every_table(
    database: Database, target: Database, app_env: dict[str, str], tmp_path: Path
) -> None:
    dump = dump_sql(database)
    backup = write_backup(tmp_path / "b.sql.gz", dump)
    events: list[Event] = []

    result = stream_restore(backup, app_env, on_event=events.append)

    assert isinstance(result, StreamResult)
    expected = database.row_counts()
    assert target.row_counts() == expected
    assert sorted(result.tables_loaded) == sorted(f"public.{t}" for t in expected)
    assert result.sql_bytes == len(dump)
    assert result.compressed_bytes == backup.stat().st_size
    logs = [e.text for e in events if isinstance(e, LogLine)]
    assert f"COPY {expected['students']}" in logs  # psql's command tags reach the operator
    assert "ALTER TABLE" in logs
    assert not any(PASSWORD in line for line in logs)
    final = [e for e in events if isinstance(e, Progress)][-1]
    assert final.done == final.total == result.compressed_bytes
    assert final.items_done == len(expected)


def test_multi_member_gzip_loads_like_gunzip(
    database: Database, target: Database, app_env: dict[str, str], tmp_path: Path
) -> None:
    dump = dump_sql(database)
    cut = split_after_copy(dump, "students")
    backup = tmp_path / "two-members.sql.gz"
    backup.write_bytes(gzip.compress(dump[:cut]) + gzip.compress(dump[cut:]))

    stream_restore(backup, app_env)

    assert target.row_counts() == database.row_counts()


@pytest.mark.xdist_group("scale_0_3")  # builds (or reuses) the worker's scale-0.3 template
def test_progress_rises_to_the_total_and_names_tables(
    big_backup: Path, target: Database, app_env: dict[str, str]
) -> None:
    progress: list[Progress] = []

    def slow_watcher(event: Event) -> None:
        if isinstance(event, Progress):
            progress.append(event)
            # A slow listener: every write then passes the 0.2 s throttle, so the number of
            # updates does not depend on how fast this machine happens to be. The first
            # event (0 bytes) too: else a fast machine loads the first table within 0.2 s
            # of it, unseen (a CI failure: attendance never named).
            if event.done < big_backup.stat().st_size - 1:
                time.sleep(0.21)

    stream_restore(big_backup, app_env, on_event=slow_watcher, step_id="restore")

    size = big_backup.stat().st_size
    dones = [p.done for p in progress]
    assert dones == sorted(dones)
    assert dones[0] == 0 and dones[-1] == size
    assert dones.count(size) == 1  # 100% only once psql has finished
    assert len([d for d in dones if 0 < d < size - 1]) >= 3
    assert {p.total for p in progress} == {size}
    assert {p.step_id for p in progress} == {"restore"}
    assert "public.attendance" in {p.current for p in progress}
    items = [p.items_done for p in progress]
    assert items == sorted(items) and items[-1] == 18


# ---------------------------------------------------------------- failures


def test_sql_error_half_way_names_line_and_statement(
    database: Database, target: Database, app_env: dict[str, str], tmp_path: Path
) -> None:
    dump = dump_sql(database)
    cut = split_after_copy(dump, "grades")
    bad = b"INSERT INTO public.students (id)\n    VALUES ('not a number');\n"
    backup = write_backup(tmp_path / "bad.sql.gz", dump[:cut] + bad + dump[cut:])
    line = dump[:cut].count(b"\n") + 2  # psql names the line the statement ends on

    with pytest.raises(RestoreError) as caught:
        stream_restore(backup, app_env)

    error = caught.value
    assert error.line == line
    assert error.statement == "INSERT INTO public.students (id) VALUES ('not a number');"
    message = str(error)
    assert "\n" not in message
    assert f"input line {line:,}" in message
    assert "ERROR:" in message and '"not a number"' in message
    assert error.statement in message
    assert live_psql_children(os.getpid()) == []
    counts = target.row_counts()
    assert counts["grades"] == database.row_counts()["grades"]  # loaded before the error
    assert counts["students"] == 0  # after it: never loaded


def test_bad_copy_row_names_the_copy_and_the_row(
    database: Database, target: Database, app_env: dict[str, str], tmp_path: Path
) -> None:
    dump = dump_sql(database)
    end = split_after_copy(dump, "guardians") - len(b"\\.\n")
    backup = write_backup(
        tmp_path / "bad-row.sql.gz", dump[:end] + b"oops\tnot a row\n" + dump[end:]
    )
    row_line = dump[:end].count(b"\n") + 1

    with pytest.raises(RestoreError) as caught:
        stream_restore(backup, app_env)

    message = str(caught.value)
    assert caught.value.statement.startswith("COPY public.guardians (")
    assert f"data row at input line {row_line}: oops not a row" in message
    assert "COPY guardians, line" in message  # psql's CONTEXT
    assert target.row_counts()["guardians"] == 0


def test_truncated_gzip_stops_without_committing_the_open_copy(
    database: Database, target: Database, app_env: dict[str, str], tmp_path: Path
) -> None:
    dump = dump_sql(database)
    header = dump.index(b"\n", dump.index(b"\nCOPY public.attendance ") + 1) + 1
    middle = dump.index(b"\n", (header + split_after_copy(dump, "attendance")) // 2) + 1
    # Rows repeated past the pipe's 1 MiB: psql is surely inside this COPY when the data ends
    # (duplicate ids load; the primary key would only be added after the data).
    rows = dump[header:middle] * (4 * 2**20 // (middle - header) + 1)
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    # Everything decodes up to there, but the gzip end marker never comes.
    data = packer.compress(dump[:middle] + rows) + packer.flush(zlib.Z_FULL_FLUSH)
    backup = tmp_path / "truncated.sql.gz"
    backup.write_bytes(data)

    with pytest.raises(VerificationError, match="ends in the middle of its gzip data"):
        stream_restore(backup, app_env)

    assert live_psql_children(os.getpid()) == []
    counts = target.row_counts()
    assert counts["academic_years"] == database.row_counts()["academic_years"]
    # psql was stopped, not given EOF: the half-sent COPY was rolled back, not committed.
    assert counts["attendance"] == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda gz1, gz2: gz1 + b"XX" + gz2[2:], "is corrupt at compressed byte"),
        (lambda gz1, gz2: b"", "is empty"),
        (lambda gz1, gz2: b"-- plain SQL, never gzipped\nSELECT 1;\n", "is not gzip data"),
    ],
    ids=["bad second member", "empty", "not gzip"],
)
def test_corrupt_gzip_is_a_verification_error(
    database: Database,
    target: Database,
    app_env: dict[str, str],
    tmp_path: Path,
    damage: Callable[[bytes, bytes], bytes],
    message: str,
) -> None:
    dump = dump_sql(database)
    cut = split_after_copy(dump, "academic_years")
    backup = tmp_path / "damaged.sql.gz"
    backup.write_bytes(damage(gzip.compress(dump[:cut]), gzip.compress(dump[cut:])))

    with pytest.raises(VerificationError, match=message):
        stream_restore(backup, app_env)

    assert live_psql_children(os.getpid()) == []
    wait_until(lambda: sessions_on(target.cluster, target.name) == 0, "psql's session to end")


def test_wrong_password_reports_psql_not_the_pipe(
    database: Database,
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    backup = write_backup(tmp_path / "b.sql.gz", dump_sql(database))
    monkeypatch.setenv("PGPASSWORD", "wrong-MARKER-5d1e")

    with pytest.raises(RestoreError) as caught:
        stream_restore(backup, app_env)

    message = str(caught.value)
    assert "psql could not connect" in message and "password authentication failed" in message
    assert "wrong-MARKER-5d1e" not in message and "Broken pipe" not in message


def test_missing_backup_is_not_found(app_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        stream_restore(tmp_path / "nope.sql.gz", app_env)


def test_non_utf8_psql_output_does_not_crash(
    database: Database, target: Database, app_env: dict[str, str], tmp_path: Path
) -> None:
    dump = dump_sql(database)
    latin1 = b"SET client_encoding = 'LATIN1';\nSELECT 'caf\xe9' AS word;\n"
    events: list[Event] = []
    stream_restore(
        write_backup(tmp_path / "ok.sql.gz", dump + latin1), app_env, on_event=events.append
    )
    assert " caf\ufffd" in [e.text for e in events if isinstance(e, LogLine)]

    bad = write_backup(tmp_path / "bad.sql.gz", latin1 + b"SELECT 'caf\xe9'::int;\n")
    with pytest.raises(RestoreError, match="caf\ufffd"):
        stream_restore(bad, app_env)


# ---------------------------------------------------------------- cancel


@pytest.mark.xdist_group("scale_0_3")  # builds (or reuses) the worker's scale-0.3 template
def test_cancel_mid_stream_stops_psql(
    big_backup: Path, target: Database, app_env: dict[str, str]
) -> None:
    cancel = threading.Event()
    seen: list[Progress] = []

    def on_event(event: Event) -> None:
        if isinstance(event, Progress) and event.done > 0:
            seen.append(event)
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled"):
        stream_restore(big_backup, app_env, on_event=on_event, cancel=cancel)

    assert seen and seen[0].done < big_backup.stat().st_size
    assert live_psql_children(os.getpid()) == []
    wait_until(lambda: sessions_on(target.cluster, target.name) == 0, "psql's session to end")


@pytest.mark.xdist_group("scale_0_3")  # builds (or reuses) the worker's scale-0.3 template
def test_cancel_while_psql_is_blocked(
    big_backup: Path, target: Database, app_env: dict[str, str]
) -> None:
    """psql stuck on a lock mid-COPY fills the pipe and blocks our write: cancel still works."""
    cancel = threading.Event()
    with LockWhenCreated(target.cluster, target.name, "enrollments") as blocker:
        blocked = threading.Thread(
            target=lambda: (blocker.wait_for_waiter(), cancel.set()), daemon=True
        )
        blocked.start()
        with pytest.raises(Cancelled):
            stream_restore(big_backup, app_env, cancel=cancel)
        blocked.join()
    assert live_psql_children(os.getpid()) == []


# ---------------------------------------------------------------- COPY tracking


def test_copy_tracking_survives_any_chunking() -> None:
    text = (
        b"COPY public.first (a) FROM stdin;\n1\n\\.\n"
        b"SET x = 1;\n"
        b'COPY public."Odd ""Name""" (a, b) FROM stdin;\n'
        b"COPY public.fake (a) FROM stdin;\n"  # a data row that looks like a header
        b"\\\\.\n"  # a row holding `\.`, escaped as COPY writes it
        b"\\.\n"
        b"CREATE FUNCTION f() RETURNS int AS $$\nCOPY x TO stdout\n$$ LANGUAGE sql;\n"
        b"COPY public.empty (a) FROM stdin;\n\\.\n"
    )
    rng = random.Random(7)
    for _ in range(200):
        tracker = DumpText()
        pos = 0
        while pos < len(text):
            step = rng.choice([1, 2, 3, 5, 8, 13, 64])
            tracker.feed(text[pos : pos + step])
            pos += step
        assert tracker.newlines == text.count(b"\n")
        assert [(c.table, c.start_line, c.end_line) for c in tracker.copies] == [
            ("public.first", 1, 3),
            ('public."Odd ""Name"""', 5, 8),
            ("public.empty", 12, 13),
        ]
        assert tracker.current is None


def test_unusual_table_names_and_rows_round_trip(
    target: Database, app_env: dict[str, str], pg_cluster: Cluster, tmp_path: Path
) -> None:
    source = make_database(pg_cluster, seeded=False)
    try:
        owner = source.cluster.conninfo(source.name, user=APP_ROLE)
        with psycopg.connect(owner, password=PASSWORD, autocommit=True) as conn:
            conn.execute('CREATE TABLE "Odd ""Name""" (note text)')
            conn.execute(
                'INSERT INTO "Odd ""Name""" VALUES (%s), (%s), (%s)',
                ("COPY public.x (a) FROM stdin;", "\\.", "line\nbreak"),
            )
        backup = write_backup(tmp_path / "odd.sql.gz", dump_sql(source))
        result = stream_restore(backup, app_env)
    finally:
        drop_database(pg_cluster, source.name)
    assert result.tables_loaded == ('public."Odd ""Name"""',)
    with target.connect() as conn:
        rows = conn.execute('SELECT note FROM "Odd ""Name""" ORDER BY 1').fetchall()
    assert [r[0] for r in rows] == sorted(["COPY public.x (a) FROM stdin;", "\\.", "line\nbreak"])
