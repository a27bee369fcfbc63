"""Databases in the suite's clusters: the app role, `Database`, fresh databases cloned from a
seeded template, and clusters of a test's own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from preskool_dr.demo.cluster import Cluster, create_cluster
from preskool_dr.demo.seed import seed_database
from tests.support.leaks import PASSWORD

APP_ROLE = "preskool"


@dataclass
class Database:
    """A fresh database in the session cluster, owned by the app role."""

    cluster: Cluster
    name: str

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            self.cluster.conninfo(dbname or self.name), password=PASSWORD, autocommit=True
        )

    def row_counts(self, dbname: str | None = None) -> dict[str, int]:
        with self.connect(dbname) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]
            return {
                t: conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))
                ).fetchone()[0]
                for t in tables
            }

    def accepts_connections(self, dbname: str | None = None) -> bool:
        """False for a database that is missing or closed (step 5's placeholder)."""
        with self.connect("postgres") as conn:
            row = conn.execute(
                "SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname or self.name,)
            ).fetchone()
            return bool(row and row[0])

    def exists(self, dbname: str) -> bool:
        with self.connect("postgres") as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
                is not None
            )


def _superuser(cluster: Cluster) -> psycopg.Connection:
    return psycopg.connect(cluster.conninfo(), password=PASSWORD, autocommit=True)


def create_app_role(cluster: Cluster) -> None:
    with _superuser(cluster) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(PASSWORD)
            )
        )


def start_private_cluster() -> Cluster:
    """A cluster of the test's own, with the app role, for cases that stop the server."""
    cluster = create_cluster(password=PASSWORD)
    create_app_role(cluster)
    return cluster


def seeded_template(cluster: Cluster, scale: float) -> str:
    """The name of a database seeded once at `scale` (as the app role), made on first use.
    Copying it with CREATE DATABASE ... TEMPLATE is much cheaper than seeding again. It is
    seeded under another name and renamed when complete, then closed to connections (a
    template must have no sessions, autovacuum's included)."""
    name = f"seeded_template_{round(scale * 1000)}"
    building = sql.Identifier(f"{name}_building")
    with _superuser(cluster) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(building))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(building, sql.Identifier(APP_ROLE))
        )
    seed_database(
        cluster.conninfo(f"{name}_building", user=APP_ROLE), password=PASSWORD, scale=scale
    )
    with _superuser(cluster) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(building, sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
    return name


def make_database(cluster: Cluster, *, seeded: bool = True, scale: float = 0.05) -> Database:
    """A new database owned by the app role: the PreSkool schema and data at `scale` (a copy
    of the seeded template), or empty."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    create = sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(name), sql.Identifier(APP_ROLE)
    )
    if seeded:
        template = sql.Identifier(seeded_template(cluster, scale))
        create = sql.SQL("{} TEMPLATE {}").format(create, template)
    with _superuser(cluster) as conn:
        conn.execute(create)
    return Database(cluster, name)


def drop_database(cluster: Cluster, name: str) -> None:
    """Drop database `name` if it exists (and end its sessions)."""
    with _superuser(cluster) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_database_and_copies(db: Database) -> None:
    """Drop `db` and every database whose name starts with its name (a restore's aside and
    loading copies)."""
    with _superuser(db.cluster) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (db.name + "%",)
            )
        ]
    for name in names:
        drop_database(db.cluster, name)


def as_app(db: Database) -> psycopg.Connection:
    """The app role owns what it creates, as in production (pg_dump runs as that role)."""
    return psycopg.connect(
        db.cluster.conninfo(db.name, user=APP_ROLE), password=PASSWORD, autocommit=True
    )


def libpq(db: Database) -> dict[str, str]:
    """libpq's variables for `db` as the app role (the password comes from PGPASSWORD)."""
    return {
        "PGHOST": db.cluster.host,
        "PGPORT": str(db.cluster.port),
        "PGUSER": APP_ROLE,
        "PGDATABASE": db.name,
    }
