"""Backups made by hand, from a real pg_dump, or doctored after the fact: what the
catalog, verify and the loaders are tested with."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import random
import subprocess
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg import sql

from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.backup_names import KINDS, backup_name
from preskool_dr.core.storage.checksum import sidecar_path, write_sidecar
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.meta import BackupMeta, read_meta, write_meta
from preskool_dr.core.storage.s3store import S3Store
from tests.support.cli import HANG_GUARD
from tests.support.db import Database, libpq

if TYPE_CHECKING:
    from tests.support.site import Site

MIB = 1024 * 1024


# ---------------------------------------------------------------- made by hand


def pg_dump_shaped(body: bytes) -> bytes:
    """`body` between the banners pg_dump's plain output starts and ends with: a hand-made
    backup must look like a whole dump to pass verify's content check."""
    return (
        b"--\n-- PostgreSQL database dump\n--\n\n"
        + body
        + b"\n--\n-- PostgreSQL database dump complete\n--\n\n"
    )


def sql_text(lines: int = 2000, seed: int = 1) -> bytes:
    """Dump-like text: compressible but not trivially so."""
    rng = random.Random(seed)
    rows = (
        f"INSERT INTO students VALUES ({i}, 'name-{rng.randrange(10**9)}', '{rng.random():.12f}');"
        for i in range(lines)
    )
    return pg_dump_shaped(("\n".join(rows) + "\n").encode())


def make_backup(
    directory: Path,
    at: datetime,
    kind: str | None = "daily",
    *,
    sidecar: bool = True,
    seed: int = 1,
) -> Path:
    """A small logical backup written with the gzip module (+ sidecar, + meta when `kind`)."""
    name = backup_name(kind if kind in KINDS and kind != "base" else "daily", at)
    path = directory / name
    path.write_bytes(gzip.compress(sql_text(300, seed)))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if sidecar:
        write_sidecar(path, md5)
    if kind is not None:
        meta = BackupMeta(name, kind, at, "preskool_db", path.stat().st_size, md5, {"students": 3})
        write_meta(path, meta)
    return path


def make_base_backup(directory: Path, at: datetime) -> Path:
    folder = directory / backup_name("base", at)
    folder.mkdir()
    for member in ("base.tar.gz", "pg_wal.tar.gz"):
        path = folder / member
        path.write_bytes(gzip.compress(sql_text(50, len(member))))
        write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
    return folder


def fabricate(folder: Path, hours: float, size: int = 2 * MIB, kind: str = "daily") -> Path:
    """A backup named `hours` ago, `size` bytes (sparse: only the size matters), with meta."""
    at = utcnow() - timedelta(hours=hours)
    path = folder / backup_name("daily", at)
    with path.open("wb") as handle:
        handle.truncate(size)
    write_meta(path, BackupMeta(path.name, kind, at, "preskool_db", size, "0" * 32))
    return path


# ---------------------------------------------------------------- from pg_dump


def dump_sql(db: Database) -> bytes:
    """What the real pg_dump writes for `db` (plain SQL, as `preskool-dr backup` runs it)."""
    env = {**os.environ, **db.cluster.env, "PGDATABASE": db.name}
    return subprocess.run(
        ["pg_dump", "--format=plain"], env=env, capture_output=True, check=True
    ).stdout


def write_backup(path: Path, sql_text: bytes) -> Path:
    """Gzip `sql_text` to `path` with its md5 sidecar, as a backup would be."""
    path.write_bytes(gzip.compress(sql_text, 6))
    checksum.write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
    return path


def dump_gz(db: Database, path: Path) -> Path:
    """What `preskool-dr backup` writes: pg_dump plain output, gzip."""
    out = subprocess.run(
        ["pg_dump", "--format=plain", "--no-password"],
        env={**os.environ, **libpq(db)},
        capture_output=True,
        check=True,
    ).stdout
    path.write_bytes(gzip.compress(out))
    return path


# ---------------------------------------------------------------- doctored


def backup_sql(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def rewrite_backup(path: Path, data: bytes, *, compressed: bool = False) -> None:
    """Replace a backup's bytes and re-seal it (sidecar and meta md5 follow), so only the
    content can be wrong: what a broken dump with an honest checksum looks like. Its
    custom-format companion (made by default) goes: it is no longer the same dump, and
    step 6 would load it instead of the doctored text."""
    path.write_bytes(data if compressed else gzip.compress(data, compresslevel=1))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    checksum.write_sidecar(path, md5)
    companion = companion_path(path)
    for gone in (companion, checksum.sidecar_path(companion)):
        gone.unlink(missing_ok=True)
    meta = read_meta(path)
    if meta is not None:
        write_meta(path, replace(meta, md5=md5, size=path.stat().st_size, companion_md5=None))


def insert_before(sql_bytes: bytes, anchor: bytes, extra: bytes) -> bytes:
    cut = sql_bytes.index(anchor)
    return sql_bytes[:cut] + extra + sql_bytes[cut:]


def padding(nbytes: int, seed: int = 7) -> bytes:
    """SQL comment lines of incompressible text: a bigger backup that loads the same."""
    rng = random.Random(seed)
    raw = base64.b64encode(rng.randbytes(nbytes * 3 // 4))
    return b"".join(b"-- " + raw[i : i + 96] + b"\n" for i in range(0, len(raw), 96))


def padded(path: Path, nbytes: int = 4 << 20) -> None:
    """Make the backup big enough to span several 1 MiB reads (compressed); the padding goes
    before pg_dump's closing banner, which verify expects at the very end."""
    end = b"\n--\n-- PostgreSQL database dump complete\n"
    rewrite_backup(path, insert_before(backup_sql(path), end, padding(nbytes)))


def blocker(release_db: str) -> bytes:
    """A statement that waits until a database named `release_db` exists: the load stops
    at a known place until the case says go (pg_database is visible from every database)."""
    return (
        "DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '"
        + release_db
        + "') LOOP PERFORM pg_sleep(0.05); END LOOP; END $$;\n"
    ).encode()


def wait_until_blocked(db: Database, target: str) -> None:
    """Until a session of the load sits in a blocker's pg_sleep inside `target` (or in the
    database step 6 loads it under: `<target>_loading_<run id>`)."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        with db.connect("postgres") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE (datname = %s "
                "OR starts_with(datname, %s)) AND wait_event = 'PgSleep'",
                (target, target + "_loading_"),
            ).fetchone()
        if row and row[0]:
            return
        time.sleep(0.1)
    raise AssertionError(f"the load into {target} never reached the blocker")


def create_db(db: Database, name: str) -> None:
    with db.connect("postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def s3_only_backup(site: Site) -> Path:
    """A ~3 MiB backup that exists only in the bucket (the local copy is deleted)."""
    path = site.backup()
    padded(path, 4 << 20)
    config = site.config()
    store = S3Store(str(config.backups.s3_bucket), config.backups.s3_prefix)
    for member in (checksum.sidecar_path(path), meta_path(path), path):
        store.upload(member)
        member.unlink()
    return path


# ---------------------------------------------------------------- in the bucket


def s3_store(config: Config) -> S3Store:
    assert config.backups.s3_bucket
    return S3Store(config.backups.s3_bucket, config.backups.s3_prefix)


def upload_backup(store: S3Store, path: Path, storage_class: str = "STANDARD") -> None:
    """As `backup` does: sidecar and meta first, always STANDARD."""
    for extra in (sidecar_path(path), meta_path(path)):
        if extra.exists():
            store.upload(extra)
    store.upload(path, storage_class=storage_class)
