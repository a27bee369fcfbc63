"""Database: the server down or crashing mid-load, a wrong password, a missing app role,
sessions that reconnect while step 5 works, names that need quoting or are hostile.

Guarantee: before step 1 stops the application, the server must accept the admin connection
and have the app role; otherwise the run fails with the reason and the application keeps
running. A server that dies in the middle of the load fails step 6 saying the server went
away (with psql's words) and to resume once it is back, not to blame the backup; the old
database is aside and `--resume` (once the server is back) reloads from a clean database.
`ALLOW_CONNECTIONS false` is set before sessions are terminated, so an application that
reconnects in a loop cannot keep step 5 from renaming the database. Every database name is
passed as an identifier (psycopg `sql.Identifier`, libpq settings in the environment), so
`preskool-db`, `MixedCase` or `x; DROP DATABASE postgres` is only ever a name.
"""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal
from preskool_dr.demo import standin_app
from preskool_dr.demo.cluster import Cluster
from tests.support.backups import (
    backup_sql,
    blocker,
    create_db,
    insert_before,
    rewrite_backup,
    wait_until_blocked,
)
from tests.support.checks import assert_says, the_error
from tests.support.db import APP_ROLE, Database, start_private_cluster
from tests.support.leaks import PASSWORD
from tests.support.runbook import write_runbook
from tests.support.site import Site

# The module's own cluster is started once: every case runs on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("faults_database_cluster")


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    """This module stops and crashes its server: it gets a cluster of its own."""
    cluster = start_private_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


def test_server_down_at_start_leaves_the_app_running(site: Site, pg_cluster: Cluster) -> None:
    """Server down when the restore starts: the run fails before step 1 stops the app, one
    line says what to check; `backup` fails the same way; --resume works once it is up."""
    site.backup()
    site.change_data()
    before = site.checksum()
    pg_cluster.stop()
    try:
        result = site.restore()
        backup = site.cli("backup", "--no-upload")
    finally:
        pg_cluster.start()

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(
        the_error(result),
        "[FAIL]  App offline failed: cannot connect to PostgreSQL",
        "check that the server is up",
    )
    assert site.calls() == []  # the application was left running
    assert "has not been touched" in result.stdout
    assert backup.returncode == 1
    assert_says(the_error(backup), "cannot connect to PostgreSQL", "check that the server is up")
    assert site.checksum() == before
    resumed = site.resume(site.the_run().run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert site.checksum() != before  # the backup's rows are back
    site.assert_no_leak(result, backup, resumed)


def hold_pg_restore_at_a_row(site: Site, release: str) -> None:
    """A table whose CHECK waits until a database named `release` exists: pg_dump writes the
    CHECK into the table's CREATE, so pg_restore's COPY of its one row waits there."""
    body = blocker(release).decode().removeprefix("DO $$ BEGIN ").removesuffix(" END $$;\n")
    create_db(site.db, release)  # the row is inserted here, so it must pass now
    owner = site.db.cluster.conninfo(site.db.name, user=APP_ROLE)
    with psycopg.connect(owner, password=PASSWORD, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION released() RETURNS boolean LANGUAGE plpgsql AS "
            f"$$ BEGIN {body} RETURN true; END $$"
        )
        conn.execute("CREATE TABLE zz_gate (ok boolean CHECK (released()))")
        conn.execute("INSERT INTO zz_gate VALUES (true)")
    with site.db.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(release)))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["serial", "parallel", "custom"])
@pytest.mark.slow
def test_server_crash_mid_load_fails_clearly_and_resumes(
    site: Site, pg_cluster: Cluster, method: str
) -> None:
    """`pg_ctl stop -m immediate` while the load runs (psql for the plain loaders, `pg_restore
    -j 2` for the custom-format companion): step 6 fails saying the server went away and to
    resume (not to pick another backup), the old database is aside; after the server is
    back, --resume reloads from a clean database."""
    release = f"{site.db.name}_go"
    if method == "custom":
        write_runbook(site.root, app=site.app, restore={"method": "auto", "jobs": 2})
        hold_pg_restore_at_a_row(site, release)
        backup = run_backup(site.config(), "daily", upload=False, custom=True).path
    else:
        write_runbook(site.root, app=site.app, restore={"method": method, "jobs": 2})
        backup = site.backup()
    at_backup = site.checksum()
    site.change_data()
    before = site.checksum()
    if method != "custom":
        sql_bytes = insert_before(backup_sql(backup), b"COPY public.students", blocker(release))
        rewrite_backup(backup, sql_bytes)
    child = site.start("restore", backup.name, "--confirm", site.db.name)
    child.wait_for_step("restore")
    wait_until_blocked(site.db, site.db.name)

    pg_cluster.stop("immediate")
    result = child.finish()
    pg_cluster.start()

    assert result.returncode == 1, result.stdout + result.stderr
    if method == "custom":
        assert "using the custom-format companion" in result.stdout, result.stdout
        assert "launching item" not in result.stdout  # pg_restore --verbose is the TUI log's
    line = the_error(result)
    assert_says(line, "[FAIL]  Restore failed:", "server went away", "--resume", "not at fault")
    assert "another backup" not in line
    state = site.the_run()
    assert state.step("restore").status is StepStatus.FAILED
    assert state.aside_db and site.checksum(state.aside_db) == before
    assert f"resume: preskool-dr restore --resume {state.run_id}" in result.stdout
    create_db(site.db, release)
    resumed = site.resume(state.run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert site.checksum() == at_backup
    assert site.calls() == ["stop", "migrate", "start"]
    site.assert_no_leak(result, resumed)


@pytest.mark.slow
def test_wrong_password_leaves_the_app_running(site: Site) -> None:
    """A wrong PGPASSWORD: the run fails before step 1 with libpq's reason and PGPASSWORD
    named; the wrong password is printed nowhere; --resume with the right one completes."""
    site.backup()
    before = site.checksum()
    wrong = "wrong-pw-MARKER-5e1d"
    result = site.cli(
        "restore", "latest", "--confirm", site.db.name, env=site.env(PGPASSWORD=wrong)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "password authentication failed", "PGPASSWORD")
    assert wrong not in result.stdout + result.stderr
    assert site.calls() == [] and site.checksum() == before
    resumed = site.resume(site.the_run().run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    site.assert_no_leak(result, resumed)


def test_missing_app_role_is_caught_before_anything_changes(site: Site) -> None:
    """DB_USER names a role the server does not have: the run fails before the app is
    stopped or the database renamed, saying how to create the role."""
    site.backup()
    before = site.checksum()
    result = site.cli("restore", "latest", "--confirm", site.db.name, env=site.env(DB_USER="ghost"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "the app role 'ghost' does not exist", "CREATE ROLE")
    assert site.calls() == [] and site.checksum() == before
    assert site.the_run().aside_db is None
    site.assert_no_leak(result)


def test_missing_app_role_with_step_1_skipped_changes_nothing(site: Site) -> None:
    """Even with step 1 skipped (the app is already down), step 5 checks the role before it
    renames anything."""
    site.backup()
    before = site.checksum()
    config = site.config()
    config = replace(config, database=replace(config.database, user="ghost"))
    ghost = Engine.start(config, RunOptions(backup_spec="latest", operator="ops"))
    try:
        for step_id in ("download", "verify"):
            assert ghost.run_step(step_id).status is StepStatus.DONE
        ghost.skip_step("app_offline", "the app is already down")
        record = ghost.run_step("recreate_db", confirmation=site.db.name)
        assert record.status is StepStatus.FAILED
        assert "the app role 'ghost' does not exist" in record.detail
        assert ghost.state.aside_state != "renamed"
    finally:
        ghost.close()
    assert site.checksum() == before


def test_reconnecting_sessions_cannot_stop_step_5(site: Site) -> None:
    """Three app sessions reconnect in a loop while step 5 terminates them: ALLOW_CONNECTIONS
    false wins, the rename and the restore complete."""
    site.backup()
    site.change_data()
    before = site.checksum()
    stop = threading.Event()
    connected = threading.Event()
    errors: list[str] = []

    def pool() -> None:
        while not stop.is_set():
            try:
                with site.db.connect() as conn:
                    connected.set()
                    while not stop.is_set():
                        conn.execute("SELECT 1")
                        stop.wait(0.01)
            except psycopg.Error as exc:
                errors.append(str(exc).strip().splitlines()[0])

    threads = [threading.Thread(target=pool, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert connected.wait(60)
    engine = Engine.start(site.config(), RunOptions(backup_spec="latest", operator="ops"))
    try:
        for step_id in ("download", "verify"):
            assert engine.run_step(step_id).status is StepStatus.DONE
        engine.skip_step("app_offline", "the application keeps reconnecting on purpose")
        recreate = engine.run_step("recreate_db", confirmation=site.db.name)
        restore = engine.run_step("restore")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        engine.close()
    assert recreate.status is StepStatus.DONE, recreate.detail
    assert restore.status is StepStatus.DONE, restore.detail
    assert any("terminating connection due to administrator command" in e for e in errors)
    assert engine.state.aside_db and site.checksum(engine.state.aside_db) == before


def connect(cluster: Cluster, name: str) -> psycopg.Connection:
    # keyword, not conninfo text: the name may hold spaces, quotes and semicolons
    return psycopg.connect(cluster.conninfo(), dbname=name, password=PASSWORD, autocommit=True)


def payments(cluster: Cluster, name: str) -> int:
    with connect(cluster, name) as conn:
        row = conn.execute("SELECT count(*) FROM payments").fetchone()
        return int(row[0]) if row else -1


NAMES = ["preskool-db", "MixedCase", "x; DROP DATABASE postgres", 'it\'s "quoted"']


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES, ids=["dash", "mixed-case", "hostile", "quotes"])
@pytest.mark.slow
def test_names_that_need_quoting_are_only_names(
    site: Site, database: Database, pg_cluster: Cluster, name: str
) -> None:
    """A target named `preskool-db`, `MixedCase`, `x; DROP DATABASE postgres` or with
    quotes: backup and restore work on exactly that database; nothing else is touched."""
    with database.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER preskool").format(
                sql.Identifier(name), sql.Identifier(database.name)
            )
        )
        others = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    app_dir = site.root / f"app-{uuid.uuid4().hex[:6]}"
    env = site.env(DB_NAME=name)
    server = standin_app.start_server(app_dir, env=env)
    try:
        site.set_app(
            stop=standin_app.command("stop", app_dir),
            start=standin_app.command("start", app_dir),
            migrate=standin_app.command("migrate", app_dir),
            health_url=f"{server.health_url}?db={urllib.parse.quote(name)}",
        )
        backup = site.cli("backup", "--no-upload", env=env)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        with connect(pg_cluster, name) as conn:
            conn.execute("DELETE FROM payments")
        result = site.cli("restore", "latest", "--confirm", name, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        state = Journal(site.state_dir).runs()[0]
        assert state.target_db == name and state.aside_db
        assert payments(pg_cluster, name) == payments(pg_cluster, database.name) > 0
        assert payments(pg_cluster, state.aside_db) == 0
        with database.connect("postgres") as conn:
            now = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert now == others | {state.aside_db}
        assert standin_app.read_calls(app_dir) == ["stop", "migrate", "start"]
        site.assert_no_leak(backup, result)
    finally:
        server.stop()
        with connect(pg_cluster, "postgres") as conn:
            for db in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                (name, name.replace("_", r"\_").replace("%", r"\%") + r"\_before\_%"),
            ).fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db[0])))
