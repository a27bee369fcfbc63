"""Everything preskool-dr asks of PostgreSQL through psycopg.

Passwords never pass through here: libpq reads PGPASSWORD (or ~/.pgpass) itself.
Identifiers are always quoted with psycopg.sql.Identifier, so a database named
`preskool-db` or `x; DROP DATABASE postgres` is a name, never SQL.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.base.settings import MEMORY_SIZE, DatabaseSettings

MAX_IDENTIFIER_BYTES = 63


# PostgreSQL's own databases: the admin connection lives in `postgres`, CREATE DATABASE
# copies `template1`, and `template0` is the pristine copy. A restore, drill or restore test
# drops its target: never one of these, whatever DB_NAME, --target-db or the runbook says.
SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})


def check_database_name(name: str) -> str:
    """A restore target's name (restore, drill, restore-test): refuse names PostgreSQL would
    silently truncate or that cannot be typed back, and PostgreSQL's own databases."""
    if not name or len(name.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in name:
        raise DrError(
            f"database name {name!r} is not usable (1-63 bytes, no NUL): check DB_NAME / --target-db",
            exit_code=2,
        )
    if name in SYSTEM_DATABASES:
        raise UsageError(
            f"refused: {name!r} is one of PostgreSQL's own databases "
            f"({', '.join(sorted(SYSTEM_DATABASES))}), which a restore must never drop or "
            "replace; restore into the application's database (DB_NAME, --target-db, "
            "drill.target_db or restore_test.database name it)"
        )
    return name


# Name lookup is pinned to pg_catalog on every connection the tool opens. A database that a
# backup made can hold `ALTER DATABASE/ROLE ... SET search_path = evil, pg_catalog` and an
# `evil.count(*)`: unpinned, the tool's own `count(*)` would run the backup's function. The
# setting travels in the startup packet (libpq `options`), and PostgreSQL applies startup
# options after the per-database and per-role defaults, so the dump cannot override it.
# With pg_catalog alone on the path, an unqualified function, operator or type resolves only
# to the built-in one (pg_temp is never searched for functions or operators); tables are
# always written schema-qualified.
PINNED_SEARCH_PATH = "pg_catalog"


def connect(
    db: DatabaseSettings,
    dbname: str | None = None,
    *,
    admin: bool = False,
    connect_timeout: int = 10,
    application_name: str = "preskool-dr",
) -> psycopg.Connection:
    """Autocommit connection as the app role (or the admin role) to `dbname`, with
    search_path pinned to pg_catalog (PINNED_SEARCH_PATH)."""
    target = dbname or (db.admin_db if admin else db.name)
    user = db.admin_user if admin else db.user
    try:
        return psycopg.connect(
            host=db.host,
            port=db.port,
            dbname=target,
            user=user,
            autocommit=True,
            connect_timeout=connect_timeout,
            application_name=application_name,
            options=f"-c search_path={PINNED_SEARCH_PATH}",
        )
    except psycopg.OperationalError as exc:
        raise DrError(
            f"cannot connect to PostgreSQL as {user} at {db.host}:{db.port}/{target}: "
            f"{first_line(exc)} - check that the server is up, DB_HOST/DB_PORT, and the password "
            "(PGPASSWORD, ~/.pgpass or PGPASSFILE; `preskool-dr config check` says which)"
        ) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def libpq_env(db: DatabaseSettings, dbname: str, *, admin: bool = False) -> dict[str, str]:
    """Connection settings for child programs (pg_dump, psql) as environment, never argv."""
    return {
        "PGHOST": db.host,
        "PGPORT": str(db.port),
        "PGUSER": db.admin_user if admin else db.user,
        "PGDATABASE": dbname,
        "PGAPPNAME": "preskool-dr",
        "PGCONNECT_TIMEOUT": "10",
    }


def load_env(db: DatabaseSettings, dbname: str, maintenance_work_mem: str | None) -> dict[str, str]:
    """`libpq_env` for the sessions that load a backup into `dbname`: PGOPTIONS also raises
    maintenance_work_mem for them alone, so that the index and key builds after the data
    sort in memory (PostgreSQL's advice for a restore, "Populating a Database"). The
    operator's own PGOPTIONS come first; a later -c wins, so ours holds."""
    env = libpq_env(db, dbname)
    options = os.environ.get("PGOPTIONS", "").strip()
    if maintenance_work_mem is not None:
        if not MEMORY_SIZE.fullmatch(maintenance_work_mem):  # the runbook check's rule
            raise ValueError(f"not a memory size: {maintenance_work_mem!r}")
        options = f"{options} -c maintenance_work_mem={maintenance_work_mem}".strip()
    if options:
        env["PGOPTIONS"] = options
    return env


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return row is not None


def database_size(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT pg_catalog.pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


def list_tables(conn: psycopg.Connection) -> list[str]:
    """User tables in schema public, sorted."""
    rows = conn.execute(
        "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    ).fetchall()
    return [r[0] for r in rows]


def row_counts(conn: psycopg.Connection, tables: list[str] | None = None) -> dict[str, int]:
    """Exact row counts, table by table (tables of schema public)."""
    result: dict[str, int] = {}
    for table in tables if tables is not None else list_tables(conn):
        query = sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
            sql.Identifier("public", table)
        )
        row = conn.execute(query).fetchone()
        result[table] = int(row[0]) if row else 0
    return result


def row_estimates(conn: psycopg.Connection) -> dict[str, int]:
    """Planner estimates (cheap on a huge database): what the journal records before a drop."""
    rows = conn.execute(
        """SELECT c.relname, greatest(c.reltuples, 0)::pg_catalog.int8
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           ORDER BY c.relname"""
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def role_exists(conn: psycopg.Connection, role: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
        is not None
    )


@dataclass(frozen=True)
class Snapshot:
    """What is about to be destroyed, recorded in the journal before step 5 acts."""

    database: str
    exists: bool
    size_bytes: int
    row_estimates: dict[str, int]


def snapshot(db: DatabaseSettings, name: str) -> Snapshot:
    with connect(db, admin=True) as conn:
        if not database_exists(conn, name):
            return Snapshot(name, False, 0, {})
        size = database_size(conn, name)
    try:
        with connect(db, name, admin=True) as conn:
            estimates = row_estimates(conn)
    except DrError:
        estimates = {}  # the database refuses connections (e.g. ALLOW_CONNECTIONS false)
    return Snapshot(name, True, size, estimates)


def block_and_terminate(conn: psycopg.Connection, name: str, attempts: int = 20) -> int:
    """Stop new connections to `name`, then end the ones there; returns how many ended.

    Blocking first matters: the app's pool reconnects at once, and a DROP or RENAME
    fails while any session remains.
    """
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident))
    terminated = 0
    for _ in range(attempts):
        rows = conn.execute(
            """SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
               WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()""",
            (name,),
        ).fetchall()
        terminated += sum(1 for r in rows if r[0])
        left = conn.execute(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()",
            (name,),
        ).fetchone()
        if left is None or left[0] == 0:
            return terminated
        time.sleep(0.25)
    raise DrError(
        f"sessions on {name} would not end after {attempts} attempts; "
        "stop the application (step 1) and retry"
    )


def allow_connections(conn: psycopg.Connection, name: str) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name))
    )


def rename_database(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def drop_database(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def end_and_drop(conn: psycopg.Connection, name: str) -> None:
    """Drop `name` if it exists, its sessions ended first (a half load, a placeholder)."""
    if database_exists(conn, name):
        block_and_terminate(conn, name)
        drop_database(conn, name)


def require_role(conn: psycopg.Connection, role: str) -> None:
    """DrError when the role that is to own the restored database does not exist."""
    if not role_exists(conn, role):
        raise DrError(
            f"the app role {role!r} does not exist on this server: create it "
            f"(CREATE ROLE {role} LOGIN) or set DB_USER, then retry this step"
        )


def create_database(
    conn: psycopg.Connection, name: str, owner: str | None, *, allow_connections: bool = True
) -> None:
    """CREATE DATABASE `name` owned by `owner` (None: by the connected admin role).

    `allow_connections=False` makes a database nobody can connect to, superusers included,
    until `allow_connections` opens it; its owner could open it, so a closed placeholder
    is owned by the admin role, not the app role."""
    if owner is not None:
        require_role(conn, owner)
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner is not None:
        query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    if not allow_connections:
        query += sql.SQL(" ALLOW_CONNECTIONS false")
    conn.execute(query)


def database_acl(conn: psycopg.Connection, name: str) -> list[str] | None:
    """pg_database.datacl as text items (None: the default, PUBLIC may connect)."""
    row = conn.execute(
        "SELECT datacl::text[] FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return list(row[0]) if row and row[0] is not None else None


def revoke_public_connect(conn: psycopg.Connection, name: str) -> list[str] | None:
    """Other roles may not connect to `name` (its owner and superusers still may); returns
    the ACL this left, so `restore_public_connect` can tell whether anyone changed it."""
    conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
    return database_acl(conn, name)


def restore_public_connect(conn: psycopg.Connection, name: str, left: list[str] | None) -> bool:
    """Undo `revoke_public_connect` when the ACL is still the one it left; when the loaded
    SQL changed the database's privileges itself, they stay as it set them (False)."""
    if database_acl(conn, name) != left:
        return False
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(sql.Identifier(name)))
    return True
