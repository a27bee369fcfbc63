"""The verify gate: steps 5 and 6 load only the bytes step 4 verified, on the run's server.

Guarantee: a backup is identified by its full location, so choosing another folder's file of
the same name (or the same s3:// backup again) makes steps 3 and 4 run again. Step 4 records
the backup's MD5 and file identity in the journal (a named pipe never passes it); step 5
reads the file again before anything is destroyed and step 6 loads the file it opened and
checked, so a backup swapped after step 4 (other valid content with its own correct
sidecar), also across a resume, is refused and its content never reaches the database; a
write into the file during the load fails step 6. A custom-format companion is loaded only
with the MD5 the plain backup's .meta.json recorded when both were written: a substituted
companion (a valid archive with a correct sidecar of its own), or one a backup from an older
version recorded no MD5 for, is never loaded, and the plain backup is restored.
`--resume`, `--rollback` and `--drop-aside` refuse (exit 2) when DB_HOST/DB_PORT point at
another server than the run's, naming both, and change nothing; the TUI offers no resume of
such a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.screen import Screen

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.events import Event, Notice, Progress, StepStatus, utcnow
from preskool_dr.core.base.settings import Config
from preskool_dr.core.restore.engine import Engine, RunOptions
from preskool_dr.core.restore.restore_test import run_restore_test
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.s3store import S3Store
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.resume_run import ResumeRunScreen
from tests.support.checks import assert_says, the_error
from tests.support.fifo import FifoBackup
from tests.support.runbook import write_runbook
from tests.support.site import Site
from tests.support.tui import wait_for


def other_backup(site: Site, *, custom: bool = False) -> Path:
    """A second, valid backup of different content (the data changed after the first), an
    hour older so its name differs: what a swapped-in file looks like."""
    site.change_data()
    at = utcnow() - timedelta(hours=1)
    return run_backup(site.config(), "daily", upload=False, at=at, custom=custom).path


def swap_in(target: Path, source: Path, *, in_place: bool = False) -> None:
    """Put `source`'s bytes at `target` with a correct sidecar of its own: by rename (a new
    inode) or written into the same inode with its mtime set back."""
    if in_place:
        before = target.stat()
        with target.open("r+b") as f:
            f.truncate(0)
            f.write(source.read_bytes())
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        tmp = target.with_name(".swap")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    checksum.write_sidecar(target, checksum.verify_file(target, None).actual_md5)


def nothing_loaded(site: Site) -> bool:
    """The target is still step 5's closed placeholder and no load was started (step 6
    loads under `<target>_loading_<run>` and opens the target only after its checks)."""
    with site.db.connect("postgres") as conn:
        rows = conn.execute(
            "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s",
            (site.db.name + "%",),
        ).fetchall()
    names = {name: allowed for name, allowed in rows}
    loads = [name for name in names if "_loading_" in name]
    return names.get(site.db.name) is False and not loads


def verified_engine(site: Site, backup: Path, events: list[Event] | None = None) -> Engine:
    """A run of `backup` with steps 2-4 done and step 1 skipped (no app needed here)."""
    sink = events.append if events is not None else (lambda _e: None)
    engine = Engine.start(
        site.config(), RunOptions(backup_spec=str(backup), operator="ops"), on_event=sink
    )
    for step_id in ("download", "verify"):
        record = engine.run_step(step_id)
        assert record.status is StepStatus.DONE, record.detail
    engine.skip_step("app_offline", "the test has no application to stop")
    return engine


# ---------------------------------------------------------------- the file step 4 verified


@pytest.mark.parametrize("in_place", [False, True], ids=["renamed-in", "rewritten-in-place"])
def test_backup_swapped_after_step_4_is_refused_at_step_5(site: Site, in_place: bool) -> None:
    """Another valid backup with its own correct sidecar put in place of the verified one
    after step 4 (renamed in, or written into the same file with its mtime set back):
    step 5 refuses before anything is destroyed."""
    backup = site.backup()
    other = other_backup(site)
    sum_before, counts_before = site.checksum(), site.db.row_counts()
    engine = verified_engine(site, backup)
    try:
        swap_in(backup, other, in_place=in_place)
        record = engine.run_step("recreate_db", confirmation=site.db.name)
        assert record.status is StepStatus.FAILED
        assert_says(record.detail, "is not the backup step 4 verified", "nothing was loaded")
        assert engine.blocked_reason("restore") is not None
        assert engine.state.aside_db is None
    finally:
        engine.close()
    assert site.checksum() == sum_before and site.db.row_counts() == counts_before


def test_backup_swapped_after_step_5_is_never_loaded(site: Site) -> None:
    """The swap after step 5, and the run resumed by a new process: step 6 refuses and the
    swapped-in content never reaches the database (the old one stays aside)."""
    backup = site.backup()
    other = other_backup(site)
    sum_before = site.checksum()
    engine = verified_engine(site, backup)
    try:
        assert engine.run_step("recreate_db", confirmation=site.db.name).status is (StepStatus.DONE)
        run_id, aside = engine.state.run_id, engine.state.aside_db
    finally:
        engine.close()  # the process that ran step 5 is gone
    swap_in(backup, other)

    engine = Engine.resume(site.config(), run_id)
    try:
        record = engine.run_step("restore")
        assert record.status is StepStatus.FAILED
        assert_says(record.detail, "is not the backup step 4 verified", "nothing was loaded")
    finally:
        engine.close()
    assert nothing_loaded(site)
    assert aside and site.checksum(aside) == sum_before


def test_backup_written_during_the_load_fails_step_6(site: Site) -> None:
    """A write into the backup file while step 6 loads it (its owner rewrites a byte with
    the same value: same size, same content, only the write is seen) fails step 6: what was
    loaded is not vouched for, and the run stops there with the old database aside."""
    backup = site.backup()
    sum_before = site.checksum()
    written: list[bool] = []

    def write_once(event: Event) -> None:
        if isinstance(event, Progress) and event.phase == "load" and not written:
            written.append(True)
            with backup.open("r+b") as f:
                first = f.read(1)
                f.seek(0)
                f.write(first)

    engine = verified_engine(site, backup)
    try:
        assert engine.run_step("recreate_db", confirmation=site.db.name).status is (StepStatus.DONE)
        engine.on_event = write_once
        record = engine.run_step("restore")
        assert written
        assert record.status is StepStatus.FAILED
        assert_says(record.detail, "was written while it was in use")
        assert engine.blocked_reason("migrate") is not None
        aside = engine.state.aside_db
    finally:
        engine.close()
    assert aside and site.checksum(aside) == sum_before


def test_resume_after_a_swap_refuses(site: Site) -> None:
    """CLI: a run stops after step 4 (app.stop fails), the backup is swapped, the run is
    resumed: step 5 refuses, production is untouched."""
    backup = site.backup()
    other = other_backup(site)
    sum_before = site.checksum()
    stop = site.app["stop"]
    site.set_app(stop=["/bin/false"])
    first = site.restore(str(backup))
    assert first.returncode == 1, first.stdout + first.stderr
    run_id = site.the_run().run_id
    assert site.the_run().step("verify").status is StepStatus.DONE

    swap_in(backup, other)
    site.set_app(stop=stop)
    result = site.resume(run_id)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "is not the backup step 4 verified")
    assert "has not been touched" in result.stdout
    state = site.the_run()
    assert state.step("recreate_db").status is StepStatus.FAILED and state.aside_db is None
    assert site.checksum() == sum_before


def test_same_name_in_another_folder_runs_steps_3_and_4_again(site: Site, tmp_path: Path) -> None:
    """Steps 3-4 passed for BACKUP_DIR/NAME; the operator then chooses another folder's
    file of the same name (other content, correct sidecar): it is another backup, so steps
    3-4 are due again and step 5 is blocked until they pass for it."""
    backup = site.backup()
    other = other_backup(site)
    elsewhere = tmp_path / "elsewhere" / backup.name
    elsewhere.parent.mkdir()
    swap_in(elsewhere, other)
    engine = verified_engine(site, backup)
    try:
        engine.choose_backup(str(elsewhere))
        for step_id in ("download", "verify"):
            assert engine.step(step_id).status is StepStatus.PENDING, step_id
        assert engine.blocked_reason("recreate_db") is not None
        for step_id in ("download", "verify"):
            assert engine.run_step(step_id).status is StepStatus.DONE
        assert engine.state.backup is not None
        assert engine.state.backup.md5 == checksum.verify_file(elsewhere, None).actual_md5
    finally:
        engine.close()


def test_restore_test_loads_only_what_it_verified(site: Site) -> None:
    """The weekly restore-test: the backup is swapped for another valid one (correct
    sidecar) right after its checksum check passed. The load refuses it, the test fails
    naming the file, and its scratch database is dropped as always."""
    backup = site.backup()
    other = other_backup(site)
    seen: list[str] = []

    def swap_after_verify(event: Event) -> None:
        if isinstance(event, Notice) and event.text.startswith("checksum:") and not seen:
            seen.append(event.text)
            swap_in(backup, other)

    report = run_restore_test(site.config(), str(backup), on_event=swap_after_verify)
    assert seen and not report.ok
    (restore,) = [c for c in report.checks if c.name == "restore"]
    assert restore.status == "fail"
    assert_says(restore.detail, "is not the backup step 4 verified", "nothing was loaded")
    assert not site.db.exists(report.database)


def test_a_pipe_never_passes_step_4(site: Site, tmp_path: Path) -> None:
    """A named pipe in place of a backup file (each reader may get other bytes): step 4 reads
    it, then refuses it, since step 6 could not load the bytes step 4 read."""
    backup = site.backup()
    folder = tmp_path / "pipes"
    folder.mkdir()
    fifo = FifoBackup(backup, folder)
    site.cleanups.append(fifo.stop)
    step_4_refuses(site, str(fifo.path), "is not a regular file", "copy it into BACKUP_DIR")


def step_4_refuses(site: Site, spec: str, *says: str) -> None:
    """Steps 3 and 4 of a run of `spec`: step 4 fails saying `says`; step 5 cannot run."""
    engine = Engine.start(site.config(), RunOptions(backup_spec=spec, operator="ops"))
    try:
        assert engine.run_step("download").status is StepStatus.DONE
        record = engine.run_step("verify")
        assert record.status is StepStatus.FAILED
        assert_says(record.detail, *says)
        assert engine.blocked_reason("recreate_db") is not None
    finally:
        engine.close()


@pytest.mark.slow
def test_same_s3_backup_chosen_again_is_downloaded_and_verified_again(s3: str, site: Site) -> None:
    """Steps 3-4 passed for s3://bucket/key; choosing the same S3 backup again (the bucket
    may hold other bytes by now) makes steps 3-4 due again."""
    backup = run_backup(site.config(), "daily").path
    url = S3Store(s3, site.config().backups.s3_prefix).url(backup.name)
    for path in backup.parent.iterdir():
        path.unlink()
    engine = Engine.start(site.config(), RunOptions(backup_spec=url, operator="ops"))
    try:
        for step_id in ("download", "verify"):
            assert engine.run_step(step_id).status is StepStatus.DONE
        engine.choose_backup(url)
        for step_id in ("download", "verify"):
            assert engine.step(step_id).status is StepStatus.PENDING, step_id
        assert engine.blocked_reason("recreate_db") is not None
    finally:
        engine.close()


# ---------------------------------------------------------------- the companion


def substituted_companion(site: Site, backup: Path) -> None:
    """A valid custom-format archive of other content, with a correct sidecar of its own."""
    other = other_backup(site, custom=True)
    swap_in(companion_path(backup), companion_path(other))


def meta_without_companion_md5(site: Site, backup: Path) -> None:
    """A backup from a version that recorded no companion MD5 in its .meta.json (the
    companion itself is intact, with its correct sidecar)."""
    path = meta_path(backup)
    data = json.loads(path.read_text())
    data.pop("companion_md5", None)  # (absent in every meta before this guard)
    path.write_text(json.dumps(data))
    site.change_data()


@pytest.mark.parametrize(
    ("tamper", "method"),
    [
        pytest.param(substituted_companion, "auto", id="substituted-auto"),
        pytest.param(
            substituted_companion, "parallel", id="substituted-parallel", marks=pytest.mark.slow
        ),
        pytest.param(
            meta_without_companion_md5, "auto", id="old-meta-auto", marks=pytest.mark.slow
        ),
        pytest.param(meta_without_companion_md5, "parallel", id="old-meta-parallel"),
    ],
)
def test_companion_without_the_recorded_md5_is_never_loaded(
    site: Site, method: str, tamper: Callable[[Site, Path], None]
) -> None:
    """The restore loads the plain backup, says why the companion was not used, and the
    database holds the backup's content (never the substituted archive's)."""

    site.runbook = write_runbook(site.root, app=site.app, restore={"method": method, "jobs": 2})
    backup = run_backup(site.config(), "daily", upload=False, custom=True).path
    sum_at_backup = site.checksum()
    tamper(site, backup)
    assert site.checksum() != sum_at_backup
    events: list[Event] = []
    engine = verified_engine(site, backup, events)
    try:
        for step_id in ("recreate_db", "restore"):
            record = engine.run_step(step_id, confirmation=site.db.name)
            assert record.status is StepStatus.DONE, record.detail
        assert "pg_restore" not in record.detail
    finally:
        engine.close()
    warnings = [e.text for e in events if isinstance(e, Notice) and e.level == "warn"]
    assert any("not used" in w and "restoring the plain backup" in w for w in warnings), warnings
    assert site.checksum() == sum_at_backup


@pytest.mark.parametrize("before_step", ["recreate_db", "restore"])
def test_companion_swapped_after_step_4_is_never_loaded(site: Site, before_step: str) -> None:
    """Step 4 accepted the companion and so read the .sql.gz for its MD5 only; another valid
    archive (correct sidecar) replaces the companion before step 5, or between steps 5 and
    6: the step refuses (the .sql.gz's gzip and content are unproven, so it may not stand
    in) and says to run step 4 again, which reads the .sql.gz whole; then it loads that."""

    site.runbook = write_runbook(site.root, app=site.app, restore={"method": "auto", "jobs": 2})
    backup = run_backup(site.config(), "daily", upload=False, custom=True).path
    sum_at_backup = site.checksum()
    # made before the run: a backup is refused while a restore holds the target's lock
    other = other_backup(site, custom=True)
    before = site.checksum()
    events: list[Event] = []
    engine = verified_engine(site, backup, events)
    try:
        assert any(isinstance(e, Notice) and "using the custom-format" in e.text for e in events)
        assert engine.state.verify is not None and engine.state.verify.skipped
        if before_step == "restore":
            record = engine.run_step("recreate_db", confirmation=site.db.name)
            assert record.status is StepStatus.DONE, record.detail
        swap_in(companion_path(backup), companion_path(other))

        record = engine.run_step(before_step, confirmation=site.db.name)

        assert record.status is StepStatus.FAILED
        assert_says(record.detail, "checked", "for its MD5 only", "run step 4 again")
        assert engine.step("verify").status is StepStatus.PENDING  # a resumed run redoes it
        if before_step == "recreate_db":
            assert site.checksum() == before  # nothing destroyed
        else:
            assert nothing_loaded(site)
        record = engine.run_step("verify")
        assert record.status is StepStatus.DONE, record.detail
        assert engine.state.verify is not None and engine.state.verify.skipped is None
        steps = ("recreate_db", "restore")
        restores_the_plain_file(engine, site, *steps[steps.index(before_step) :])
    finally:
        engine.close()
    assert site.checksum() == sum_at_backup


def restores_the_plain_file(engine: Engine, site: Site, *step_ids: str) -> None:
    """`step_ids` (steps 5 and 6, or 6) run and pass, and step 6 loads the .sql.gz."""
    for step_id in step_ids:
        record = engine.run_step(step_id, confirmation=site.db.name)
        assert record.status is StepStatus.DONE, record.detail
    assert "pg_restore" not in record.detail


def test_after_step_5_step_4_accepts_no_other_companion(site: Site) -> None:
    """Step 5 replaced the database on the strength of the backup and the companion step 4
    accepted; then another valid archive and a meta vouching for it (naming the same .sql.gz
    MD5) appear and step 4 runs again: it refuses that companion, reads the .sql.gz whole,
    and step 6 restores the .sql.gz."""
    site.runbook = write_runbook(site.root, app=site.app, restore={"method": "auto", "jobs": 2})
    backup = run_backup(site.config(), "daily", upload=False, custom=True).path
    sum_at_backup = site.checksum()
    other = other_backup(site, custom=True)
    events: list[Event] = []
    engine = verified_engine(site, backup, events)
    try:
        record = engine.run_step("recreate_db", confirmation=site.db.name)
        assert record.status is StepStatus.DONE, record.detail
        swap_in(companion_path(backup), companion_path(other))
        meta = json.loads(meta_path(backup).read_text())
        meta["companion_md5"] = checksum.verify_file(companion_path(other), None).actual_md5
        meta_path(backup).write_text(json.dumps(meta))

        record = engine.run_step("verify")

        assert record.status is StepStatus.DONE, record.detail
        warnings = [e.text for e in events if isinstance(e, Notice) and e.level == "warn"]
        assert any("not the one step 4 accepted before step 5" in w for w in warnings)
        assert engine.state.verify is not None and engine.state.verify.skipped is None
        assert engine.state.backup is not None and engine.state.backup.companion_md5 is None
        restores_the_plain_file(engine, site, "restore")
    finally:
        engine.close()
    assert site.checksum() == sum_at_backup


def test_a_step_5_that_touched_nothing_lets_step_4_take_the_companion_again(site: Site) -> None:
    """Step 4 ran without the companion (it was away); step 5 refused (the backup changed
    after step 4) before touching anything; the file and the companion are put back and step
    4 runs again: it accepts the companion (a failed step 5 decided nothing), and no warning
    says step 5 replaced the database."""
    site.runbook = write_runbook(site.root, app=site.app, restore={"method": "auto", "jobs": 2})
    backup = run_backup(site.config(), "daily", upload=False, custom=True).path
    other = other_backup(site)
    kept = backup.with_name("kept.tmp")
    shutil.copyfile(backup, kept)
    away = backup.with_name("companion.tmp")
    os.rename(companion_path(backup), away)
    events: list[Event] = []
    engine = verified_engine(site, backup, events)
    try:
        swap_in(backup, other)
        assert engine.run_step("recreate_db", confirmation=site.db.name).status is StepStatus.FAILED
        swap_in(backup, kept)
        os.rename(away, companion_path(backup))

        assert engine.run_step("verify").status is StepStatus.DONE

        assert engine.state.backup is not None and engine.state.backup.companion_md5
        warnings = [e.text for e in events if isinstance(e, Notice) and e.level == "warn"]
        assert not any("replaced the database" in w for w in warnings), warnings
    finally:
        engine.close()


def test_a_sidecar_swapped_while_step_4_accepts_the_companion_fails_step_4(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The companion is accepted on the word of a meta naming the sidecar's MD5 as it was;
    another backup and its sidecar are put in place while the companion is hashed: step 4
    fails (the file it read is not the one the meta names) instead of passing it with only
    its MD5 checked."""
    from preskool_dr.core.restore.loaders import pg_restore

    site.runbook = write_runbook(site.root, app=site.app, restore={"method": "auto", "jobs": 2})
    backup = run_backup(site.config(), "daily", upload=False, custom=True).path
    other = other_backup(site)
    before = site.checksum()
    accept = pg_restore.usable_companion

    def accept_then_swap(*args: Any, **kwargs: Any) -> Any:
        usable = accept(*args, **kwargs)
        swap_in(backup, other)  # with a correct sidecar of its own
        return usable

    monkeypatch.setattr(pg_restore, "usable_companion", accept_then_swap)
    step_4_refuses(site, str(backup), "or its sidecar changed while step 4 read", "step 4 again")
    assert site.checksum() == before


# ---------------------------------------------------------------- the run's server


def other_server(site: Site, which: str) -> dict[str, str]:
    if which == "DB_PORT":
        return site.env(DB_PORT=str(int(os.environ["DB_PORT"]) + 1))
    return site.env(DB_HOST="db2.invalid")


@pytest.mark.parametrize("which", ["DB_PORT", "DB_HOST"])
@pytest.mark.slow
def test_rollback_and_drop_aside_refuse_another_server(site: Site, which: str) -> None:
    """A finished run, then DB_HOST or DB_PORT changed: --rollback and --drop-aside exit 2
    naming the run's server and today's, and touch nothing; with the run's server named
    again the rollback works."""
    site.backup()
    site.change_data()
    done = site.restore()
    assert done.returncode == 0, done.stdout + done.stderr
    state = site.the_run()
    assert state.aside_db and site.db.exists(state.aside_db)
    restored_sum = site.checksum()
    env = other_server(site, which)
    run_server = f"{state.db_host}:{state.db_port}"
    now_server = f"{env['DB_HOST']}:{env['DB_PORT']}"

    for argv in (
        ("--rollback", state.run_id, "--confirm", site.db.name),
        ("--drop-aside", state.run_id, "--confirm", state.aside_db),
    ):
        result = site.cli("restore", *argv, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert_says(the_error(result), run_server, now_server, state.target_db, "set them back")
    assert site.db.exists(state.aside_db) and site.checksum() == restored_sum
    assert site.the_run().aside_state == "renamed"

    back = site.cli("restore", "--rollback", state.run_id, "--confirm", site.db.name)
    assert back.returncode == 0, back.stdout + back.stderr


@pytest.mark.parametrize("which", ["DB_PORT", "DB_HOST"])
def test_resume_refuses_another_server(site: Site, which: str) -> None:
    """An interrupted run (app.stop failed after steps 2-4), then DB_HOST or DB_PORT
    changed: --resume exits 2 naming both servers and runs no step."""
    site.backup()
    site.set_app(stop=["/bin/false"])
    first = site.restore()
    assert first.returncode == 1
    before = site.the_run()
    env = other_server(site, which)

    result = site.cli("restore", "--resume", before.run_id, "--confirm", site.db.name, env=env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(
        the_error(result),
        f"{before.db_host}:{before.db_port}",
        f"{env['DB_HOST']}:{env['DB_PORT']}",
        "set them back",
    )
    after = site.the_run()
    assert [s.status for s in after.steps] == [s.status for s in before.steps]
    assert after.notes == before.notes  # not even marked as resumed


@pytest.mark.slow
def test_tui_offers_no_resume_of_another_servers_run(site: Site) -> None:
    """The TUI's resume offer lists only runs of the server DB_HOST/DB_PORT point at: with
    DB_PORT changed, the unfinished run is not offered (the incident time is asked instead);
    with the run's server, it is."""
    backup = site.backup()
    engine = Engine.start(site.config(), RunOptions(backup_spec=str(backup), operator="ops"))
    engine.close()  # an unfinished run
    elsewhere = load_config(site.runbook, env=other_server(site, "DB_PORT"))
    assert isinstance(asyncio.run(first_screen(elsewhere)), IncidentTimeScreen)
    assert isinstance(asyncio.run(first_screen(site.config())), ResumeRunScreen)


async def first_screen(config: Config) -> Screen[Any]:
    """The screen the TUI opens with."""
    app = DrApp(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, IncidentTimeScreen | ResumeRunScreen),
            "the first screen",
        )
        screen = app.screen
        await pilot.press("escape")
        app.exit()
    return screen
