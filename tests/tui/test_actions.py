"""Keys other than the happy path: skip (with a reason), help, retry, blocked steps, the
incident time, the command palette, drill mode, and the CLI entry."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from textual.command import CommandPalette

from preskool_dr.cli.main import build_parser
from preskool_dr.cli.tui_cmd import run as tui_run
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.restore.journal import Journal
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.commands import palette_actions
from preskool_dr.tui.screens.checklist import ChecklistScreen
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen, parse_incident_time
from preskool_dr.tui.screens.skip_reason import SkipReasonScreen
from preskool_dr.tui.widgets.step_info import StepInfo
from tests.support.site import Site
from tests.support.tui import (
    confirm_recreate,
    run_selected,
    screen_text,
    start_run,
    status,
    wait_for,
    wait_for_exit,
)


def messages(app: DrApp) -> list[str]:
    return [n.message for n in app._notifications]


async def keys_on_a_run(app: DrApp, site: Site) -> None:
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await start_run(pilot)
        assert app.checklist.selected_id == "download"
        assert app.focused is app.checklist

        # ? explains the selected step, with its runbook command; Esc closes
        await pilot.press("question_mark")
        assert app.help.is_open and app.focused is app.checklist  # the focus stays put
        text = screen_text(pilot)
        assert "Step 3: Download from S3" in text and "aws s3 cp" in text
        await pilot.press("r")  # app keys do nothing under a dialog
        assert status(app, "download") is StepStatus.PENDING
        await pilot.press("down")  # the help follows the selection
        assert "Step 4: Verify checksum" in screen_text(pilot)
        await pilot.press("up", "escape")
        assert not app.help.is_open and app.focused is app.checklist
        assert "Esc closes" not in screen_text(pilot)
        for close in ("question_mark", "q"):  # ? and q close it too; q does not quit
            await pilot.press("question_mark")
            assert app.help.is_open
            await pilot.press(close)
            assert not app.help.is_open and app.is_running

        # s on a step that protects the data: refused, with the reason
        await pilot.press("s")
        await pilot.pause()
        assert any("cannot be skipped" in m for m in messages(app))

        # R only retries a failed step: not offered (nor acting) on the others
        assert not app.checklist_screen.check_action("retry_step", ())
        await pilot.press("R")
        await pilot.pause()
        assert status(app, "download") is StepStatus.PENDING

        # r on a blocked step says why instead of running it
        await pilot.press("end", "up", "up", "up")  # step 6, Restore
        assert app.checklist.selected_id == "restore"
        info = str(app.query_one(StepInfo).render())
        assert info.startswith(
            "Step 6: Restore\nblocked: step 3 (Download from S3) must pass first"
        )
        await pilot.press("r")
        await pilot.pause()
        assert any("Step 6 cannot run" in m for m in messages(app))
        assert status(app, "restore") is StepStatus.PENDING

        app.clear_notifications()  # toasts sit on top of dialogs while they last

        # s on step 1 asks a reason; an empty one is refused
        await pilot.press("home", "s")
        await wait_for(pilot, lambda: isinstance(app.screen, SkipReasonScreen), "skip dialog")
        await pilot.press("enter")
        assert isinstance(app.screen, SkipReasonScreen)
        assert "A skip needs a reason" in screen_text(pilot)
        await pilot.press(*"stopped by the host team", "enter")
        await wait_for(pilot, lambda: status(app, "app_offline") is StepStatus.SKIPPED, "skipped")
        assert "↷ 1 App offline" in screen_text(pilot)
        assert app.checklist.selected_id == "download"  # back to where the run is

        # t changes the incident time: the RTO clock follows the journal
        await pilot.press("t")
        assert isinstance(app.screen, IncidentTimeScreen)
        await pilot.press("ctrl+u", *"not a time", "enter")
        assert "is not YYYY-MM-DD HH:MM" in screen_text(pilot)
        earlier = (datetime.now(UTC) - timedelta(hours=1, minutes=40)).strftime("%Y-%m-%d %H:%M")
        await pilot.press("ctrl+u", *earlier, "enter")
        await pilot.pause()
        assert not isinstance(app.screen, IncidentTimeScreen)
        # HH:MM drops the seconds: 1 h 40 min and up to a minute (plus the typing) ago
        assert "RTO 01:40:" in screen_text(pilot) or "RTO 01:41:" in screen_text(pilot)
        assert "WARN" in screen_text(pilot)  # past 75 % of the 2 h target
        assert app.query_one("#rto").has_class("-warning")

        # ctrl+p lists every action by name and runs the one chosen
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")
        await pilot.press(*"Log panel")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: app.query_one("#switcher").current == "log",  # type: ignore[attr-defined]
            "log panel from the palette",
        )
        await wait_for(  # the log draws what waited once it is shown
            pilot,
            lambda: "skipped: stopped by the host team" in screen_text(pilot),
            "the skip in the log",
        )
        await pilot.press("q")
    state = Journal(site.config().state_dir).load(app.engine.state.run_id)  # type: ignore[union-attr]
    assert state.step("app_offline").skip_reason == "stopped by the host team"
    assert state.incident_declared_at.strftime("%Y-%m-%d %H:%M") == earlier


@pytest.mark.slow
def test_keys_on_a_run(site: Site) -> None:
    site.backup()
    app = DrApp(site.config())
    asyncio.run(keys_on_a_run(app, site))
    assert app.return_code == 130


def test_palette_lists_every_action() -> None:
    titles = {title for title, _, _ in palette_actions(ChecklistScreen)}
    bound = {b.description for b in ChecklistScreen.BINDINGS if getattr(b, "description", "")}
    assert bound | {t for t, _, _ in ChecklistScreen.PALETTE_ONLY} <= titles
    assert {"Run step", "Skip", "Retry", "Backups", "Help", "Quit", "Log panel"} <= titles
    assert "Drop the aside copy" in titles and "Request a Glacier restore" in titles


def test_incident_time_input() -> None:
    now = datetime(2026, 2, 20, 4, 54, tzinfo=UTC)
    assert parse_incident_time(" 2026-02-20 02:15 ", now) == datetime(
        2026, 2, 20, 2, 15, tzinfo=UTC
    )
    for bad in ("", "02:15", "2026-02-31 02:15", "2026-02-20T02:15"):
        with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM"):
            parse_incident_time(bad, now)
    with pytest.raises(ValueError, match="future"):
        parse_incident_time("2026-02-20 05:00", now)


async def drill_header(app: DrApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        text = screen_text(pilot)
        assert "[DRILL]" in text
        assert f"DRILL preskool_drill@{app.config.database.host}" in text


def test_drill_banner(site: Site) -> None:
    asyncio.run(drill_header(DrApp(site.config(), drill=True)))


def test_cli_options_reach_the_app(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        ["tui", "--drill", "--target-db", "rehearsal", "--backup", "latest"]
    )
    seen: dict[str, object] = {}

    def fake_run(self: DrApp) -> None:  # the terminal is not ours in a test
        seen.update(drill=self.drill, target=self.target_db, backup=self.backup_spec)
        self._return_code = 130

    monkeypatch.setattr(DrApp, "run", fake_run)

    class Ctx:
        config = site.config()

    assert tui_run(args, Ctx()) == 130
    assert seen == {"drill": True, "target": "rehearsal", "backup": "latest"}


async def start_with_backup_option(app: DrApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")  # the incident time: now
        await wait_for(
            pilot,
            lambda: app.engine is not None and status(app, "identify") is StepStatus.DONE,
            "run started with --backup latest",
        )
        assert app.checklist.selected_id == "download"
        await pilot.press("q")


def test_backup_option_starts_the_run(site: Site) -> None:
    site.backup()
    app = DrApp(site.config(), backup="latest")
    asyncio.run(start_with_backup_option(app))
    assert app.return_code == 130


async def recreate_then_roll_back(app: DrApp, site: Site) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        for step_id in ("download", "verify", "app_offline"):
            await run_selected(pilot, step_id)
        await confirm_recreate(pilot, site.db)
        assert app.engine is not None and app.engine.state.aside_state == "renamed"
        # the target is step 5's new database: empty, closed until step 6's checks pass
        assert site.db.exists(site.db.name)
        assert not site.db.accepts_connections()
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")
        await pilot.press(*"Roll back")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmNameScreen), "rollback dialog")
        assert "renamed back" in screen_text(pilot)
        await pilot.press(*site.db.name, "enter")
        await wait_for(pilot, lambda: app.engine.state.result == "rolled-back", "rolled back")  # type: ignore[union-attr]
        await pilot.press("q")


@pytest.mark.slow
def test_rollback_from_the_palette(site: Site) -> None:
    site.backup()
    before = site.db.row_counts()
    app = DrApp(site.config())
    asyncio.run(recreate_then_roll_back(app, site))
    assert app.return_code == 0  # a rolled-back run is finished
    assert site.db.row_counts() == before


async def terminal_gone(app: DrApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        await pilot.press("home", "r")
        await wait_for(pilot, lambda: status(app, "app_offline") is StepStatus.RUNNING, "running")
        # the terminal watcher, on its thread as in the app: pytest's stdin is no terminal,
        # as after an SSH hang-up
        threading.Thread(target=app._watch_terminal, daemon=True).start()
        await wait_for_exit(app)


@pytest.mark.slow
def test_terminal_check_stops_the_step(slow_site: Site) -> None:
    slow_site.backup()
    app = DrApp(slow_site.config())
    asyncio.run(terminal_gone(app))
    assert app.return_code == 130 and app.hung_up
    (state,) = Journal(slow_site.config().state_dir).unfinished()
    assert state.step("app_offline").status is StepStatus.FAILED
