"""Pilot drives complete restores against the real cluster: the checklist, the typed
confirmation, progress, the RTO clock, quitting and resuming."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import ProgressBar

from preskool_dr.cli.tui_cmd import exit_summary
from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.age import IDENTITY_ENV
from preskool_dr.core.restore.journal import Journal
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.messages import EngineProgress
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.resume_run import ResumeRunScreen
from preskool_dr.tui.widgets.checksum_panel import ChecksumPanel
from preskool_dr.tui.widgets.restore_panel import RestorePanel
from preskool_dr.tui.widgets.rto_timer import RtoTimer
from preskool_dr.tui.widgets.summary_panel import SummaryPanel
from tests.support.age_keys import make_key
from tests.support.leaks import PASSWORD
from tests.support.site import Site
from tests.support.tui import (
    STEP_TITLES,
    confirm_recreate,
    run_selected,
    screen_text,
    sizes_fast_one,
    start_run,
    wait_for,
)

SIZES = [(80, 24), (120, 40)]


async def finish_run(pilot: Pilot[Any], site: Site) -> None:
    """Steps 1 and 5-9, then the offer to drop the aside copy."""
    app = pilot.app
    assert isinstance(app, DrApp)
    await run_selected(pilot, "app_offline")
    assert site.calls()[-1] == f"stop {site.db.name}"
    await confirm_recreate(pilot, site.db)
    await run_selected(pilot, "restore")
    await pilot.pause()
    panel = app.query_one(RestorePanel)
    text = screen_text(pilot)
    tables = len(panel.expected_rows)
    assert tables and panel.loaded == sorted(panel.expected_rows)  # every table ticked
    # the final line, not a stale rate or ETA (`, 1.2 MiB` when the loader counts bytes:
    # not pg_restore of the default backup's companion, which counts items)
    assert f"restored {tables} tables" in text
    assert "ETA" not in text and "tables done)" not in text
    if not panel.has_class("-wide"):
        assert "ALTER TABLE" not in text  # the table list, not psql's output
    bar = panel.query_one("#restore-bar", ProgressBar)
    assert not bar.display or bar.percentage == 1
    await run_selected(pilot, "migrate")
    await run_selected(pilot, "app_online")
    await run_selected(pilot, "health")
    assert app.engine is not None
    state = app.engine.state
    assert state.result == "done"
    assert site.calls()[-3:] == [f"{name} {site.db.name}" for name in ("stop", "migrate", "start")]
    assert site.db.row_counts() == site.db.row_counts(state.aside_db)
    # the run has ended: its summary replaces the toast, steps no longer run, and the
    # aside copy is offered there (d), not by a dialog that pops up by itself
    await wait_for(pilot, lambda: app.query_one(SummaryPanel).display, "summary")
    assert not isinstance(app.screen, ConfirmNameScreen)
    summary = app.query_one(SummaryPanel)
    assert state.aside_db is not None
    assert summary.lines[0] == f"Restore run {state.run_id}: done"
    assert any(line.startswith("RTO ") and line.endswith(": met") for line in summary.lines)
    assert any(line.startswith("checks ") for line in summary.lines)
    assert f"aside copy {state.aside_db} kept" in summary.lines
    assert f"  drop: preskool-dr restore --drop-aside {state.run_id}" in "\n".join(summary.lines)
    assert any(line.startswith("report  ") for line in summary.lines)
    text = screen_text(pilot)
    assert f"Restore run {state.run_id}" in text and "5:Summary" in text
    assert "Run step" not in text and "Retry" not in text  # the footer: nothing runs again
    assert "blocked" not in text
    assert "Drop aside copy" in text  # d, in the footer while the summary has focus
    await pilot.press("1", "5")  # another panel and back: d works again
    await pilot.pause()
    assert "Drop aside copy" in screen_text(pilot)
    await pilot.press("d")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmNameScreen), "drop-aside dialog")
    assert state.aside_db in screen_text(pilot)
    await pilot.press(*site.db.name, "enter")  # the target's name is not the aside's
    await pilot.pause()
    assert isinstance(app.screen, ConfirmNameScreen)
    assert site.db.exists(state.aside_db)
    await pilot.press("ctrl+u", *state.aside_db, "enter")  # clear the line, type the aside name
    await wait_for(pilot, lambda: state.aside_state == "dropped", "aside dropped")
    assert not site.db.exists(state.aside_db)
    await wait_for(pilot, lambda: "dropped" in screen_text(pilot), "summary redrawn")
    assert f"aside copy {state.aside_db} dropped" in summary.lines
    assert "Drop aside copy" not in screen_text(pilot)


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (120, 40)))
def test_complete_restore(site: Site, size: tuple[int, int]) -> None:
    site.backup()
    messages: list[Message] = []
    app = DrApp(site.config())
    asyncio.run(drive_complete_restore(app, site, size, messages))
    assert app.return_code == 0
    phases = {m.progress.phase for m in messages if isinstance(m, EngineProgress)}
    assert {"verify", "load"} <= phases
    loads = [
        m.progress for m in messages if isinstance(m, EngineProgress) and m.progress.phase == "load"
    ]
    assert loads[-1].done == loads[-1].total  # the bar reached the end
    journal_text = next(site.config().state_dir.glob("runs/*.json")).read_text()
    assert PASSWORD not in journal_text
    # the postmortem's timeline, written when the run finished
    (state,) = Journal(site.config().state_dir).runs()
    report = site.config().state_dir / "reports" / f"{state.run_id}.md"
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert state.backup is not None and state.backup.name in report.read_text()
    # printed to the shell on exit: the outcome and the report
    lines = exit_summary(app)
    assert lines[0].startswith(f"preskool-dr: run {state.run_id} done · RTO ")
    assert lines[1] == f"  report: {report}"
    assert len(lines) == 2  # the aside copy was dropped: no command for it


@pytest.mark.slow
def test_complete_restore_of_an_encrypted_backup_with_the_identity_in_the_environment(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the demo does: one backup encrypted to a key, PRESKOOL_DR_AGE_IDENTITY naming
    that key in the TUI's environment; the TUI verifies (decrypting) and restores it."""
    key = make_key(tmp_path / "keys")
    config = site.config()
    encrypting = dataclasses.replace(
        config, encryption=dataclasses.replace(config.encryption, recipients=(key.recipient,))
    )
    path = run_backup(encrypting, "daily", upload=False).path
    assert path.name.endswith(".sql.gz.age")
    monkeypatch.setenv(IDENTITY_ENV, str(key.identity))
    app = DrApp(site.config())
    asyncio.run(drive_complete_restore(app, site, (120, 40), []))
    assert app.return_code == 0
    (state,) = Journal(site.config().state_dir).runs()
    assert state.backup is not None and state.backup.name == path.name


async def drive_complete_restore(
    app: DrApp, site: Site, size: tuple[int, int], messages: list[Message]
) -> None:
    async with app.run_test(size=size, message_hook=messages.append) as pilot:
        await start_run(pilot)
        text = screen_text(pilot)
        assert f"RESTORE {site.db.name}@" in text
        assert f"run {app.engine.state.run_id}"[:40] in text  # type: ignore[union-attr]
        assert "✔ 2 Identify backup" in text
        assert "RPO " in text and "RTO 00:" in text
        await run_selected(pilot, "download")
        await run_selected(pilot, "verify")
        checksum_text = screen_text(pilot)
        verify = app.engine.state.verify  # type: ignore[union-attr]
        assert verify is not None
        # with an accepted companion (a default backup) the .sql.gz is read for its MD5 only
        assert ("PASS: checksum OK;" if verify.skipped else "PASS: checksum, gzip") in checksum_text
        assert ("gzip      not read: step 6 loads" in checksum_text) is bool(verify.skipped)
        bar = app.query_one(ChecksumPanel).query_one(ProgressBar)
        assert not bar.display or bar.percentage == 1  # full or gone, never stuck
        assert app.query_one(ChecksumPanel).has_class("-pass")
        await finish_run(pilot, site)
        text = screen_text(pilot)
        for number, title in enumerate(
            STEP_TITLES,
            start=1,
        ):
            assert f"✔ {number} {title}" in text
        assert "stopped" in str(app.query_one(RtoTimer).render())
        await pilot.press("q")


@pytest.mark.slow
def test_quit_between_steps_then_resume(site: Site) -> None:
    site.backup()
    asyncio.run(drive_quit_then_resume(site))


async def drive_quit_then_resume(site: Site) -> None:
    app = DrApp(site.config())
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        await run_selected(pilot, "download")
        await run_selected(pilot, "verify")
        run_id = app.engine.state.run_id  # type: ignore[union-attr]
        await pilot.press("q")
    assert app.return_code == 130  # quit mid-run: resumable
    lines = exit_summary(app)
    assert lines[0] == (
        f"preskool-dr: run {run_id} is unfinished: stopped before step 1 App offline"
    )
    assert lines[-1] == "  resume: preskool-dr tui"
    (unfinished,) = Journal(site.config().state_dir).unfinished()
    assert unfinished.run_id == run_id

    again = DrApp(site.config())
    async with again.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(again.screen, ResumeRunScreen), "resume offer")
        # pushed is not yet drawn: the first frame can lag
        await wait_for(pilot, lambda: run_id in screen_text(pilot), "resume offer drawn")
        text = screen_text(pilot)
        assert run_id in text and "·✔✔✔·····" in text  # the run's steps, as icons
        await pilot.press("enter")
        await wait_for(pilot, lambda: again.engine is not None, "resumed")
        text = screen_text(pilot)
        assert f"run {run_id}" in text
        for number in (2, 3, 4):
            assert f"✔ {number} " in text
        await finish_run(pilot, site)
        await pilot.press("q")
    assert again.return_code == 0
    assert Journal(site.config().state_dir).unfinished() == []
