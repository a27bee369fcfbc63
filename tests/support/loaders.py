"""What the loader tests compare and watch: a schema full of the awkward parts pg_dump
splits, two databases that must end up the same, psql processes and server sessions that
must not outlive a load, and a lock that holds a load at a known place."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from preskool_dr.demo.cluster import Cluster
from tests.support.db import Database, libpq
from tests.support.leaks import PASSWORD

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
    """Row count and checksum of every relation holding rows (rows in their text form,
    sorted: the same for any order of load), sequence states, large objects (count, then
    each one's oid and md5), extensions. A materialized view left WITH NO DATA has no rows
    to read: its entry says so (and a restore that filled it would differ)."""
    result: dict[str, object] = {}
    with db.connect() as conn:
        relations = conn.execute(
            """SELECT n.nspname, c.relname, c.relkind, c.relispopulated FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'm', 'S')
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
               ORDER BY 1, 2"""
        ).fetchall()
        for schema, name, kind, populated in relations:
            ident = sql.Identifier(schema, name)
            if kind == "S":
                row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(ident))
            elif not populated:
                result[f"{schema}.{name}"] = "not populated"
                continue
            else:
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                        " FROM ONLY {} t"
                    ).format(ident)
                )
            result[f"{schema}.{name}"] = row.fetchone()
        result["large objects"] = conn.execute(
            "SELECT count(*), array_agg(oid::text || ' ' || md5(lo_get(oid)) ORDER BY oid)"
            " FROM pg_largeobject_metadata"
        ).fetchone()
        result["extensions"] = conn.execute(
            "SELECT array_agg(e.extname || ' ' || e.extversion || ' in ' || n.nspname"
            " ORDER BY e.extname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        ).fetchone()
    return result


def assert_same(serial: Database, parallel: Database) -> None:
    assert schema_dump(parallel) == schema_dump(serial)
    assert fingerprint(parallel) == fingerprint(serial)


def children_named(program: str, parent: int | None = None, *, live: bool = False) -> list[int]:
    """`program` processes whose parent is `parent` (default: this test process; none may
    outlive a restore), read from /proc; another xdist worker's do not count. `live`:
    zombies (exited, not yet reaped) do not count either."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if name == program and int(ppid) == parent and not (live and state == "Z"):
            found.append(int(entry.name))
    return found


def psql_children() -> list[int]:
    return children_named("psql")


def live_psql_children(parent: int) -> list[int]:
    return children_named("psql", parent, live=True)


def server_sessions(db: Database) -> int:
    with db.connect("postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'preskool-dr-restore-%'"
        ).fetchone()
    return int(row[0])


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll (not a timed assertion: the limit only stops a hung test)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class LockWhenCreated:
    """Holds a SHARE lock on `table` in `dbname` as soon as the restore creates it, so psql's
    COPY into it waits: a deterministic stand-in for a slow restore, not a timing guess."""

    def __init__(self, cluster: Cluster, dbname: str, table: str) -> None:
        self.cluster, self.dbname, self.table = cluster, dbname, table
        self.release = threading.Event()
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _exists(self) -> bool:
        try:
            with psycopg.connect(
                self.cluster.conninfo(self.dbname), password=PASSWORD, autocommit=True
            ) as conn:
                return (
                    conn.execute("SELECT to_regclass(%s)", (f"public.{self.table}",)).fetchone()[0]
                    is not None
                )
        except psycopg.OperationalError:
            return False  # the database does not exist yet

    def _hold(self) -> None:
        wait_until(self._exists, f"{self.table} to be created in {self.dbname}")
        conn = psycopg.connect(self.cluster.conninfo(self.dbname), password=PASSWORD)
        try:
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(self.table)))
            self.locked.set()
            self.release.wait()
            conn.rollback()
        except psycopg.OperationalError:
            pass  # the code under test ended this session to drop the database: fine
        finally:
            conn.close()

    def waiting(self) -> bool:
        """Some session in the database waits for our lock."""
        with psycopg.connect(self.cluster.conninfo(), password=PASSWORD, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock'",
                (self.dbname,),
            ).fetchone()
            return bool(row and row[0])

    def wait_for_waiter(self) -> None:
        wait_until(self.locked.is_set, f"the lock on {self.table}")
        wait_until(self.waiting, "psql to wait for the lock")

    def __enter__(self) -> LockWhenCreated:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(timeout=30)
