"""Step 6's load started while step 4 verifies (core/restore/steps/early_load.py): headless
runs overlap the checks with the load into the closed loading database, and step 6 takes
that load only when it read the very files step 4 verified. Real cluster, real loaders."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from preskool_dr.core.base.events import Event, Notice, Progress, StepStatus, ignore_events
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.steps import early_load
from preskool_dr.core.restore.steps.early_load import EARLY
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path
from preskool_dr.core.storage.meta import read_meta, write_meta
from tests.support.runbook import write_runbook
from tests.support.site import Site


@pytest.mark.parametrize("method", ["auto", "serial"])
def test_the_headless_restore_loads_while_step_4_verifies(site: Site, method: str) -> None:
    write_runbook(site.root, app=site.app, restore={"method": method})
    site.backup()
    counts, total = site.db.row_counts(), site.checksum()
    site.change_data()

    result = site.restore()

    assert result.returncode == 0, result.stdout + result.stderr
    restored = site.db.row_counts()
    restored.pop("alembic_version")
    assert restored == counts and site.checksum() == total
    out = result.stdout
    # said before step 4 runs; the loader's own line waits for step 6 (held back meanwhile)
    starts = out.index("step 6's load starts now")
    assert starts < out.index("step 4/9  verify       DONE")
    assert out.index("step 6/9  restore      RUNNING") < out.index("[INFO]  loading ")
    state = site.the_run()
    assert state.load is not None and state.load.early
    assert EARLY in state.step("restore").detail
    assert site.loading_databases() == []
    site.assert_no_leak(result)


def test_restore_early_load_false_waits_for_step_4(site: Site) -> None:
    write_runbook(site.root, app=site.app, restore={"early_load": False})
    site.backup()

    result = site.restore()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "starts now" not in result.stdout
    state = site.the_run()
    assert state.load is not None and not state.load.early
    assert EARLY not in state.step("restore").detail


def start_engine(site: Site, backup: Path, events: list[Event] | None = None) -> Engine:
    """A headless run of `backup` into the site's database, its events kept in `events`."""
    return Engine.start(
        site.config(),
        RunOptions(backup_spec=str(backup), target_db=site.db.name),
        on_event=events.append if events is not None else ignore_events,
    )


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_backup_whose_md5_fails_is_never_loaded_early(site: Site) -> None:
    """The early load hashes what it reads through its open descriptor first: a backup
    that is not what its sidecar says runs no SQL anywhere, as without the early load."""
    write_runbook(site.root, app=site.app, backups={"companion": False})
    backup = site.backup()
    site.change_data()
    before = site.checksum()
    flip_a_byte(backup)

    result = site.restore()

    assert result.returncode == 1
    assert "starts now" not in result.stdout
    assert "has not been touched" in result.stdout
    assert site.checksum() == before
    assert site.loading_databases() == []
    state = site.the_run()
    assert state.step("verify").status is StepStatus.FAILED
    assert state.verify is not None and not state.verify.md5_ok
    assert state.load is None


def test_a_companion_whose_md5_fails_is_never_loaded_the_plain_file_is(site: Site) -> None:
    backup = site.backup()
    counts = site.db.row_counts()
    flip_a_byte(companion_path(backup))

    result = site.restore()

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"step 6's load starts now: {backup.name} has the MD5" in result.stdout
    state = site.the_run()
    assert state.load is not None and state.load.early and state.load.loader != "pg_restore"
    restored = site.db.row_counts()
    restored.pop("alembic_version")
    assert restored == counts


def test_a_backup_that_fails_the_rest_of_step_4_drops_the_early_load(site: Site) -> None:
    """The MD5 matches (the sidecar was written for the damaged file), so the load starts;
    step 4's content check fails: the load is stopped and its database dropped."""
    backup = site.backup()
    site.change_data()
    before = site.checksum()
    text = gzip.decompress(backup.read_bytes())
    cut = text.rindex(b"\n", 0, len(text) * 3 // 4) + 1  # whole lines, no trailer
    backup.write_bytes(gzip.compress(text[:cut]))
    checksum.write_sidecar(backup, checksum.verify_file(backup, None).actual_md5)

    result = site.restore()

    assert result.returncode == 1
    assert "step 6's load starts now" in result.stdout
    assert "has not been touched" in result.stdout
    assert site.checksum() == before
    assert site.loading_databases() == []
    state = site.the_run()
    assert state.step("verify").status is StepStatus.FAILED
    assert state.verify is not None and state.verify.dump_error
    assert state.step("recreate_db").status is StepStatus.PENDING
    assert state.load is None  # nothing was loaded as far as the journal knows
    assert site.calls() == []
    assert not (site.state_dir / "load" / f"{state.run_id}-early").exists()


def test_step_4_reads_each_file_once_beside_a_companion_load(site: Site) -> None:
    """The companion the early load hashed through the file it holds is not read again by
    step 4; the .sql.gz, which step 6 does not load, is read for its MD5 (step 4) and again
    by step 5's gate, never inflated."""
    backup = site.backup()
    counts = site.db.row_counts()
    events: list[Event] = []
    engine = start_engine(site, backup, events)
    try:
        assert engine.run_all(site.db.name)
    finally:
        engine.close()

    companion = companion_path(backup)
    # every read of a file begins with a Progress of 0 bytes of its size
    reads = Counter(
        e.total for e in events if isinstance(e, Progress) and e.phase == "verify" and not e.done
    )
    assert reads[companion.stat().st_size] == 1, reads
    assert reads[backup.stat().st_size] == 2, reads
    state = engine.state
    assert state.load is not None and state.load.early and state.load.loader == "pg_restore"
    assert state.verify is not None and state.verify.md5_ok
    assert state.verify.skipped is not None
    assert state.verify.skipped.startswith(f"step 6 loads {companion.name}")
    restored = site.db.row_counts()
    restored.pop("alembic_version")
    assert restored == counts


@pytest.mark.parametrize("method", ["auto", "serial"])
def test_the_plain_files_gzip_is_checked_when_it_is_what_loads(site: Site, method: str) -> None:
    """A .sql.gz damaged before its checksums were taken (its sidecar and meta name the
    damaged bytes) beside a whole companion: the default restore loads the companion and
    says the .sql.gz was read for its MD5 only; with restore.method serial the .sql.gz is
    what loads, and step 4's gzip check refuses it before anything is touched."""
    write_runbook(site.root, app=site.app, restore={"method": method})
    backup = site.backup()
    counts, total = site.db.row_counts(), site.checksum()
    site.change_data()
    before = site.checksum()
    flip_a_byte(backup)
    md5 = checksum.verify_file(backup, None).actual_md5
    checksum.write_sidecar(backup, md5)
    meta = read_meta(backup)
    assert meta is not None
    write_meta(backup, dataclasses.replace(meta, md5=md5))

    result = site.restore()

    state = site.the_run()
    assert state.verify is not None and state.verify.md5_ok
    if method == "auto":
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Gzip and content not read: step 6 loads" in result.stdout
        assert state.verify.skipped and state.verify.gzip_ok
        assert state.load is not None and state.load.loader == "pg_restore"
        restored = site.db.row_counts()
        restored.pop("alembic_version")
        assert restored == counts and site.checksum() == total
    else:
        assert result.returncode == 1
        assert "Gzip integrity check failed" in result.stdout
        assert "has not been touched" in result.stdout
        assert not state.verify.gzip_ok and state.verify.skipped is None
        assert state.step("recreate_db").status is StepStatus.PENDING
        assert site.checksum() == before
    assert site.loading_databases() == []


def replace_the_companion(backup: Path, early: early_load.EarlyLoad) -> str:
    """The companion the load opened is replaced (same bytes, another inode): step 4
    accepts the new one, not the file the load read."""
    assert early.loads_companion
    held = companion_path(backup)
    copy = backup.with_name("copy.tmp")
    shutil.copy2(held, copy)
    os.replace(copy, held)
    return "the load started early is dropped: the custom-format companion it loaded changed"


def fail_the_load(backup: Path, early: early_load.EarlyLoad) -> str:
    """The load ends in an error before step 6 (here: stopped as it began; in life, the
    server's trouble)."""
    early.cancel.set()
    assert early._thread is not None
    early._thread.join()
    assert early.error is not None
    return "the load started early is dropped: it failed"


@pytest.mark.parametrize("spoil", [replace_the_companion, fail_the_load])
def test_a_load_step_6_may_not_take_is_dropped_and_loaded_again_through_the_gate(
    site: Site, spoil: Callable[[Path, early_load.EarlyLoad], str]
) -> None:
    backup = site.backup()
    counts = site.db.row_counts()
    site.change_data()
    events: list[Event] = []
    engine = start_engine(site, backup, events)
    try:
        early = early_load.start(engine, "verify", threading.Event())
        assert early is not None
        engine.early_load = early
        says = spoil(backup, early)

        assert engine.run_all(site.db.name)
    finally:
        engine.close()

    warnings = [e.text for e in events if isinstance(e, Notice) and e.level == "warn"]
    assert any(says in w for w in warnings), warnings
    assert engine.state.load is not None and not engine.state.load.early
    restored = site.db.row_counts()
    restored.pop("alembic_version")
    assert restored == counts
    assert site.loading_databases() == []
    assert not (site.config().state_dir / "load" / f"{engine.state.run_id}-early").exists()


def test_a_companion_that_appears_beside_a_plain_load_is_not_taken_instead(site: Site) -> None:
    """The load started early reads the .sql.gz (no companion then); a valid companion
    comes back before step 4 looks for one: step 4 reads the .sql.gz whole, as it is what
    loads, and step 6 takes that load."""
    backup = site.backup()
    counts = site.db.row_counts()
    site.change_data()
    companion = companion_path(backup)
    away = companion.with_name("away.tmp")
    os.rename(companion, away)
    engine = start_engine(site, backup)
    try:
        early = early_load.start(engine, "verify", threading.Event())
        assert early is not None and not early.loads_companion
        engine.early_load = early
        os.rename(away, companion)

        assert engine.run_all(site.db.name)
    finally:
        engine.close()

    state = engine.state
    assert state.verify is not None and state.verify.skipped is None and state.verify.gzip_ok
    assert state.load is not None and state.load.early and state.load.loader != "pg_restore"
    restored = site.db.row_counts()
    restored.pop("alembic_version")
    assert restored == counts


def test_an_engine_closed_before_step_6_stops_the_early_load(site: Site) -> None:
    """A run that ends before step 6 (an interrupted operator, a failed step 5) leaves no
    load running and no loading database behind."""
    backup = site.backup()
    engine = start_engine(site, backup)
    try:
        engine.early_load = early_load.start(engine, "verify", threading.Event())
        assert engine.early_load is not None
        assert site.loading_databases() == [engine.early_load.loading]
    finally:
        engine.close()
    assert engine.early_load is None
    assert site.loading_databases() == []
    assert backup.is_file()
