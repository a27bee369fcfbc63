"""Each loader gives exactly the source database: a restore through the real command
(`preskool-dr backup`, then `preskool-dr restore ... --confirm`) of a database holding the
PreSkool schema plus a hard one (tests/support/fidelity.py: quoted and unicode names,
dollar-quoted bodies that read like COPY data, multi-line comments, list/range/default
partitions, inheritance, generated and identity columns, materialized views, moved
sequences, large objects, extensions, domains, enums, triggers, views, cross-schema keys,
comments, RLS policies, defaults calling functions) is compared with its source:
`pg_dump --schema-only` text, per-table data digests, sequence values, large objects and
extensions. Serial stream, parallel plain and the custom companion with pg_restore."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from preskool_dr.core.base.events import Event, LogLine, Notice
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.loaders.parallel import parallel_restore
from tests.support.backups import dump_gz
from tests.support.db import Database, as_app, drop_database, libpq
from tests.support.fidelity import (
    UNI,
    WEIRD,
    assert_restored_equal,
    copy_of,
    hard_schema,
    missing_extensions,
    snapshot,
)
from tests.support.runbook import write_runbook
from tests.support.site import Site

# (restore.method, backup arguments, the loader step 6 must have used)
LOADERS = {
    "serial": ("serial", [], "serial"),
    "parallel": ("parallel", ["--format", "plain"], "parallel"),
    "custom": ("auto", ["--format", "custom"], "pg_restore"),
}


@pytest.fixture
def site_app() -> str:
    """The recording app: its migrate adds nothing to the restored database."""
    return "recording"


@pytest.fixture
def hard_site(site: Site) -> Iterator[Site]:
    """The site's database with the hard schema on top of PreSkool's, made by the app role."""
    missing = missing_extensions(site.db)
    if missing:
        warnings.warn(
            f"extensions {', '.join(missing)} not installed (PostgreSQL contrib): "
            "the fidelity test runs without its extension part",
            stacklevel=1,
        )
    with as_app(site.db) as conn:
        conn.execute(hard_schema(extensions=not missing))
    yield site


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.slow
def test_restore_equals_source(loader: str, hard_site: Site) -> None:
    site = hard_site
    method, backup_args, used = LOADERS[loader]
    write_runbook(site.root, app=site.app, restore={"method": method, "jobs": 2})
    made = site.cli("backup", "--no-upload", *backup_args)
    assert made.returncode == 0, made.stdout + made.stderr
    target = Database(site.db.cluster, f"{site.db.name}_fidelity")
    try:
        done = site.cli("restore", "latest", "--confirm", target.name, "--target-db", target.name)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_restored_equal(site.db, target)
        run = site.the_run()
        assert run.load is not None and run.load.loader == used, run.load
        assert f"({run.load.how}: {run.load.reason})" in run.step(StepId.RESTORE).detail
    finally:
        drop_database(site.db.cluster, target.name)


@pytest.mark.usefixtures("pgpassword")  # for pg_dump and the loader's psql sessions
def test_parallel_in_small_parts_equals_source(
    scratch: Callable[[], Database], tmp_path: Path
) -> None:
    """The command's parallel load cuts no table this small into parts: here every table
    over 4 KiB is cut, so rows full of tabs, backslashes, `\\.` and newlines end up on
    both sides of a cut, and the result is still the source."""
    source = scratch()
    with as_app(source) as conn:
        conn.execute(hard_schema(extensions=not missing_extensions(source)))
    backup = dump_gz(source, tmp_path / "hard.sql.gz")
    target = scratch()
    events: list[Event] = []
    parallel_restore(backup, libpq(target), jobs=3, on_event=events.append, split_bytes=4096)
    assert not [e for e in events if isinstance(e, Notice) and "serially" in e.text]
    cut = [e.text for e in events if isinstance(e, LogLine) and ": part 2, " in e.text]
    assert any("Bestellungen" in line for line in cut), cut
    assert_restored_equal(source, target)


# What a restore could get wrong, one at a time, on a perfect copy of the source.
DAMAGE = {
    "a row": 'UPDATE "Sales Ops"."Order Lines" SET qty = qty + 1 WHERE "Line No" = 1',
    "a sequence's value": f'SELECT setval(\'{UNI}."seq ""q"" 🔢"\', 4243)',
    "a sequence called or not": f"SELECT setval('{WEIRD}.never_called', 9100, true)",
    "a large object": "SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata",
    "a large object's data": "SELECT lo_put(max(oid), 0, '\\x00') FROM pg_largeobject_metadata",
    "a materialized view filled": f"REFRESH MATERIALIZED VIEW {WEIRD}.unfilled",
    "a comment": f"COMMENT ON SCHEMA {WEIRD} IS 'a schema; with'",
    "a policy": f'DROP POLICY "insert any" ON {UNI}."Kunden 👥"',
    "an extension": "DROP EXTENSION citext CASCADE",
}


@pytest.mark.usefixtures("pgpassword")  # for pg_dump
@pytest.mark.slow
def test_the_comparison_sees_each_kind_of_difference(
    scratch: Callable[[], Database],
) -> None:
    """The check is not vacuous: a perfect copy passes it, and each single difference a
    loader could make fails it."""
    source = scratch()
    with as_app(source) as conn:
        conn.execute(hard_schema(extensions=not missing_extensions(source)))
    copies = []
    try:
        perfect = copy_of(source, f"{source.name}_copy")
        copies.append(perfect)
        taken = snapshot(source)
        assert_restored_equal(taken, perfect)
        for n, (what, damage) in enumerate(DAMAGE.items()):
            if what == "an extension" and missing_extensions(source):
                continue
            damaged = copy_of(source, f"{source.name}_damaged{n}")
            copies.append(damaged)
            with damaged.connect() as conn:
                conn.execute(damage)
            with pytest.raises(AssertionError):
                assert_restored_equal(taken, damaged)
                pytest.fail(f"the comparison missed {what}")
    finally:
        for copy in copies:
            drop_database(source.cluster, copy.name)
