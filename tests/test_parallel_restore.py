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

import psycopg
import pytest
from psycopg import sql

from preskool_dr.core.base.errors import Cancelled, VerificationError
from preskool_dr.core.base.events import Event, LogLine, Progress
from preskool_dr.core.restore.loaders.parallel import (
    parallel_restore,
    resolve_jobs,
    unsupported_reason,
)
from preskool_dr.core.restore.loaders.stream import RestoreError, stream_restore
from tests.conftest import APP_ROLE, PASSWORD, Database, assert_no_secrets

# Everything pg_dump splits into separate entries, and what a naive splitter trips on.
AWKWARD_SCHEMA = r"""
CREATE SCHEMA "Sales Ops";
CREATE DOMAIN positive_amount AS numeric(12,2) CHECK (VALUE > 0);
CREATE DOMAIN email AS text CHECK (VALUE ~ '^[^@]+@[^@]+$');
CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');

CREATE TABLE customers (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email email NOT NULL UNIQUE,
    name text NOT NULL,
    referred_by integer REFERENCES customers(id),
    created_at timestamptz NOT NULL DEFAULT '2026-01-01'
);
ALTER TABLE customers ADD CONSTRAINT name_short CHECK (length(name) < 200) NOT VALID;
COMMENT ON TABLE customers IS 'people who buy';

CREATE TABLE orders (
    id bigint NOT NULL,
    customer_id integer NOT NULL REFERENCES customers(id),
    ordered_on date NOT NULL,
    state order_state NOT NULL DEFAULT 'new',
    amount positive_amount NOT NULL,
    note text,
    PRIMARY KEY (id, ordered_on)
) PARTITION BY RANGE (ordered_on);
CREATE TABLE orders_2025 PARTITION OF orders
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY HASH (id);
CREATE TABLE orders_2025_even PARTITION OF orders_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE orders_2025_odd PARTITION OF orders_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE orders_default PARTITION OF orders DEFAULT;
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_note_idx ON orders (lower(note)) WHERE note IS NOT NULL;
COMMENT ON INDEX orders_customer_idx IS 'who ordered';

CREATE TABLE shipments (
    id serial PRIMARY KEY,
    order_id bigint NOT NULL,
    ordered_on date NOT NULL,
    shipped_at timestamptz,
    FOREIGN KEY (order_id, ordered_on) REFERENCES orders (id, ordered_on)
        DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE departments (id integer PRIMARY KEY, head_id integer);
CREATE TABLE employees (
    id integer PRIMARY KEY,
    department_id integer REFERENCES departments(id),
    manager_id integer REFERENCES employees(id)
);
ALTER TABLE departments ADD FOREIGN KEY (head_id) REFERENCES employees(id);

CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, payload jsonb);
CREATE TABLE audit_events (actor text NOT NULL) INHERITS (events);
CREATE INDEX audit_events_actor_idx ON audit_events (actor);
CREATE RULE events_keep AS ON DELETE TO events DO INSTEAD NOTHING;

CREATE TABLE "Sales Ops"."Order Lines" (
    "Line No" integer PRIMARY KEY,
    order_id bigint NOT NULL,
    qty integer NOT NULL,
    price numeric(10,2) NOT NULL,
    total numeric GENERATED ALWAYS AS (qty * price) STORED
);
CREATE INDEX "Order Lines By Qty" ON "Sales Ops"."Order Lines" (qty);
ALTER TABLE "Sales Ops"."Order Lines" CLUSTER ON "Order Lines By Qty";

CREATE TABLE bookings (room integer NOT NULL, during tstzrange NOT NULL,
    EXCLUDE USING gist (during WITH &&));
CREATE TABLE notes (body text);
CREATE UNLOGGED TABLE scratch (k integer PRIMARY KEY, v text);
CREATE STATISTICS orders_stats ON customer_id, state FROM orders_2026;

CREATE FUNCTION touch_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.name := trim(NEW.name);
    RETURN NEW;
END
$$;
CREATE TRIGGER customers_touch BEFORE INSERT OR UPDATE OF name ON customers
    FOR EACH ROW EXECUTE FUNCTION touch_customer();
-- Loading orders with this trigger in place would add audit rows: it must come after the data.
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_events (at, payload, actor) VALUES (now(), to_jsonb(NEW), 'trigger');
    RETURN NEW;
END
$$;
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
CREATE FUNCTION check_shipment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER shipments_check AFTER INSERT ON shipments
    DEFERRABLE FOR EACH ROW EXECUTE FUNCTION check_shipment();
COMMENT ON TRIGGER orders_log ON orders IS 'audit';
-- A body whose lines look like an entry header and a COPY line to a line-based splitter.
CREATE FUNCTION looks_like_a_dump() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN '
--
-- Name: fake_idx; Type: INDEX; Schema: public; Owner: nobody
--
COPY public.fake (a) FROM stdin;
';
END
$$;

CREATE VIEW big_spenders AS SELECT customer_id, sum(amount) AS spent FROM orders GROUP BY 1;
CREATE MATERIALIZED VIEW customer_totals AS
    SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id;
CREATE UNIQUE INDEX customer_totals_pk ON customer_totals (customer_id);
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY customers_all ON customers USING (true);

INSERT INTO customers (email, name, referred_by)
    SELECT 'c' || i || '@example.com', ' Customer ' || i || ' ', NULL
    FROM generate_series(1, 3000) AS i;
UPDATE customers SET referred_by = id - 1 WHERE id > 1 AND id % 7 = 0;
ALTER TABLE orders DISABLE TRIGGER orders_log;
INSERT INTO orders (id, customer_id, ordered_on, state, amount, note)
    SELECT i, 1 + i % 3000, date '2025-01-01' + (i % 900),
           (ARRAY['new','paid','shipped']::order_state[])[1 + i % 3], 1 + i % 500,
           CASE WHEN i % 5 = 0 THEN 'Note ' || i END
    FROM generate_series(1, 20000) AS i;
ALTER TABLE orders ENABLE TRIGGER orders_log;
INSERT INTO shipments (order_id, ordered_on, shipped_at)
    SELECT id, ordered_on, ordered_on + interval '2 days' FROM orders WHERE state = 'shipped';
INSERT INTO departments VALUES (1, NULL), (2, NULL);
INSERT INTO employees VALUES (1, 1, NULL), (2, 2, 1), (3, 1, 1);
UPDATE departments SET head_id = id;
INSERT INTO events (at, payload) SELECT '2026-01-01'::timestamptz + i * interval '1 min',
    jsonb_build_object('i', i) FROM generate_series(1, 500) AS i;
INSERT INTO audit_events (at, payload, actor) SELECT '2026-02-01', '{}', 'user' || i
    FROM generate_series(1, 300) AS i;
INSERT INTO "Sales Ops"."Order Lines" ("Line No", order_id, qty, price)
    SELECT i, i, 1 + i % 9, 2.5 FROM generate_series(1, 5000) AS i;
INSERT INTO bookings SELECT i % 10, tstzrange('2026-01-01'::timestamptz + i * interval '1 day',
    '2026-01-01'::timestamptz + (i + 1) * interval '1 day') FROM generate_series(1, 200) AS i;
-- Rows that read, one per line, like the end of a COPY block, an entry header and a COPY line.
INSERT INTO notes VALUES ('--'), ('-- Name: fake; Type: TABLE DATA; Schema: public; Owner: x'),
    ('--'), ('COPY public.fake (a) FROM stdin;'), (E'\\.'), ('\.'), (E'two\nlines'), (NULL);
INSERT INTO scratch SELECT i, 'v' || i FROM generate_series(1, 100) AS i;
REFRESH MATERIALIZED VIEW customer_totals;
SELECT lo_from_bytea(0, convert_to('a large object', 'UTF8'));
"""


def as_app(db: Database) -> psycopg.Connection:
    """The app role owns what it creates, as in production (pg_dump runs as that role)."""
    return psycopg.connect(
        db.cluster.conninfo(db.name, user=APP_ROLE), password=PASSWORD, autocommit=True
    )


def libpq(db: Database) -> dict[str, str]:
    return {
        "PGHOST": db.cluster.host,
        "PGPORT": str(db.cluster.port),
        "PGUSER": APP_ROLE,
        "PGDATABASE": db.name,
    }


@pytest.fixture(autouse=True)
def password_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)


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


def schema_dump(db: Database) -> str:
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-password"],
        env={**os.environ, **libpq(db)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # \restrict carries a random key per run
    return "\n".join(
        ln for ln in out.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict"))
    )


def fingerprint(db: Database) -> dict[str, object]:
    """Row count and checksum of every relation holding rows, sequence states, large objects."""
    result: dict[str, object] = {}
    with db.connect() as conn:
        relations = conn.execute(
            """SELECT n.nspname, c.relname, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'm', 'S')
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
               ORDER BY 1, 2"""
        ).fetchall()
        for schema, name, kind in relations:
            ident = sql.Identifier(schema, name)
            if kind == "S":
                row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(ident))
            else:
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                        " FROM ONLY {} t"
                    ).format(ident)
                )
            result[f"{schema}.{name}"] = row.fetchone()
        result["large objects"] = conn.execute(
            "SELECT array_agg(md5(lo_get(oid)) ORDER BY oid) FROM pg_largeobject_metadata"
        ).fetchone()
    return result


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


def assert_same(serial: Database, parallel: Database) -> None:
    assert schema_dump(parallel) == schema_dump(serial)
    assert fingerprint(parallel) == fingerprint(serial)


def psql_children() -> list[int]:
    """psql processes started by this test process (none may outlive a restore)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if name == "psql" and ppid == os.getpid():
            found.append(int(entry.name))
    return found


def server_sessions(db: Database) -> int:
    with db.connect("postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'preskool-dr-restore-%'"
        ).fetchone()
    return int(row[0])


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
    assert server_sessions(target) == 0
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
    assert server_sessions(target) == 0


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
    assert server_sessions(target) == 0


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
