"""Hostile SQL for the parallel plain loader: TOC-shaped text in strings, odd table names, a stuck session.

Guarantee: the parallel loader cuts a plain backup into jobs only where psql itself stands
between two statements (core/storage/sql_lexer.py follows strings, E-strings, dollar quotes,
quoted names and nested comments the way psql does) and where a line is exactly one of
pg_dump's TOC headers; COPY headers are parsed exactly, so a table name holding a newline
never makes its rows read as SQL. A comment string holding lines shaped like TOC headers
and `DROP TABLE public.victim;` therefore stays a string, as in the serial load: the result
equals the serial load and the victim table survives. Text the lexer cannot classify with
certainty (a COPY it did not recognise, a psql variable, a backslash command inside a
statement) sends the whole file through the serial stream when it shows before anything is
loaded, and stops the load with a message naming the line and `restore.method: serial`
when it shows later. SQL planted among pg_dump's opening settings, which every session
replays, is not replayed: such a file loads serially and the statement runs once. Every
wait has a watchdog: a session whose sync marker never comes
back (its server session waits for a lock nobody releases) fails step 6 after a bound,
naming what it waited for and what the server session waits for, instead of hanging.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from preskool_dr.core.base.events import Event, Notice
from preskool_dr.core.restore.loaders.parallel import parallel_restore
from preskool_dr.core.restore.loaders.stream import RestoreError
from preskool_dr.core.storage.dumptext import MetaCommandError
from tests.support.backups import backup_sql, dump_gz, insert_before, rewrite_backup
from tests.support.db import APP_ROLE, Database, libpq
from tests.support.leaks import PASSWORD
from tests.support.loaders import assert_same, psql_children, server_sessions, wait_until
from tests.support.runbook import write_runbook
from tests.support.site import Site

TOC_DATA = "--\n-- Name: x; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
TOC_INDEX = "--\n-- Name: zz_fake; Type: INDEX; Schema: public; Owner: -\n--\n\n"
DROP_VICTIM = "DROP TABLE public.victim;\n"
EVIL_TABLE = 'public."evil\nname"'
END_OF_DUMP = b"--\n-- PostgreSQL database dump complete"

# What each attack plants in the source database (run as the app role, which owns it).
ATTACKS = {
    # pre-data: a multi-line table comment that reads like the start of the data section
    "toc-in-table-comment": [
        "CREATE TABLE zz_notes (body text)",
        "INSERT INTO zz_notes VALUES ('kept')",
        "COMMENT ON TABLE zz_notes IS "
        + psycopg.sql.quote("line1\n" + TOC_DATA + DROP_VICTIM + "SELECT 'x"),
    ],
    # post-data: an index comment whose first half alone would leave a string open, which
    # swallowed the session's sync marker (the load waited forever)
    "toc-in-index-comment": [
        "CREATE TABLE zz_items (n integer)",
        "INSERT INTO zz_items SELECT generate_series(1, 50)",
        "CREATE INDEX zz_items_n ON zz_items (n)",
        "COMMENT ON INDEX zz_items_n IS "
        + psycopg.sql.quote("half\n" + TOC_INDEX + DROP_VICTIM + "-- it's open"),
    ],
    # data: a legal table name with a newline, whose rows read like a post-data entry
    "newline-table-name": [
        f"CREATE TABLE {EVIL_TABLE} (line text)",
        f"INSERT INTO {EVIL_TABLE} VALUES "
        + ", ".join(
            f"({psycopg.sql.quote(row)})"
            for row in [*TOC_INDEX.rstrip("\n").split("\n"), "", DROP_VICTIM.rstrip("\n")]
        ),
    ],
}


def as_app(db: Database) -> psycopg.Connection:
    return psycopg.connect(
        db.cluster.conninfo(db.name, user=APP_ROLE), password=PASSWORD, autocommit=True
    )


def plant(db: Database, *attacks: str) -> None:
    """The victim table, then the attacks' objects."""
    with as_app(db) as conn:
        conn.execute("CREATE TABLE victim (id integer PRIMARY KEY)")
        conn.execute("INSERT INTO victim VALUES (1), (2)")
        for name in attacks:
            for statement in ATTACKS[name]:
                conn.execute(statement.encode())


def victim_rows(db: Database) -> int | None:
    """Rows of public.victim, or None when the table is gone."""
    with db.connect() as conn:
        if conn.execute("SELECT to_regclass('public.victim')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT count(*) FROM public.victim").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(autouse=True)
def password_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_through_the_parallel_loader_equals_serial(
    attack: str, scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """Each attack, restored by `parallel_restore` (2 sessions) and by the serial stream:
    the same schema and rows, public.victim still there, no psql left running."""
    source = scratch()
    plant(source, attack)
    backup = dump_gz(source, tmp_path / "hostile.sql.gz")
    serial, parallel = scratch(), scratch()
    from preskool_dr.core.restore.loaders.stream import stream_restore

    stream_restore(backup, libpq(serial))
    parallel_restore(backup, libpq(parallel), jobs=2, watchdog=60)
    assert victim_rows(parallel) == 2
    assert_same(serial, parallel)
    assert psql_children() == []


def test_all_attacks_through_the_cli(site: Site) -> None:
    """`preskool-dr restore` with restore.method: parallel on a backup holding all three
    attacks: it succeeds, public.victim is there, the comments and the odd table's rows
    are the source's, byte for byte."""
    plant(site.db, *ATTACKS)
    write_runbook(
        site.root,
        app=site.app,
        restore={"method": "parallel", "jobs": 2},
        backups={"companion": False},  # the plain loader, not pg_restore, is under test
    )
    backup = site.backup()
    query = (
        "SELECT obj_description('public.zz_notes'::regclass, 'pg_class'),"
        " obj_description('public.zz_items_n'::regclass, 'pg_class'),"
        f" (SELECT string_agg(line, '|' ORDER BY line) FROM {EVIL_TABLE})"
    )
    with site.db.connect() as conn:
        before = conn.execute(query).fetchone()
    result = site.restore(backup.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 parallel sessions" in result.stdout
    assert victim_rows(site.db) == 2
    with site.db.connect() as conn:
        assert conn.execute(query).fetchone() == before
    site.assert_no_leak(result)


def test_unclassifiable_pre_data_goes_serial(
    scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """A COPY the scanner does not recognise (lower case, in the pre-data): its rows would
    read as SQL to a splitter. The loader says so and hands the whole file to the serial
    stream, which follows only pg_dump's own COPY headers: its `\\.` line is then a psql
    command outside COPY data, refused before psql reads it. The rows never run as SQL."""
    source = scratch()
    plant(source)
    backup = dump_gz(source, tmp_path / "b.sql.gz")
    extra = b"CREATE TABLE public.zz_copy (line text);\ncopy public.zz_copy (line) from stdin;\n"
    extra += DROP_VICTIM.encode() + TOC_INDEX.encode().replace(b"\n", b" ") + b"\n\\.\n\n"
    rewrite_backup(backup, insert_before(backup_sql(backup), b"--\n-- Name: victim;", extra))
    target = scratch()
    plant(target)  # a victim in the target too: the rows must not drop it
    events: list[Event] = []
    with pytest.raises(MetaCommandError) as refused:
        parallel_restore(backup, libpq(target), jobs=2, on_event=events.append, watchdog=60)
    said = [e.text for e in events if isinstance(e, Notice)]
    assert any("loaded serially" in text and "COPY" in text for text in said), said
    lines = gzip.decompress(backup.read_bytes()).split(b"\n")
    assert lines[refused.value.finding.line - 1] == b"\\."
    assert victim_rows(target) == 2
    assert psql_children() == []


def test_unclassifiable_post_data_stops_the_load(
    scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """The same unrecognised COPY in the post-data, after tables were loaded: the load
    stops, naming the line and restore.method: serial; its rows never run as SQL."""
    source = scratch()
    plant(source, "toc-in-index-comment")
    backup = dump_gz(source, tmp_path / "b.sql.gz")
    extra = b"--\n-- Name: zz_copy; Type: INDEX; Schema: public; Owner: -\n--\n\n"
    extra += b"copy public.zz_items (n) from stdin;\n7\n\\.\n" + DROP_VICTIM.encode() + b"\n"
    rewrite_backup(backup, insert_before(backup_sql(backup), END_OF_DUMP, extra))
    target = scratch()
    with pytest.raises(RestoreError) as failed:
        parallel_restore(backup, libpq(target), jobs=2, watchdog=60)
    message = str(failed.value)
    assert "cannot split it with certainty" in message and "restore.method: serial" in message
    lines = gzip.decompress(backup.read_bytes()).split(b"\n")
    assert lines[failed.value.line - 1] == b"copy public.zz_items (n) from stdin;"
    assert victim_rows(target) is not None  # a partial load, but never dropped
    assert psql_children() == []


@pytest.mark.slow
def test_stuck_session_fails_on_the_watchdog(
    scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """A post-data entry whose server session waits for an advisory lock another
    connection holds: its psql never answers the sync marker. With a 2 s watchdog the step
    fails saying which session did not answer and what its server session waits for;
    nothing is left running."""
    source = scratch()
    plant(source, "toc-in-index-comment")
    backup = dump_gz(source, tmp_path / "b.sql.gz")
    extra = b"--\n-- Name: zz_wait; Type: INDEX; Schema: public; Owner: -\n--\n\n"
    extra += b"SELECT pg_advisory_lock(4242);\n\n"
    rewrite_backup(backup, insert_before(backup_sql(backup), END_OF_DUMP, extra))
    target = scratch()
    holder = target.connect()
    holder.execute("SELECT pg_advisory_lock(4242)")
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            parallel_restore(backup, libpq(target), jobs=2, watchdog=2)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # a thread, so that a broken watchdog fails the case instead of hanging the suite
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(120)
    holder.close()
    thread.join(60)
    assert outcome, "the load did not end while the lock was held"
    error = outcome[0]
    assert isinstance(error, RestoreError), error
    message = str(error)
    assert "did not answer its sync marker (INDEX zz_wait) for 2 s" in message
    assert "waits for a lock (advisory) held by pid" in message
    assert psql_children() == []
    wait_until(lambda: server_sessions(target) == 0, "no session of the load left")


def test_sql_in_the_preamble_runs_once(scratch: Callable[[], Database], tmp_path: Path) -> None:
    """A statement planted among pg_dump's opening settings, which every session replays:
    the loader does not replay it (it loads the file serially), so it runs once, as in the
    serial load."""
    source = scratch()
    plant(source)
    backup = dump_gz(source, tmp_path / "b.sql.gz")
    planted = (
        b"SET row_security = off;\nSELECT pg_catalog.set_config('application_name', 'x', false);\n"
    )
    planted += b"CREATE TABLE public.zz_once (n integer);\nINSERT INTO public.zz_once VALUES (1);\n"
    rewrite_backup(backup, insert_before(backup_sql(backup), b"SET row_security = off;\n", planted))
    target = scratch()
    events: list[Event] = []
    parallel_restore(backup, libpq(target), jobs=2, on_event=events.append, watchdog=60)
    said = [e.text for e in events if isinstance(e, Notice)]
    assert any("loaded serially" in text and "session settings" in text for text in said), said
    with target.connect() as conn:
        assert conn.execute("SELECT count(*) FROM zz_once").fetchone() == (1,)
    assert victim_rows(target) == 2
