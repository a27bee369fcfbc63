"""Leaving mid-step: q (asked first), SIGTERM, a failed step. (A dropped SSH session, SIGHUP,
mid-load and then resumed, is a case of the fault suite: tests/faults/test_tui.py.)"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal

import pytest

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.journal import Journal
from preskool_dr.core.storage import checksum
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.quit_confirm import QuitScreen
from tests.support.site import Site
from tests.support.tui import (
    confirm_recreate,
    log_text,
    run_selected,
    screen_text,
    start_run,
    status,
    wait_for,
    wait_for_exit,
)


async def start_slow_step(app: DrApp) -> None:
    """Choose the backup, then run step 1, whose app.stop never ends by itself."""
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        await pilot.press("home", "r")
        await wait_for(pilot, lambda: status(app, "app_offline") is StepStatus.RUNNING, "running")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        assert "resumable" in screen_text(pilot)
        await pilot.press("n")  # keep running
        await pilot.pause()
        assert not isinstance(app.screen, QuitScreen)
        assert status(app, "app_offline") is StepStatus.RUNNING
        await pilot.press("4")  # the operator can look at the log while it runs
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        await pilot.press("y")
        await wait_for_exit(app)


def assert_interrupted_and_resumable(site: Site, app: DrApp) -> None:
    assert app.return_code == 130
    (state,) = Journal(site.config().state_dir).unfinished()
    assert state.result == "interrupted"
    step = state.step("app_offline")
    assert step.status is StepStatus.FAILED and "interrupted" in step.detail
    assert state.step("identify").status is StepStatus.DONE
    assert site.db.row_counts()["students"] > 0  # production untouched


@pytest.mark.slow
def test_quit_while_a_step_runs_asks_then_records_it(slow_site: Site) -> None:
    slow_site.backup()
    app = DrApp(slow_site.config())
    asyncio.run(start_slow_step(app))
    assert_interrupted_and_resumable(slow_site, app)
    assert app.engine is not None and not app.engine._locks.target.held  # the lock is released


async def quit_half_done(app: DrApp, site: Site) -> None:
    """Steps 2-5 done (the app offline, the database recreated): q asks, names what is left
    and where production is; n stays, y quits without marking any step interrupted."""
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        for step_id in ("download", "verify", "app_offline"):
            await run_selected(pilot, step_id)
        await confirm_recreate(pilot, site.db)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        text = screen_text(pilot)
        assert "half done" in text and "app is offline" in text, text
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, QuitScreen)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        await pilot.press("y")
        await wait_for_exit(app)


def test_quit_with_the_run_half_done_asks_first(site: Site) -> None:
    site.backup()
    app = DrApp(site.config())
    asyncio.run(quit_half_done(app, site))
    assert app.return_code == 130  # unfinished: resumable
    (state,) = Journal(site.config().state_dir).unfinished()
    assert state.step("recreate_db").status is StepStatus.DONE
    assert not any("interrupted" in r.detail for r in state.steps)


async def sigterm_mid_step(app: DrApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        await pilot.press("home", "r")
        await wait_for(pilot, lambda: status(app, "app_offline") is StepStatus.RUNNING, "running")
        os.kill(os.getpid(), signal.SIGTERM)  # a service manager's or an operator's kill
        await wait_for_exit(app)


def test_sigterm_mid_step_exits_130_with_the_journal_resumable(slow_site: Site) -> None:
    slow_site.backup()
    app = DrApp(slow_site.config())
    asyncio.run(sigterm_mid_step(app))
    assert app.hung_up and app.stop_signal == signal.SIGTERM
    assert_interrupted_and_resumable(slow_site, app)


async def verify_a_corrupt_backup(app: DrApp, site: Site) -> None:
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await start_run(pilot)
        await run_selected(pilot, "download")
        await pilot.press("r")  # verify: the checksum no longer matches
        await wait_for(pilot, lambda: status(app, "verify") is StepStatus.FAILED, "verify failed")
        # the error is in the log for good; as a toast it may already have made way for a
        # later warning (an 80-column screen shows one toast at a time)
        await wait_for(pilot, lambda: "Verify checksum failed" in log_text(app), "the error")
        app.clear_notifications()  # toasts cover the right panel at 80 columns while they last
        await pilot.pause()
        text = screen_text(pilot)
        assert "✖ 4 Verify checksum" in text  # the checklist
        assert "✖ FAIL" in text  # the checksum panel's verdict, above the notifications
        assert "MD5 mismatch" in text
        # step 5 stays out of reach: a bad backup never reaches the database
        await pilot.press("end", "up", "up", "up", "up")  # step 5
        assert app.checklist.selected_id == "recreate_db"
        await pilot.press("r")
        await pilot.pause()
        assert any("cannot run" in n.message for n in app._notifications)
        assert "must pass first" in screen_text(pilot)
        await pilot.press("q")
        await wait_for_exit(app)


@pytest.mark.slow
def test_failed_step_shows_why_and_exits_1(site: Site) -> None:
    backup = site.backup()
    # same length, different bytes: a bit flip the sidecar catches
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data))
    app = DrApp(site.config())
    asyncio.run(verify_a_corrupt_backup(app, site))
    assert app.return_code == 1
    assert site.db.row_counts()["students"] > 0


@pytest.mark.slow
def test_checksum_panel_names_the_check_that_failed(site: Site) -> None:
    """Valid gzip with a matching sidecar that is not pg_dump output: MD5 and gzip pass, the
    content line is the one that fails (not a gzip failure)."""
    backup = site.backup()
    backup.write_bytes(gzip.compress(b"id,first_name\n1,Ada\n"))
    checksum.write_sidecar(backup, checksum.verify_file(backup, None).actual_md5)
    app = DrApp(site.config())

    async def drive() -> None:
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await start_run(pilot)
            await run_selected(pilot, "download")
            await pilot.press("r")
            await wait_for(pilot, lambda: status(app, "verify") is StepStatus.FAILED, "failed")
            app.clear_notifications()
            await pilot.pause()
            text = screen_text(pilot)
            assert "MD5       ✔ matches the sidecar" in text
            assert "gzip      ✔ decompresses cleanly" in text
            assert "content   ✖" in text
            await pilot.press("q")
            await wait_for_exit(app)

    asyncio.run(drive())
    assert app.return_code == 1
