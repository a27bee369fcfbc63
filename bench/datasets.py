"""What the benchmarks restore: a realistic database (the PreSkool schema scaled up plus
pgbench tables) and a large generated backup for the memory and verify runs."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

from common import APP_ROLE, PASSWORD, Lab, say

from preskool_dr.demo.seed import seed_database

BLOCK = 8 << 20  # raw SQL bytes per repeated gzip member
BIG_TABLES = 4


def build_realistic(lab: Lab, name: str, *, scale: float, pgbench_scale: int) -> dict[str, Any]:
    """The PreSkool schema seeded at `scale` and `pgbench -i -s pgbench_scale` in one
    database: 18 related tables with keys and indexes, plus one wide 100k-rows-per-scale
    table, as an ERP database with a few big tables looks."""
    lab.fresh_db(name)
    started = time.perf_counter()
    seed_database(lab.cluster.conninfo(name, user=APP_ROLE), password=PASSWORD, scale=scale)
    seeded = time.perf_counter() - started
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        say("    pgbench not found: the realistic database has the PreSkool tables only")
    else:
        subprocess.run(
            [pgbench, "-i", "-q", "-s", str(pgbench_scale), "--foreign-keys"],
            env=lab.env(name),
            check=True,
            capture_output=True,
        )
    with lab.admin(name) as conn:
        conn.execute("VACUUM ANALYZE")
        tables = conn.execute(
            """SELECT relname, n_live_tup FROM pg_stat_user_tables ORDER BY n_live_tup DESC"""
        ).fetchall()
    return {
        "name": name,
        "scale": scale,
        "pgbench_scale": pgbench_scale if pgbench else None,
        "seconds": time.perf_counter() - started,
        "seed_seconds": seeded,
        "size": lab.db_size(name),
        "tables": len(tables),
        "rows": sum(int(n) for _, n in tables),
        "largest": [(str(t), int(n)) for t, n in tables[:3]],
    }


def _header(table: str) -> bytes:
    return (
        f"--\n-- Name: {table}; Type: TABLE; Schema: public; Owner: {APP_ROLE}\n--\n\n"
        f"CREATE UNLOGGED TABLE public.{table} (\n    id bigint NOT NULL,\n"
        "    body text NOT NULL\n);\n\n\n"
        f"ALTER TABLE public.{table} OWNER TO {APP_ROLE};\n\n"
    ).encode()


def generate_big_backup(path: Path, gib: float) -> dict[str, Any]:
    """A plain-SQL gzip backup shaped like pg_dump's output (preamble, TOC comments, one
    COPY block per table) holding `gib` GiB of rows in BIG_TABLES unlogged tables.

    Writing GiBs of fresh compressed data would take minutes, so one 8 MiB block of rows is
    compressed once and repeated as gzip members (valid gzip: `cat a.gz b.gz` is how gzip
    itself joins files). Rows repeat, so the tables have no key; every byte still goes
    through decompression, the pipe and COPY like a real backup's."""
    started = time.perf_counter()
    rnd = random.Random(8)
    words = [
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9)))
        for _ in range(3000)
    ]
    rows, size, row_id = [], 0, 0
    while size < BLOCK:
        row_id += 1
        line = f"{row_id}\t{' '.join(rnd.choice(words) for _ in range(rnd.randint(20, 60)))}\n"
        rows.append(line.encode())
        size += len(rows[-1])
    block = b"".join(rows)
    block_gz = zlib.compress(block, 6, wbits=31)
    per_table = max(1, int(gib * (1 << 30) / BLOCK / BIG_TABLES))
    tables = [f"bulk_{n}" for n in range(1, BIG_TABLES + 1)]
    digest = hashlib.md5(usedforsecurity=False)
    written = sql_bytes = 0

    def put(data: bytes, raw: int) -> None:
        nonlocal written, sql_bytes
        out.write(data)
        digest.update(data)
        written += len(data)
        sql_bytes += raw

    def put_text(text: bytes) -> None:
        put(zlib.compress(text, 6, wbits=31), len(text))

    with path.open("wb") as out:
        put_text(
            b"--\n-- PostgreSQL database dump\n--\n\n"
            b"SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
            b"SET standard_conforming_strings = on;\n"
            b"SELECT pg_catalog.set_config('search_path', '', false);\n"
            b"SET client_min_messages = warning;\n\n" + b"".join(_header(t) for t in tables)
        )
        for table in tables:
            put_text(
                f"--\n-- Data for Name: {table}; Type: TABLE DATA; Schema: public; "
                f"Owner: {APP_ROLE}\n--\n\nCOPY public.{table} (id, body) FROM stdin;\n".encode()
            )
            for _ in range(per_table):
                put(block_gz, len(block))
            put_text(b"\\.\n\n\n")
        put_text(b"--\n-- PostgreSQL database dump complete\n--\n\n")
    sidecar = path.with_name(path.name + ".md5")
    sidecar.write_text(f"{digest.hexdigest()}  {path.name}\n")
    return {
        "path": str(path),
        "tables": tables,
        "rows_per_table": per_table * row_id,
        "sql_bytes": sql_bytes,
        "gz_bytes": written,
        "seconds": time.perf_counter() - started,
    }
