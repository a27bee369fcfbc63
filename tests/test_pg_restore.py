"""The custom-format companion: written beside the plain backup from the same snapshot,
listed as an attribute of it, uploaded and expired with it, restored with pg_restore -j to
the same end state as the plain file, and only used after it verified. Also how step 6
chooses its loader (restore.method)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from preskool_dr.core.backup.companion import read_toc
from preskool_dr.core.backup.retention import apply_retention
from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base import procs
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import Cancelled, ConfigError, DrError
from preskool_dr.core.base.events import Event, Notice, Progress, StepStatus, utcnow
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal, LoadRecord
from preskool_dr.core.restore.loaders.pg_restore import (
    _Verbose,
    custom_restore,
    usable_companion,
)
from preskool_dr.core.restore.loaders.stream import RestoreError, stream_restore
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.meta import read_meta, write_meta
from tests.support.backups import backup_sql, insert_before, rewrite_backup
from tests.support.cli import run_cli
from tests.support.db import Database, as_app, libpq
from tests.support.leaks import assert_no_secrets
from tests.support.loaders import (
    AWKWARD_SCHEMA,
    assert_same,
    children_named,
    fingerprint,
    psql_children,
    schema_dump,
)
from tests.support.runbook import write_runbook

# PGPASSWORD set for the loaders
pytestmark = pytest.mark.usefixtures("pgpassword")


def config_for(tmp_path: Path, **restore: object) -> Config:
    """The repo's runbook without app commands (steps 1, 7-9 skip), restore.* as given."""
    runbook = write_runbook(
        tmp_path,
        app={"stop": [], "start": [], "migrate": [], "health_url": None},
        restore=restore or {"method": "auto", "jobs": 2},
    )
    return load_config(runbook)


def custom_backup(config: Config) -> Path:
    return run_backup(config, "daily", upload=False, custom=True).path


# ---------------------------------------------------------------- the companion backup


def test_backup_writes_a_verified_companion(dr_env: dict[str, str], tmp_path: Path) -> None:
    config = config_for(tmp_path)
    events: list[Event] = []
    result = run_backup(config, "daily", upload=False, custom=True, on_event=events.append)
    plain = result.path
    companion = companion_path(plain)
    assert companion.name == plain.name.replace(".sql.gz", ".dump")
    assert companion.is_file() and checksum.sidecar_path(companion).is_file()
    # md5sum --check works on both sidecars inside BACKUP_DIR, as the runbook does it
    for sidecar in (checksum.sidecar_path(plain), checksum.sidecar_path(companion)):
        check = subprocess.run(
            ["md5sum", "--check", sidecar.name], cwd=plain.parent, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
    assert len(read_toc(companion)) > 50
    assert not list(plain.parent.glob(".*.part"))
    texts = [e.text for e in events if isinstance(e, Notice)]
    assert any(t.startswith("Custom-format companion: ") for t in texts)
    # one record with the companion as an attribute, not a backup of its own
    records = catalog.list_backups(config, "local")
    assert [r.name for r in records] == [plain.name]
    assert records[0].has_custom and records[0].to_json()["has_custom"] is True
    assert_no_secrets(*texts, folder=plain.parent)


def test_plain_backup_has_no_companion(dr_env: dict[str, str], tmp_path: Path) -> None:
    """`backups.companion: false`: only the seed's .sql.gz (and --format plain, custom=False)."""
    runbook = write_runbook(tmp_path, backups={"companion": False})
    config = load_config(runbook)
    plain = run_backup(config, "daily", upload=False).path
    assert not companion_path(plain).exists()
    assert catalog.list_backups(config, "local")[0].has_custom is False


def test_companion_comes_from_the_same_snapshot(
    dr_env: dict[str, str],
    database: Database,
    scratch: Callable[[], Database],
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path)
    plain = custom_backup(config)
    from_plain, from_custom = scratch(), scratch()
    stream_restore(plain, libpq(from_plain))
    custom_restore(companion_path(plain), libpq(from_custom), jobs=2)
    assert_same(from_plain, from_custom)
    assert fingerprint(from_custom) == fingerprint(database)


@pytest.mark.slow
def test_default_backup_dumps_both_from_one_snapshot_while_the_app_writes(
    dr_env: dict[str, str],
    database: Database,
    scratch: Callable[[], Database],
    tmp_path: Path,
) -> None:
    """The default backup (backups.companion on) writes the companion too, and both dumps
    read the one exported snapshot: rows inserted from another connection all through the
    backup land in neither or in both, so the plain and the custom restore are equal, row
    for row, and equal to the counts taken in that snapshot."""
    with as_app(database) as conn:  # a bigger table: the dumps take a while
        conn.execute(
            "CREATE TABLE zz_bulk AS SELECT g AS n, md5(g::text) AS t FROM generate_series(1, 200000) g"
        )
    config = config_for(tmp_path)
    assert config.backups.companion is True
    stop, started = threading.Event(), threading.Event()
    inserted = 0

    def app_writes() -> None:
        nonlocal inserted
        with database.connect() as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO roles (name) VALUES (%s)", (f"during-{inserted}",))
                inserted += 1
                started.set()

    writer = threading.Thread(target=app_writes)
    writer.start()
    try:
        assert started.wait(30)
        before = inserted
        result = run_backup(config, "daily", upload=False)
        during = inserted - before
    finally:
        stop.set()
        writer.join()
    assert during > 0  # the app wrote while both dumps ran
    plain = result.path
    assert companion_path(plain).is_file() and result.meta.companion_md5 is not None
    from_plain, from_custom = scratch(), scratch()
    stream_restore(plain, libpq(from_plain))
    custom_restore(companion_path(plain), libpq(from_custom), jobs=2)
    assert schema_dump(from_plain) == schema_dump(from_custom)
    # Every table's rows are the snapshot's in both. A sequence's state is not: PostgreSQL
    # reads it outside MVCC, so each pg_dump saves the value it saw when it read it (one
    # dump alone does the same); both are past every id the snapshot holds.
    same, custom = fingerprint(from_plain), fingerprint(from_custom)
    seq = "public.roles_id_seq"
    assert {k: v for k, v in same.items() if k != seq} == {
        k: v for k, v in custom.items() if k != seq
    }
    counts = from_plain.row_counts()
    assert counts == from_custom.row_counts() == result.meta.row_counts
    assert database.row_counts()["roles"] > counts["roles"]  # rows came after the snapshot
    for restored, state in ((from_plain, same[seq]), (from_custom, custom[seq])):
        with restored.connect() as conn:
            row = conn.execute("SELECT max(id) FROM roles").fetchone()
        assert row is not None and isinstance(state, tuple) and state[0] >= row[0]


@pytest.mark.slow
def test_companion_is_uploaded_listed_and_expired_with_the_backup(s3: str, tmp_path: Path) -> None:
    config = config_for(tmp_path)
    old = run_backup(config, "daily", custom=True, at=utcnow().replace(year=2020)).path
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3).get("Contents", [])}
    prefix = config.backups.s3_prefix
    dump = companion_path(old).name
    assert {prefix + dump, prefix + dump + ".md5", prefix + old.name} <= keys
    remote = catalog.list_backups(config, "s3")
    assert [r.name for r in remote] == [old.name]
    assert remote[0].has_custom
    # retention takes the companion with the backup, locally and in S3
    deleted = apply_retention(config, "daily", keep="none", now=utcnow(), s3=True)
    assert deleted == 2
    assert not list(old.parent.glob("preskool-backup-*"))
    left = boto3.client("s3").list_objects_v2(Bucket=s3).get("Contents", [])
    assert left == []


def test_format_custom_is_refused_for_base_backups(dr_env: dict[str, str]) -> None:
    result = run_cli("backup", "--kind", "base", "--format", "custom")
    assert result.returncode == 2
    assert "--format custom is for logical backups" in result.stderr


# ---------------------------------------------------------------- pg_restore -j


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.slow
def test_custom_restore_equals_plain_on_awkward_schema(
    jobs: int,
    scratch: Callable[[], Database],
    tmp_path: Path,
) -> None:
    source = scratch()
    with as_app(source) as conn:
        conn.execute(AWKWARD_SCHEMA)
    env = {**libpq(source)}
    dump = tmp_path / "awkward.dump"
    subprocess.run(
        ["pg_dump", "--format=custom", "--no-password", f"--file={dump}"],
        env={**os.environ, **env},
        check=True,
    )
    plain = tmp_path / "awkward.sql.gz"
    out = subprocess.run(
        ["pg_dump", "--format=plain", "--no-password"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    ).stdout
    plain.write_bytes(gzip.compress(out))
    serial, custom = scratch(), scratch()
    stream_restore(plain, libpq(serial))
    events: list[Event] = []
    result = custom_restore(dump, libpq(custom), jobs=jobs, on_event=events.append)
    assert_same(serial, custom)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and all(e.unit == "items" for e in progress)
    assert progress[-1].done == progress[-1].total == len(read_toc(dump))
    assert "public.orders_2026" in result.tables_loaded


def test_interleaved_worker_lines_are_all_counted() -> None:
    """pg_restore -j's workers write the prefix and the message in separate writes, so two
    lines can come out as one with a doubled prefix and one with none (seen in CI and in
    the bench: a table missing from the loaded tables). Every item and table still counts,
    and an error's doubled level does not become part of its message."""
    text = (
        'pg_restore: pg_restore: processing data for table "public.a"\n'
        'processing data for table "public.b"\n'
        'pg_restore:pg_restore: processing data for table "public.c"\n'
        ' processing data for table "public.d"\n'
        "pg_restore: pg_restore: finished item 7 TABLE DATA public a preskool\n"
        "finished item 8 TABLE DATA public b preskool\n"
        "pg_restore:pg_restore:  finished item 9 TABLE DATA public c preskool\n"
        "finished item 10 TABLE DATA public d preskool\n"
        "pg_restore: pg_restore: error: error: could not execute query: ERROR:  boom\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stderr.write({text!r})"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    verbose = _Verbose(proc, parallel=True)
    assert proc.wait(timeout=30) == 0
    verbose.join()
    assert verbose.tables == ["public.a", "public.b", "public.c", "public.d"]
    assert verbose.snapshot() == (4, "public.d", 4)
    assert all(not line.startswith("pg_restore:") for line in verbose.lines)
    assert "pg_restore stopped of x.dump: could not execute query: ERROR: boom" in str(
        verbose.failure(1, Path("x.dump"))
    )


def test_custom_restore_failure_names_the_entry(
    dr_env: dict[str, str], database: Database, tmp_path: Path
) -> None:
    plain = custom_backup(config_for(tmp_path))
    # restoring over the live database: the first CREATE TABLE already exists
    with pytest.raises(RestoreError) as caught:
        custom_restore(companion_path(plain), libpq(database), jobs=2)
    message = str(caught.value)
    assert "pg_restore stopped at TOC entry" in message
    assert "already exists" in message
    assert children_named("pg_restore") == []
    assert_no_secrets(message)


def test_custom_restore_wrong_password(
    dr_env: dict[str, str], database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = custom_backup(config_for(tmp_path))
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(RestoreError, match="pg_restore could not connect"):
        custom_restore(companion_path(plain), libpq(database), jobs=2)


def test_custom_restore_cancel(
    dr_env: dict[str, str],
    scratch: Callable[[], Database],
    tmp_path: Path,
) -> None:
    plain = custom_backup(config_for(tmp_path))
    target = scratch()
    cancel = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, Progress):
            cancel.set()

    with pytest.raises(Cancelled):
        custom_restore(
            companion_path(plain), libpq(target), jobs=2, on_event=on_event, cancel=cancel
        )
    assert children_named("pg_restore") == []
    with target.connect("postgres") as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'preskool-dr-pg_restore-%'"
        ).fetchone()
    assert left == (0,)


# ---------------------------------------------------------------- only a verified companion


def test_companion_not_used_unless_it_verifies(dr_env: dict[str, str], tmp_path: Path) -> None:
    plain = custom_backup(config_for(tmp_path))
    plain_md5 = checksum.verify_file(plain, None).actual_md5
    companion = companion_path(plain)
    meta = read_meta(plain)
    assert meta is not None and meta.companion_md5 is not None  # `backup` recorded it
    notices: list[Event] = []
    usable = usable_companion(plain, plain_md5, on_event=notices.append)
    assert usable is not None and usable.path == companion
    assert usable.actual_md5 == meta.companion_md5
    # a meta whose MD5s are written in upper case (md5sum writes lower) names them too
    raw = json.loads(meta_path(plain).read_text())
    raw.update(md5=raw["md5"].upper(), companion_md5=raw["companion_md5"].upper())
    meta_path(plain).write_text(json.dumps(raw))
    assert usable_companion(plain, plain_md5) is not None
    write_meta(plain, meta)

    data = bytearray(companion.read_bytes())
    data[len(data) // 2] ^= 0xFF
    companion.write_bytes(bytes(data))
    notices.clear()
    assert usable_companion(plain, plain_md5, on_event=notices.append) is None
    warn = [e.text for e in notices if isinstance(e, Notice) and e.level == "warn"]
    assert warn and "is not the" in warn[0] and "restoring the plain backup" in warn[0]

    # its own sidecar matching is not enough: the meta's MD5 decides
    checksum.write_sidecar(companion, checksum.verify_file(companion, None).actual_md5)
    assert usable_companion(plain, plain_md5) is None

    # recorded, but not an archive pg_restore can read
    companion.write_bytes(b"not a pg_dump archive\n")
    bogus = checksum.verify_file(companion, None).actual_md5
    write_meta(plain, dataclasses.replace(meta, companion_md5=bogus))
    notices.clear()
    assert usable_companion(plain, plain_md5, on_event=notices.append) is None
    assert any("pg_restore cannot read" in e.text for e in notices if isinstance(e, Notice))
    # a meta that describes another plain file vouches for no companion
    assert usable_companion(plain, "0" * 32, on_event=notices.append) is None
    assert any("describes another file" in e.text for e in notices if isinstance(e, Notice))

    companion.unlink()
    assert usable_companion(plain, plain_md5) is None


def test_a_hash_made_elsewhere_is_held_to_the_meta(dr_env: dict[str, str], tmp_path: Path) -> None:
    """`hashed` (the companion's MD5 as a load started early computed it) spares a second
    read, and is held to the MD5 the meta recorded like a read of its own."""
    plain = custom_backup(config_for(tmp_path))
    plain_md5 = checksum.verify_file(plain, None).actual_md5
    read = checksum.verify_file(companion_path(plain), None)
    assert usable_companion(plain, plain_md5, hashed=read) == read
    other = dataclasses.replace(read, actual_md5="0" * 32)
    notices: list[Event] = []
    assert usable_companion(plain, plain_md5, hashed=other, on_event=notices.append) is None
    assert any("is not the" in e.text for e in notices if isinstance(e, Notice))


def test_a_table_of_contents_is_read_once_per_file(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 4 and step 6's load both ask for the companion's table of contents: one
    `pg_restore --list` serves both, until the file is written."""
    dump = companion_path(custom_backup(config_for(tmp_path)))
    calls: list[list[str]] = []
    run_command = procs.run_command

    def counted(argv: list[str], **kwargs: Any) -> procs.CommandResult:
        calls.append(argv)
        return run_command(argv, **kwargs)

    monkeypatch.setattr(procs, "run_command", counted)
    first = read_toc(dump)
    assert first and read_toc(dump) == first
    assert calls == []  # `backup` read it as it checked the companion it wrote
    copy = tmp_path / "copy.dump"
    copy.write_bytes(dump.read_bytes())
    os.replace(copy, dump)  # the same bytes, another inode: read again, once
    assert read_toc(dump) == first and read_toc(dump) == first and len(calls) == 1
    dump.write_bytes(b"not an archive")
    with pytest.raises(DrError, match="pg_restore cannot read"):
        read_toc(dump)
    with pytest.raises(DrError, match="pg_restore cannot read"):
        read_toc(dump)
    assert len(calls) == 3  # a refusal is not kept


# ---------------------------------------------------------------- step 6 chooses its loader


def restore_detail(
    config: Config, backup: Path, target: str
) -> tuple[str, list[Event], LoadRecord | None]:
    """Step 6's detail, the events and the journal's record of the loader (read back from
    the journal file, as a resumed run or a report sees it)."""
    events: list[Event] = []
    engine = Engine.start(
        config,
        RunOptions(backup_spec=str(backup), target_db=target, recreate_mode="drop"),
        on_event=events.append,
    )
    try:
        assert engine.run_all(target), [e for e in events if isinstance(e, Notice)]
        record = engine.step("restore")
        assert record.status is StepStatus.DONE
        saved = Journal(config.state_dir).load(engine.state.run_id)
        return record.detail, events, saved.load
    finally:
        engine.close()


NO_COMPANION = "no usable custom-format companion (.dump) beside the backup"
VERIFIED = "step 4 verified the custom-format companion"


@pytest.mark.parametrize(
    ("method", "companion", "jobs", "loader", "said"),
    [
        # the default backup has the companion: auto loads it with pg_restore -j
        ("auto", None, 2, "pg_restore", f"restore.method is auto and {VERIFIED})"),
        pytest.param("auto", True, 2, "pg_restore", f"restore.method is auto and {VERIFIED})", marks=pytest.mark.slow),
        # no companion: the parallel plain loader, then serial when one session is all
        ("auto", False, 2, "parallel", f"(2 parallel sessions: restore.method is auto: {NO_COMPANION})"),
        ("auto", False, 1, "serial", f"(serial: {NO_COMPANION}, and restore.jobs gives one session)"),
        pytest.param("parallel", False, 2, "parallel", f"(2 parallel sessions: restore.method is parallel: {NO_COMPANION})", marks=pytest.mark.slow),
        pytest.param("parallel", True, 2, "pg_restore", f"restore.method is parallel and {VERIFIED})", marks=pytest.mark.slow),
        ("serial", True, 2, "serial", "(serial: restore.method is serial)"),
    ],
)  # fmt: skip
def test_step_6_loader_choice(
    method: str,
    companion: bool | None,
    jobs: int,
    loader: str,
    said: str,
    dr_env: dict[str, str],
    database: Database,
    tmp_path: Path,
) -> None:
    """Step 6 says which loader it used and why: in a notice when it starts, in its detail
    and in the journal (`load`)."""
    config = config_for(tmp_path, method=method, jobs=jobs)
    backup = run_backup(config, "daily", upload=False, custom=companion).path
    assert companion_path(backup).is_file() == (companion is not False)
    counts = database.row_counts()
    detail, events, load = restore_detail(config, backup, database.name)
    assert said in detail
    assert load is not None and load.loader == loader
    assert f"({load.how}: {load.reason})" in detail
    notices = [e.text for e in events if isinstance(e, Notice) and e.step_id == "restore"]
    assert f"{backup.name}: {load.how}, because {load.reason}" in " ".join(notices)
    assert database.row_counts() == counts  # and validation passed (row counts vs meta)
    assert psql_children() == [] and children_named("pg_restore") == []


def test_bad_companion_falls_back_to_the_plain_file(
    dr_env: dict[str, str], database: Database, tmp_path: Path
) -> None:
    config = config_for(tmp_path, method="parallel", jobs=2)
    backup = custom_backup(config)
    companion_path(backup).write_bytes(b"damaged")
    detail, events, load = restore_detail(config, backup, database.name)
    assert (
        "(2 parallel sessions: restore.method is parallel: its custom-format companion was "
        "not accepted (see the warning above))" in detail
    )
    assert load is not None and load.loader == "parallel"
    assert any(isinstance(e, Notice) and e.level == "warn" and "not used" in e.text for e in events)


@pytest.mark.parametrize("method", ["auto", pytest.param("parallel", marks=pytest.mark.slow)])
def test_a_doubt_before_anything_loaded_is_recorded_as_serial(
    method: str, dr_env: dict[str, str], database: Database, tmp_path: Path
) -> None:
    """A statement planted among pg_dump's opening settings (which every parallel session
    would replay): the scanner's doubt in the pre-data hands the whole file to the serial
    stream, and the journal says serial and why, not "parallel sessions"."""
    config = config_for(tmp_path, method=method, jobs=2)
    backup = run_backup(config, "daily", upload=False, custom=False).path
    planted = b"CREATE TABLE public.zz_once (n integer);\n"
    rewrite_backup(backup, insert_before(backup_sql(backup), b"SET row_security = off;\n", planted))
    counts = database.row_counts()
    detail, events, load = restore_detail(config, backup, database.name)
    assert load is not None and load.loader == "serial"
    assert "the parallel loader cannot split it with certainty" in load.reason
    assert "session settings" in load.reason
    assert "parallel sessions" not in detail and "(serial: at line " in detail
    said = [e.text for e in events if isinstance(e, Notice)]
    assert any("is loaded serially: at line" in text for text in said), said
    (journal,) = (config.state_dir / "runs").glob("*.json")
    steps = json.loads(journal.read_text())["steps"]
    assert [s["detail"] for s in steps if s["id"] == "restore"] == [detail]
    assert database.row_counts() == {**counts, "zz_once": 0}


def test_restore_settings_are_validated(tmp_path: Path) -> None:
    for restore, words in (
        ({"method": "fast"}, "restore.method 'fast': use one of auto, serial, parallel"),
        ({"jobs": -1}, "restore.jobs must be 0"),
        ({"jobs": "many"}, "restore.jobs must be a whole number"),
    ):
        runbook = write_runbook(tmp_path, restore=restore)
        with pytest.raises(ConfigError, match=words):
            load_config(runbook)
