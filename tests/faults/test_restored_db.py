"""A restored database's own objects: a search_path set by the dump, functions shadowing built-ins.

Guarantee: every query preskool-dr runs inside a database that a backup created (step 6's
required-table, row-count and smoke checks, the restore test's checks, a PITR drill's checks)
runs as the app role (DB_USER), never as the admin superuser, on a connection whose
search_path is pinned to pg_catalog in the startup packet, where `ALTER DATABASE ... SET
search_path` and `ALTER ROLE ... IN DATABASE ... SET search_path` from the dump cannot
override it; the tool's own queries name every table and function schema-qualified. A backup
that shadows `count(*)` through its own search_path changes no row count, and a backup's
function that an operator's smoke query does pick up (a closer type match in schema public)
runs without superuser rights, so it cannot create a role or grant itself anything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from preskool_dr.core.base import database
from preskool_dr.core.storage.meta import read_meta
from tests.support.backups import backup_sql, insert_before, rewrite_backup
from tests.support.db import APP_ROLE
from tests.support.leaks import PASSWORD
from tests.support.runbook import write_runbook
from tests.support.site import Site

# The operator's smoke query: `lower(gender)` on a char(1) column. The backup's
# public.lower(bpchar) is an exact type match and beats pg_catalog.lower(text).
SMOKE = {
    "name": "genders known",
    "sql": "SELECT count(*) FROM students WHERE lower(gender) IN ('f', 'm', 'x')",
    "min_value": 1,
}

# Objects the backup brings: a log of calls, a function that tries what only a superuser
# can (CREATE ROLE), an aggregate evil.count(*) that calls it and inflates every count, and
# public.lower(bpchar) that calls it too. Created as the app role, like a real dump's.
EVIL_OBJECTS = """
CREATE SCHEMA evil;
CREATE TABLE evil.calls (what text, by_role text, superuser boolean);
CREATE FUNCTION evil.escalate(what text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO evil.calls SELECT what, current_user, rolsuper
        FROM pg_catalog.pg_roles WHERE rolname = current_user;
    BEGIN
        EXECUTE pg_catalog.format('CREATE ROLE %I', '{marker}');
    EXCEPTION WHEN insufficient_privilege OR duplicate_object THEN NULL;
    END;
END $f$;
CREATE FUNCTION evil.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM evil.escalate('count');
    RETURN $1 + 1000;
END $f$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION public.lower(character) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM evil.escalate('smoke');
    RETURN pg_catalog.lower($1::text);
END $f$;
"""

# What arms them: appended to the dump, so it runs during the load in the new database.
# The role-in-database setting outranks the database's; both name evil before pg_catalog.
ARMING = b"""
DO $arm$ BEGIN
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = evil, pg_catalog, public',
                              pg_catalog.current_database());
    EXECUTE pg_catalog.format(
        'ALTER ROLE %I IN DATABASE %I SET search_path = evil, pg_catalog, public',
        current_user, pg_catalog.current_database());
END $arm$;
"""
END_BANNER = b"\n--\n-- PostgreSQL database dump complete\n"


@pytest.fixture
def marker(site: Site) -> Iterator[str]:
    """A role name only a superuser-run shadowing function could create; dropped afterwards."""
    name = f"evil_{uuid.uuid4().hex[:10]}"
    yield name
    with site.db.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def crafted_backup(site: Site, marker: str) -> Path:
    """The test database plus the evil objects, backed up by the product (its .meta.json
    records the true row counts), then the arming block added and the backup re-sealed."""
    with psycopg.connect(
        site.db.cluster.conninfo(site.db.name, user=APP_ROLE), password=PASSWORD, autocommit=True
    ) as conn:
        conn.execute(EVIL_OBJECTS.replace("{marker}", marker))
    path = site.backup()
    rewrite_backup(path, insert_before(backup_sql(path), END_BANNER, ARMING))
    rt = site.config().restore_test
    smoke = [{"name": q.name, "sql": q.sql, "min_value": q.min_value} for q in rt.smoke_queries]
    write_runbook(site.root, app=site.app, restore_test={"smoke_queries": [*smoke, SMOKE]})
    return path


def role_exists(site: Site, name: str) -> bool:
    with site.db.connect("postgres") as conn:
        return database.role_exists(conn, name)


def evil_calls(site: Site) -> list[tuple[str, str, bool]]:
    with site.db.connect() as conn:
        return [tuple(r) for r in conn.execute("SELECT * FROM evil.calls").fetchall()]


def armed_search_path(site: Site) -> str:
    """What an unpinned app-role session in the restored database gets."""
    with psycopg.connect(
        site.db.cluster.conninfo(site.db.name, user=APP_ROLE), password=PASSWORD, autocommit=True
    ) as conn:
        row = conn.execute("SHOW search_path").fetchone()
        assert row is not None
        return str(row[0])


def test_restore_checks_run_as_the_app_role_with_a_pinned_search_path(
    site: Site, marker: str
) -> None:
    """A dump sets its database's and role's search_path to `evil, pg_catalog, public` and
    brings evil.count(*) and public.lower(bpchar), both trying CREATE ROLE: step 6's checks
    use the built-in count (row counts match the backup's record), the smoke query's lower
    runs as the non-superuser app role, and no role is created."""
    crafted_backup(site, marker)
    result = site.restore()
    assert not role_exists(site, marker), "a backup's function ran with superuser rights"
    assert result.returncode == 0, result.stdout + result.stderr
    assert armed_search_path(site) == "evil, pg_catalog, public"  # the trap was set
    calls = evil_calls(site)
    assert calls, "the smoke query's lower() was expected to reach the backup's function"
    assert set(calls) == {("smoke", APP_ROLE, False)}


def test_restore_test_counts_are_not_shadowed(site: Site, marker: str) -> None:
    """The same backup through `restore-test`: the row counts equal the backup's record
    (the backup's evil.count(*), which adds 1000 per row, is never called) and the backup's
    functions create no role."""
    crafted_backup(site, marker)
    result = site.cli("restore-test", "latest", "--json")
    assert not role_exists(site, marker)
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["row counts"]["status"] == "ok", checks["row counts"]
    assert checks[f"smoke: {SMOKE['name']}"]["ok"], checks
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_connection_keeps_its_pinned_search_path(site: Site, marker: str) -> None:
    """`database.connect` into the restored database, as the app role and as the admin:
    the startup option wins over the database's and the role's own search_path settings."""
    meta = read_meta(crafted_backup(site, marker))
    assert meta is not None and meta.row_counts
    result = site.restore()
    assert result.returncode == 0, result.stdout + result.stderr
    config = site.config()
    for admin in (False, True):
        with database.connect(config.database, site.db.name, admin=admin) as conn:
            row = conn.execute("SHOW search_path").fetchone()
            assert row is not None and row[0] == "pg_catalog"
            assert database.row_counts(conn, ["students"]) == {
                "students": meta.row_counts["students"]
            }
    assert not any(c[0] == "count" for c in evil_calls(site))
    assert not role_exists(site, marker)
