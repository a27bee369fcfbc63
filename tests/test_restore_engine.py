"""The nine-step restore, headless, against the real cluster, the real stand-in app and
real child processes: the runbook's section 3.2, done safely and resumably."""

from __future__ import annotations

import gzip
import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.errors import LockedError, UsageError
from preskool_dr.core.base.events import Event, Progress, StepStatus
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.journal import Journal
from preskool_dr.core.restore.steps.db_names import aside_name
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path
from tests.support.db import make_database
from tests.support.leaks import PASSWORD
from tests.support.runbook import write_runbook
from tests.support.site import Site


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.exists():
            yield from (p for p in root.rglob("*") if p.is_file())


def test_full_headless_restore_brings_back_the_backup(site: Site, tmp_path: Path) -> None:
    backup = site.backup()
    counts_at_backup, sum_at_backup = site.db.row_counts(), site.checksum()
    site.change_data()
    assert site.db.row_counts() != counts_at_backup

    result = site.cli("restore", "latest", "--confirm", site.db.name)

    assert result.returncode == 0, result.stdout + result.stderr
    restored = site.db.row_counts()
    assert restored.pop("alembic_version") == 1  # step 7 ran the (stand-in) migration
    assert restored == counts_at_backup
    assert site.checksum() == sum_at_backup
    # the runbook's order, with the backup checked before the app goes down
    assert site.calls() == ["stop", "migrate", "start"]
    lines = result.stdout.splitlines()
    order = [line.split()[3] for line in lines if " step " in line and "RUNNING" in line]
    assert order == [
        "identify",
        "download",
        "verify",
        "app_offline",
        "recreate_db",
        "restore",
        "migrate",
        "app_online",
        "health",
    ]
    assert "RESULT DONE" in result.stdout
    # the old database is kept aside, with the changed data in it
    (state,) = Journal(site.config().state_dir).runs()
    assert state.result == "done"
    assert state.aside_db == aside_name(site.db.name, state.run_id)
    assert site.db.exists(state.aside_db)
    assert site.checksum(state.aside_db) != sum_at_backup
    assert state.destroyed and state.destroyed["existed"]
    assert (
        state.backup
        and state.backup.md5 == checksum.read_sidecar(checksum.sidecar_path(backup)).md5
    )
    assert f"--drop-aside {state.run_id}" in result.stdout
    # the journal is private and no secret is written anywhere or printed
    journal = Journal(site.config().state_dir).path(state.run_id)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    for path in files_under(site.config().state_dir, backup.parent, site.app_dir):
        assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in result.stdout + result.stderr

    # dropping the aside copy needs its name typed
    wrong = site.cli("restore", "--drop-aside", state.run_id, "--confirm", site.db.name)
    assert wrong.returncode == 2 and site.db.exists(state.aside_db)
    dropped = site.cli("restore", "--drop-aside", state.run_id, "--confirm", state.aside_db)
    assert dropped.returncode == 0, dropped.stderr
    assert not site.db.exists(state.aside_db)


@pytest.mark.slow
def test_wrong_confirmation_changes_nothing(site: Site) -> None:
    site.backup()
    before = site.db.row_counts()
    for confirm in ("preskool_db_typo", ""):
        result = site.cli("restore", "latest", "--confirm", confirm)
        assert result.returncode == 2
        assert "nothing was changed" in result.stderr
    assert site.db.row_counts() == before
    assert site.calls() == []
    assert Journal(site.config().state_dir).runs() == []


def test_missing_backup_is_exit_2(site: Site) -> None:
    result = site.cli(
        "restore", "preskool-backup-20200101_000000.sql.gz", "--confirm", site.db.name
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def _corrupt_bitflip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # recompute the sidecar so only the gzip check can catch it
    checksum.write_sidecar(path, checksum.verify_file(path, None).actual_md5)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _md5_mismatch(path: Path) -> None:
    checksum.sidecar_path(path).write_text(f"{'0' * 32}  {path.name}\n")


def _rewrite_with_md5(path: Path, text: bytes) -> None:
    path.write_bytes(gzip.compress(text))
    checksum.write_sidecar(path, checksum.verify_file(path, None).actual_md5)


def _not_a_dump(path: Path) -> None:
    # a valid gzip with a matching sidecar, holding something that is not pg_dump output
    _rewrite_with_md5(path, b"id,first_name\n1,Ada\n")


def _cut_at_a_line(path: Path) -> None:
    # the real dump cut short at a line boundary, closed as gzip again, sidecar matching
    text = gzip.decompress(path.read_bytes())
    _rewrite_with_md5(path, text[: text.index(b"\n", text.index(b"COPY public.students")) + 1])


@pytest.mark.parametrize(
    ("damage", "md5_ok", "gzip_ok", "dump_bad"),
    [
        (_corrupt_bitflip, True, False, False),
        (_truncate, False, False, False),
        pytest.param(_md5_mismatch, False, True, False, marks=pytest.mark.slow),
        (_not_a_dump, True, True, True),
        (_cut_at_a_line, True, True, True),
    ],
)
def test_bad_backup_stops_before_anything_is_touched(
    site: Site, damage, md5_ok: bool, gzip_ok: bool, dump_bad: bool
) -> None:
    backup = site.backup()
    site.change_data()
    before, before_sum = site.db.row_counts(), site.checksum()
    damage(backup)

    # --mode drop: a backup that passed step 4 would replace production with no copy kept
    result = site.cli("restore", "latest", "--confirm", site.db.name, "--mode", "drop")

    assert result.returncode == 1
    assert "verify" in result.stdout and "FAILED" in result.stdout
    assert "has not been touched" in result.stdout
    assert site.calls() == []  # the app was never taken offline
    assert site.db.row_counts() == before and site.checksum() == before_sum
    (state,) = Journal(site.config().state_dir).runs()
    assert state.step("recreate_db").status is StepStatus.PENDING
    assert state.aside_db is None
    # the journal (and the checksum panel drawn from it) says which check failed
    assert state.verify is not None
    assert (state.verify.md5_ok, state.verify.gzip_ok) == (md5_ok, gzip_ok)
    assert bool(state.verify.dump_error) is dump_bad


@pytest.mark.slow
def test_sql_error_mid_load_fails_with_the_statement_and_rolls_back(site: Site) -> None:
    backup = site.backup()
    site.change_data()
    before_sum = site.checksum()
    # a backup whose SQL breaks half way: valid gzip, valid md5, bad statement
    sql_text = gzip.decompress(backup.read_bytes()).decode()
    cut = sql_text.index("COPY public.students")
    broken = sql_text[:cut] + "INSERT INTO no_such_table VALUES (1);\n" + sql_text[cut:]
    backup.write_bytes(gzip.compress(broken.encode()))
    checksum.write_sidecar(backup, checksum.verify_file(backup, None).actual_md5)

    result = site.cli("restore", backup.name, "--confirm", site.db.name)

    assert result.returncode == 1
    assert "no_such_table" in result.stdout
    (state,) = Journal(site.config().state_dir).runs()
    assert state.step("restore").status is StepStatus.FAILED
    assert f"--rollback {state.run_id}" in result.stdout
    assert site.db.exists(state.aside_db or "")

    rolled = site.cli("restore", "--rollback", state.run_id, "--confirm", site.db.name)
    assert rolled.returncode == 0, rolled.stderr
    assert site.checksum() == before_sum
    assert not site.db.exists(state.aside_db or "")
    assert Journal(site.config().state_dir).load(state.run_id).result == "rolled-back"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("early", "kill_at"),
    [
        (False, "restore      RUNNING"),  # step 6's own load
        (True, "step 6's load starts now"),  # the load started while step 4 verifies
    ],
)
def test_kill_9_during_the_load_then_resume(
    tmp_path: Path,
    site: Site,
    pg_cluster,
    monkeypatch: pytest.MonkeyPatch,
    early: bool,
    kill_at: str,
) -> None:
    big = make_database(pg_cluster, scale=0.6)  # a load long enough to kill in the middle
    monkeypatch.setenv("DB_NAME", big.name)
    env = site.env()
    write_runbook(site.root, app=site.app, restore={"early_load": early})
    site = replace(site, db=big)
    site.backup()
    counts, total = big.row_counts(), site.checksum()
    site.change_data()

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preskool_dr",
            "--runbook",
            str(site.runbook),
            "restore",
            "latest",
            "--confirm",
            big.name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if kill_at in line:
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (state,) = Journal(site.config().state_dir).runs()
    # the journal says where it died: in step 6, or (early) while steps 4 to 6 ran beside the
    # load, where the kill may also fall between two steps (one saved done, the next not begun)
    running = [s.id for s in state.steps if s.status is StepStatus.RUNNING]
    assert running == ["restore"] if not early else len(running) <= 1, running

    resumed = site.cli("restore", "--resume", state.run_id, "--confirm", big.name)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    restored = big.row_counts()
    restored.pop("alembic_version")
    assert restored == counts
    assert site.checksum() == total
    # a step running at the kill is redone: killed in step 1, the app was stopped twice
    assert site.calls() in (["stop", "migrate", "start"], ["stop", "stop", "migrate", "start"])


def test_two_runs_on_one_target_the_second_gets_the_lock_error(site: Site) -> None:
    site.backup()
    config = site.config()
    first = Engine.start(config, RunOptions(backup_spec="latest", operator="alice"))
    try:
        with pytest.raises(LockedError, match=f"run {first.state.run_id} by alice"):
            Engine.start(config, RunOptions(backup_spec="latest", operator="bob"))
        second = site.cli("restore", "latest", "--confirm", site.db.name)
        assert second.returncode == 1
        assert "another run holds the lock" in second.stderr
    finally:
        first.close()
    # the lock is free again once the holder is gone
    Engine.start(config, RunOptions(backup_spec="latest")).close()


def test_engine_steps_for_a_front_end(site: Site) -> None:
    """What the TUI relies on: blocked reasons, skip rules, events, a wrong confirmation."""
    site.backup()
    events: list[Event] = []
    engine = Engine.start(site.config(), RunOptions(), on_event=events.append)
    try:
        assert engine.blocked_reason("recreate_db") is not None
        with pytest.raises(UsageError, match="cannot be skipped"):
            engine.skip_step("verify", "in a hurry")
        engine.choose_backup("latest")
        for step_id in ("download", "verify"):
            assert engine.run_step(step_id).status is StepStatus.DONE
        assert any(isinstance(e, Progress) and e.phase == "verify" for e in events)
        engine.skip_step("app_offline", "app already down (outage)")
        with pytest.raises(UsageError, match="nothing was changed"):
            engine.run_step("recreate_db", confirmation="wrong")
        assert engine.step("recreate_db").status is StepStatus.PENDING
        preview = engine.destruction_preview()
        assert preview.exists and preview.size_bytes > 0 and preview.row_estimates["students"] > 0
        engine.run_step("recreate_db", confirmation=site.db.name)
        assert engine.step("recreate_db").status is StepStatus.DONE
        assert engine.blocked_reason("restore") is None
    finally:
        engine.close()


# ---------------------------------------------------------------- from S3


def s3_only(site: Site, *, custom: bool) -> Path:
    """A backup (with its companion when `custom`) uploaded to S3, then gone from BACKUP_DIR."""
    backup = run_backup(site.config(), "daily", custom=custom).path
    for path in backup.parent.iterdir():
        path.unlink()
    return backup


def s3_key(site: Site, name: str) -> str:
    return site.config().backups.s3_prefix + name


@pytest.mark.slow
def test_s3_restore_downloads_and_uses_the_custom_companion(s3: str, site: Site) -> None:
    backup = s3_only(site, custom=True)
    sum_at_backup = site.checksum()
    site.change_data()

    result = site.cli("restore", backup.name, "--confirm", site.db.name)

    assert result.returncode == 0, result.stdout + result.stderr
    companion = companion_path(backup)
    assert companion.is_file() and checksum.sidecar_path(companion).is_file()
    assert "using the custom-format companion" in result.stdout
    assert f" of {companion.name}: " in result.stdout  # step 6: pg_restore -j N of the .dump
    assert site.checksum() == sum_at_backup
    # the companion comes down first and its load starts while the .sql.gz downloads
    out = result.stdout
    starts = out.index(f"step 6's load starts now: {companion.name} has the MD5")
    assert "while step 3 downloads and step 4 checks" in out
    assert starts < out.index("step 3/9  download     DONE")
    state = site.the_run()
    assert state.load is not None and state.load.early and state.load.loader == "pg_restore"
    assert site.loading_databases() == []


def test_steps_run_one_by_one_never_start_the_load_early(s3: str, site: Site) -> None:
    """The TUI runs the steps one at a time (Engine.run_step): neither step 3 nor step 4
    starts step 6's load; only a headless run (run_all) does."""
    backup = s3_only(site, custom=True)
    engine = Engine.start(site.config(), RunOptions(backup_spec=backup.name, operator="ops"))
    try:
        for step_id in ("download", "verify"):
            assert engine.run_step(step_id).status is StepStatus.DONE
        assert companion_path(backup).is_file()
        assert engine.early_load is None
        assert site.loading_databases() == []
    finally:
        engine.close()


@pytest.mark.slow
def test_s3_backup_that_fails_its_md5_drops_the_load_its_companion_began(
    s3: str, site: Site
) -> None:
    """The companion has the MD5 its meta records, so its load starts in step 3; the .sql.gz
    downloaded after it is not what its sidecar says: step 4 fails, the load is stopped,
    its database dropped, the download removed, and production never touched."""
    backup = s3_only(site, custom=True)
    site.change_data()
    before = site.checksum()
    client = boto3.client("s3")
    key = s3_key(site, backup.name)
    data = bytearray(client.get_object(Bucket=s3, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=s3, Key=key, Body=bytes(data))

    result = site.cli("restore", backup.name, "--confirm", site.db.name)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "step 6's load starts now" in result.stdout and "MD5 mismatch" in result.stdout
    assert "has not been touched" in result.stdout
    assert site.checksum() == before
    assert site.loading_databases() == []
    state = site.the_run()
    assert state.step("verify").status is StepStatus.FAILED
    assert state.load is None
    assert not backup.exists() and not companion_path(backup).exists()
    assert not (site.state_dir / "load" / f"{state.run_id}-early").exists()


def _corrupt_in_s3(site: Site, s3: str, name: str) -> None:
    boto3.client("s3").put_object(Bucket=s3, Key=s3_key(site, name), Body=b"PGDMP garbage")


def _meta_without_companion_md5(site: Site, s3: str, name: str) -> None:
    # a backup from a version that did not record the companion's MD5 in its meta
    client = boto3.client("s3")
    key = s3_key(site, name.replace(".dump", ".sql.gz.meta.json"))
    meta = json.loads(client.get_object(Bucket=s3, Key=key)["Body"].read())
    del meta["companion_md5"]
    client.put_object(Bucket=s3, Key=key, Body=json.dumps(meta).encode())


def _archived(site: Site, s3: str, name: str) -> None:
    client = boto3.client("s3")
    key = s3_key(site, name)
    body = client.get_object(Bucket=s3, Key=key)["Body"].read()
    client.put_object(Bucket=s3, Key=key, Body=body, StorageClass="GLACIER")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_corrupt_in_s3, "not downloaded (its MD5"),
        (_meta_without_companion_md5, "records no MD5 for it"),
        (_archived, "not downloaded"),
    ],
)
@pytest.mark.slow
def test_s3_companion_missing_or_bad_falls_back_to_the_plain_file(
    s3: str, site: Site, damage, says: str
) -> None:
    backup = s3_only(site, custom=True)
    sum_at_backup = site.checksum()
    site.change_data()
    damage(site, s3, companion_path(backup).name)

    result = site.cli("restore", backup.name, "--confirm", site.db.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert says in result.stdout and "plain backup" in result.stdout
    # auto: the plain file, over parallel sessions (or serially on a one-core machine)
    no_companion = "no usable custom-format companion (.dump) beside the backup"
    assert "pg_restore -j" not in result.stdout
    assert f"parallel sessions: restore.method is auto: {no_companion}" in result.stdout or (
        f"(serial: {no_companion}" in result.stdout
    )
    assert not companion_path(backup).exists()  # nothing bad left under its name
    assert site.checksum() == sum_at_backup
    # no companion to load in step 3: the load starts with step 4, from the .sql.gz
    starts = result.stdout.index(f"step 6's load starts now: {backup.name} has the MD5")
    assert starts > result.stdout.index("step 3/9  download     DONE")


@pytest.mark.slow
def test_downloaded_copy_that_fails_verify_is_removed_and_fetched_afresh(
    s3: str, site: Site
) -> None:
    """A resumed download spliced onto damaged bytes fails step 4: the copy must not stay
    under the final name (the retry would verify the same bad bytes forever); step 3 is due
    again and downloads the S3 original from byte 0."""
    backup = s3_only(site, custom=False)
    original = boto3.client("s3").get_object(Bucket=s3, Key=s3_key(site, backup.name))
    data = bytearray(original["Body"].read())
    part = backup.with_name(backup.name + ".part")
    half = data[: len(data) // 2]
    half[100] ^= 0x01  # what an earlier, interrupted download left, damaged on disk
    part.write_bytes(bytes(half))
    engine = Engine.start(site.config(), RunOptions(backup_spec=backup.name, operator="ops"))
    try:
        assert engine.run_step("download").status is StepStatus.DONE
        record = engine.run_step("verify")
        assert record.status is StepStatus.FAILED
        assert "MD5 mismatch" in record.detail and "run step 3" in record.detail
        assert not backup.exists() and not part.exists()
        assert not checksum.sidecar_path(backup).exists()
        assert engine.step("download").status is StepStatus.PENDING
        assert engine.blocked_reason("verify") is not None
        assert engine.state.backup and engine.state.backup.local_path is None
        assert engine.run_step("download").status is StepStatus.DONE
        assert engine.run_step("verify").status is StepStatus.DONE
        assert backup.read_bytes() == bytes(data)
    finally:
        engine.close()
    # a local backup the operator put there is never removed, however bad
    time.sleep(1.1)  # a new name: backups are named by the second
    local = site.backup()
    _md5_mismatch(local)
    engine = Engine.start(site.config(), RunOptions(backup_spec=local.name, operator="ops"))
    try:
        engine.run_step("download")
        assert engine.run_step("verify").status is StepStatus.FAILED
        assert local.exists()
    finally:
        engine.close()
