"""The fidelity check: a hard schema (everything pg_dump emits for pagila-like and hostile
schemas), and what proves a restore equals its source: the `pg_dump --schema-only` text,
per-table data digests, sequence values, large objects and extensions
(`tests.support.loaders.fingerprint`), compared with the normalisations a restore
legitimately needs and nothing else."""

from __future__ import annotations

import difflib
from pathlib import Path

from psycopg import sql

from tests.support.db import Database
from tests.support.loaders import AWKWARD_SCHEMA, fingerprint, schema_dump

# Schema names with a space, a quote and emoji; the second also holds the extension.
WEIRD = '"we""ird; schema 🦄"'
UNI = '"Ünïcødé 🐘"'

# The extensions the hard schema creates (both trusted since PostgreSQL 13: the database's
# owner, the app role, may create them; contrib must be installed).
EXTENSIONS = ("citext", "pgcrypto")

# What AWKWARD_SCHEMA (tests/support/loaders.py) does not already cover, built on top of it
# and on the PreSkool schema of the site's database (which the restore's checks expect). A
# data file: its quoting (""" and ''' in identifiers and literals) defeats a Python literal.
HARD_EXTRA = (
    (Path(__file__).parent / "hard_schema.sql")
    .read_text(encoding="utf-8")
    .replace("@WEIRD@", WEIRD)
    .replace("@UNI@", UNI)
)

HARD_SCHEMA = AWKWARD_SCHEMA + HARD_EXTRA


def missing_extensions(db: Database) -> list[str]:
    """The EXTENSIONS this cluster cannot create (the contrib package not installed)."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (list(EXTENSIONS),)
        ).fetchall()
    return sorted(set(EXTENSIONS) - {r[0] for r in rows})


def hard_schema(*, extensions: bool = True) -> str:
    """HARD_SCHEMA; without `extensions`, the same with citext as text and pgcrypto's
    digest as md5 (for a cluster without contrib: only the extension part is left out)."""
    if extensions:
        return HARD_SCHEMA
    text = HARD_SCHEMA.replace(f"CREATE EXTENSION citext WITH SCHEMA {UNI};\n", "")
    text = text.replace("CREATE EXTENSION pgcrypto;\n", "").replace(f"{UNI}.citext", "text")
    return text.replace("encode(public.digest('seed', 'sha256'), 'hex')", "md5('seed')")


def copy_of(db: Database, name: str) -> Database:
    """A byte-for-byte copy of `db` (CREATE DATABASE ... TEMPLATE): what a perfect restore
    gives, for checking that the comparison sees each kind of difference."""
    with db.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(db.name)
            )
        )
    return Database(db.cluster, name)


def schema_text(db: Database) -> str:
    """`pg_dump --schema-only` with one normalisation (in `schema_dump`): the `\\restrict` and
    `\\unrestrict` lines, whose key pg_dump draws at random on every run. The database's
    name does not appear without --create, so it needs none (checked here, so that a later
    pg_dump that prints it fails loudly instead of comparing two different names)."""
    text = schema_dump(db)
    assert db.name not in text, "pg_dump printed the database name: normalise it explicitly"
    return text


Snapshot = tuple[str, dict[str, object]]


def snapshot(db: Database) -> Snapshot:
    """What the comparison looks at: the schema text and the fingerprint."""
    return schema_text(db), fingerprint(db)


def assert_restored_equal(source: Database | Snapshot, restored: Database) -> None:
    """The restore is the source: same schema text, same rows in every table (and
    materialized view), same sequence states, large objects and extensions. `source` may
    be a database or its `snapshot`, taken once for many comparisons."""
    want, expected = snapshot(source) if isinstance(source, Database) else source
    got = schema_text(restored)
    if want != got:
        diff = "\n".join(
            difflib.unified_diff(
                want.splitlines(), got.splitlines(), "source", "restored", lineterm="", n=2
            )
        )
        raise AssertionError(f"pg_dump --schema-only differs:\n{diff[:6000]}")
    actual = fingerprint(restored)
    differing = sorted(
        k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k)
    )
    assert not differing, {k: (expected.get(k), actual.get(k)) for k in differing}
