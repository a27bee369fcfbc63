"""Process: signals during each long step, two runs on one target, a stale lock, application
commands that hang, fail or print a lot, a health URL that fails, hangs or is not there.

Guarantee: SIGTERM, SIGINT and SIGHUP stop the headless restore after the current step has
recorded the interruption (exit 130, the journal names the step and the resume command);
SIGKILL leaves the journal at the step that was running. Either way `--resume RUN_ID`
finishes the restore: a download goes on from its `.part`, a half load is dropped and done
again, and production is untouched (interrupted before step 5) or kept aside (after it).
One run per target holds a kernel lock that dies with its process, so a second run is
refused with the holder's name and a crashed run's lock is taken over. Application commands
run with a timeout and their output is kept to its tail; their failure, and a failing
health URL, fail the step with the command or URL, the reason and the way on.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.lock import lock_path
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.restore.engine import OUTPUT_TAIL
from preskool_dr.core.restore.journal import Journal
from preskool_dr.demo import standin_app
from tests.support.backups import (
    backup_sql,
    blocker,
    create_db,
    insert_before,
    padded,
    rewrite_backup,
    s3_only_backup,
    wait_until_blocked,
)
from tests.support.checks import (
    assert_no_partial_backups,
    assert_says,
    processes_with,
    the_error,
    wait_for_size,
)
from tests.support.child import Child
from tests.support.fifo import FifoBackup
from tests.support.health import HealthStub
from tests.support.s3proxy import Fault, FaultProxy
from tests.support.site import Site

SIGNALS = {
    "SIGKILL": signal.SIGKILL,
    "SIGTERM": signal.SIGTERM,
    "SIGINT": signal.SIGINT,
    "SIGHUP": signal.SIGHUP,
}


@dataclass
class Scene:
    """One long step held in progress: `spec` to restore, `reached` waits until the step is
    under way, `let_go` lets it notice the signal, `heal` undoes the fault before resuming."""

    spec: str
    reached: Callable[[Child], None]
    let_go: Callable[[], None]
    heal: Callable[[], None]
    check_resume: Callable[[subprocess.CompletedProcess[str]], None] = lambda _result: None


def download_scene(site: Site, request: pytest.FixtureRequest) -> Scene:
    """The download stalls half way at the S3 proxy (1 MiB in the .part)."""
    proxy: FaultProxy = request.getfixturevalue("s3_proxy")
    backup = s3_only_backup(site)
    part = site.backup_dir / (backup.name + ".part")
    proxy.add(Fault("stall", backup.name, after_bytes=(1 << 20) + 4096))

    def reached(child: Child) -> None:
        child.wait_for_step("download")
        wait_for_size(part, 1 << 20)

    def check_resume(result: subprocess.CompletedProcess[str]) -> None:
        ranges = [seen.range for seen in proxy.gets(backup.name)]
        assert ranges[-1] is not None and ranges[-1].startswith("bytes="), ranges

    return Scene(backup.name, reached, proxy.release, proxy.release, check_resume)


def verify_scene(site: Site, request: pytest.FixtureRequest) -> Scene:
    """The backup's bytes stop half way (a hung network mount) while step 4 reads them."""
    backup = site.backup()
    padded(backup, 4 << 20)
    folder = site.root / "mount"
    folder.mkdir()
    fifo = FifoBackup(backup, folder)
    site.cleanups.append(fifo.stop)
    fifo.hold()

    def reached(child: Child) -> None:
        child.wait_for_step("verify")
        assert fifo.held.wait(120), "step 4 never read the backup"

    def heal() -> None:
        # The mount is back: an ordinary file again. (A pipe cannot pass step 4: step 6 must
        # load the very bytes step 4 read, and a pipe gives its next reader others.)
        fifo.reopen()
        fifo.stop()
        fifo.path.unlink(missing_ok=True)
        shutil.copyfile(backup, fifo.path)

    return Scene(str(fifo.path), reached, fifo.let_go, heal)


def restore_scene(site: Site, request: pytest.FixtureRequest) -> Scene:
    """psql stops at a statement half way through the load until the case says go."""
    backup = site.backup()
    release = f"{site.db.name}_go"
    sql_bytes = insert_before(backup_sql(backup), b"COPY public.students", blocker(release))
    rewrite_backup(backup, sql_bytes)

    def reached(child: Child) -> None:
        child.wait_for_step("restore")
        wait_until_blocked(site.db, site.db.name)

    def heal() -> None:
        create_db(site.db, release)

    site.cleanups.append(lambda: site.db.exists(release) or create_db(site.db, release))
    return Scene(backup.name, reached, lambda: None, heal)


def health_scene(site: Site, request: pytest.FixtureRequest) -> Scene:
    """The health URL answers 503 while step 9 polls it."""
    stub: HealthStub = request.getfixturevalue("health_stub")(503)
    site.set_app(health_url=stub.url)
    site.backup()

    def reached(child: Child) -> None:
        child.wait_for_step("health")
        assert stub.asked.wait(120)

    return Scene("latest", reached, lambda: None, stub.release)


SCENES = {
    "download": download_scene,
    "verify": verify_scene,
    "restore": restore_scene,
    "health": health_scene,
}


@pytest.mark.slow
@pytest.mark.parametrize("signame", list(SIGNALS))
@pytest.mark.parametrize("step", list(SCENES))
@pytest.mark.slow
def test_signal_during_a_long_step_then_resume(
    site: Site, request: pytest.FixtureRequest, step: str, signame: str
) -> None:
    """A signal while the step works: the journal says where it stopped, production is
    untouched (before step 5) or kept aside (after), and --resume completes the restore."""
    scene = SCENES[step](site, request)
    site.change_data()
    before = site.checksum()
    child = site.start("restore", scene.spec, "--confirm", site.db.name)
    scene.reached(child)

    child.signal(SIGNALS[signame])
    if signame != "SIGKILL":
        scene.let_go()
    stopped = child.finish()

    state = site.the_run()
    record = state.step(step)
    if signame == "SIGKILL":
        assert stopped.returncode == -signal.SIGKILL
        assert record.status is StepStatus.RUNNING  # the journal says where it died
    else:
        assert stopped.returncode == 130, stopped.stdout + stopped.stderr
        assert f"{signame}: stopping" in stopped.stdout  # the handler said why it stops
        assert record.status is StepStatus.FAILED and state.result == "interrupted"
        assert f"resume with --resume {state.run_id}" in record.detail
        assert "RESULT INTERRUPTED" in stopped.stdout
        assert f"resume: preskool-dr restore --resume {state.run_id}" in stopped.stdout
    if step in ("download", "verify"):
        assert site.calls() == [] and site.checksum() == before
        assert state.step("recreate_db").status is StepStatus.PENDING
    elif step == "restore":
        assert site.calls() == ["stop"]
        assert state.aside_db and site.checksum(state.aside_db) == before
    else:
        assert site.calls() == ["stop", "migrate", "start"]
    assert_no_partial_backups(site.backup_dir)

    scene.heal()
    resumed = site.resume(state.run_id)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "RESULT DONE" in resumed.stdout
    scene.check_resume(resumed)
    assert site.calls() == ["stop", "migrate", "start"]
    assert site.checksum() != before  # the backup's rows are back
    assert site.db.row_counts()["payments"] > 0
    assert_no_partial_backups(site.backup_dir)
    site.assert_no_leak(stopped, resumed)


@pytest.mark.slow
def test_two_runs_on_one_target_the_second_is_refused(
    site: Site, health_stub: Callable[[int | None], HealthStub]
) -> None:
    """A second restore (or a second resume of the same run) while one runs: exit 1, naming
    the holder's run, operator and pid; the first run is not disturbed."""
    stub = health_stub(503)
    site.set_app(health_url=stub.url)
    site.backup()
    first = site.start("restore", "latest", "--confirm", site.db.name, "--performed-by", "alice")
    first.wait_for_step("health")
    run_id = site.the_run().run_id

    second = site.restore("latest", "--performed-by", "bob")
    twice = site.resume(run_id)

    for result in (second, twice):
        assert result.returncode == 1, result.stdout + result.stderr
        assert_says(
            the_error(result),
            "another run holds the lock on this target",
            f"run {run_id} by alice (pid {first.proc.pid}",
            "--resume",
        )
    assert len(Journal(site.state_dir).runs()) == 1  # the refused run left no journal
    stub.release()
    done = first.finish()
    assert done.returncode == 0, done.stdout + done.stderr
    site.assert_no_leak(second, twice, done)


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over(site: Site) -> None:
    """A lock file left by a process that no longer exists (its flock died with it) names
    someone else: the next run takes the lock and completes."""
    site.backup()
    config = site.config()
    db = config.database
    path = lock_path(config.state_dir, db.host, db.port, db.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # what a SIGKILLed holder leaves: its name in the file, its flock gone with the process
    path.write_text(json.dumps({"run_id": "old-run", "operator": "ghost", "pid": 999999}))
    result = site.restore()
    assert result.returncode == 0, result.stdout + result.stderr
    holder = path.read_text()
    assert "ghost" not in holder  # released by the finished run: nothing stale is left named
    site.assert_no_leak(result)


@pytest.mark.slow
def test_hanging_app_command_is_stopped_by_its_timeout(site: Site) -> None:
    """app.stop hangs: it is killed at app.timeout_seconds, step 1 fails naming the key and
    the timeout, nothing is left running, production untouched; fixed, --resume completes."""
    site.backup()
    before = site.checksum()
    site.set_app(stop=standin_app.command("stop", site.app_dir, "--hang", "600"), timeout_seconds=2)

    result = site.restore()

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(
        the_error(result),
        "[FAIL]  App offline failed: app.stop",
        "did not finish within the timeout",
        "app.timeout_seconds",
    )
    assert processes_with(f"--state-dir {site.app_dir} --hang") == []
    assert standin_app.app_state(site.app_dir) == "started" and site.checksum() == before
    site.set_app(stop=standin_app.command("stop", site.app_dir), timeout_seconds=60)
    resumed = site.resume(site.the_run().run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    site.assert_no_leak(result, resumed)


def test_failing_app_command_fails_its_step_and_resumes(site: Site) -> None:
    """app.migrate exits 1: step 7 fails with the command's last line and the way on; the
    restored database stays, the old one aside; once fixed, --resume completes."""
    site.backup()
    site.set_app(migrate=standin_app.command("migrate", site.app_dir, "--fail"))

    result = site.restore()

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(
        the_error(result),
        "[FAIL]  Run migrations failed: app.migrate",
        "exited with status 1",
        "migrate failed",
        "resume",
    )
    state = site.the_run()
    assert state.step("restore").status is StepStatus.DONE and state.aside_db
    site.set_app(migrate=standin_app.command("migrate", site.app_dir))
    resumed = site.resume(state.run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert site.calls() == ["stop", "migrate", "migrate", "start"]
    site.assert_no_leak(result, resumed)


@pytest.mark.slow
def test_app_command_that_prints_a_lot_keeps_a_bounded_tail(site: Site) -> None:
    """app.migrate prints 200,000 lines: the step passes, the journal keeps only the last
    lines, and it stays small."""
    site.backup()
    site.set_app(migrate=standin_app.command("migrate", site.app_dir, "--spam", "200000"))
    result = site.restore()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    state = site.the_run()
    output = state.step("migrate").output
    assert 0 < len(output) <= OUTPUT_TAIL
    assert "Running upgrade" in output[-1]
    assert Journal(site.state_dir).path(state.run_id).stat().st_size < 64 * 1024
    site.assert_no_leak(result)


@pytest.mark.slow
def test_app_command_printing_invalid_utf8_is_shown_replaced(site: Site) -> None:
    """An app command that prints bytes that are not UTF-8: shown with replacement
    characters, nothing crashes."""
    site.backup()
    script = "import sys; sys.stdout.buffer.write(b'caf\\xe9 \\xff\\xfe done\\n')"
    site.set_app(migrate=[sys.executable, "-c", script])
    result = site.restore()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "caf\ufffd \ufffd\ufffd done" in site.the_run().step("migrate").output
    site.assert_no_leak(result)


@pytest.mark.parametrize("how", ["500", "timeout", "unreachable"])
@pytest.mark.slow
def test_failing_health_url_fails_step_9(
    site: Site, health_stub: Callable[[int | None], HealthStub], how: str
) -> None:
    """The health URL answers 500, never answers, or nothing listens: step 9 fails after
    health_wait_seconds with the URL and the answer; the restore itself is done; --resume
    passes once the URL answers 200."""
    stub = health_stub(500 if how == "500" else None)
    url = stub.url if how != "unreachable" else f"http://127.0.0.1:{free_port()}/api/v1/health"
    site.set_app(health_url=url, health_wait_seconds=2)
    site.backup()

    result = site.restore()

    assert result.returncode == 1, result.stdout + result.stderr
    expected = {"500": "answered 500", "timeout": "timed out", "unreachable": "refused"}[how]
    assert_says(the_error(result), "[FAIL]  Health check failed:", url, expected, "resume")
    state = site.the_run()
    assert state.step("restore").status is StepStatus.DONE and state.app_accessible_at is None
    stub.release()
    site.set_app(health_url=stub.url)
    resumed = site.resume(state.run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert Journal(site.state_dir).load(state.run_id).app_accessible_at is not None
    site.assert_no_leak(result, resumed)
