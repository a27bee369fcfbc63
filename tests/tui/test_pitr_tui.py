"""Point-in-time recovery from the TUI (`p`), on a real cluster whose archive_command is the
product's wal-push (tests/support/pitr.py's scenario): the ranges, refusals shown inline, the
typed confirmation, the seven steps, the RPO and the stop command; exactly the rows before
the target on the recovered server; quitting mid-run. Plus a snapshot of the form."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import RichLog, Static

from preskool_dr.core.backup.basebackup import BaseBackupInfo
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.events import Event, EventSink, StepChanged, StepStatus
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.plan import RecoverableRange
from preskool_dr.core.pitr.server import stop_command
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.core.storage.catalog import BackupRecord
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.commands import palette_actions
from preskool_dr.tui.screens.checklist import ChecklistScreen
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
from preskool_dr.tui.screens.pitr import PitrScreen, StopRecoveryScreen
from preskool_dr.tui.widgets.pitr_ranges import seconds, span, whole_seconds
from tests.support.leaks import assert_no_secrets
from tests.support.notify import webhook_receiver
from tests.support.pitr import (
    ROWS,
    Scenario,
    copy_backups,
    drill_runbook,
    insert_batch,
    new_data_dir,
    scenario_env,
    sql,
    stop_server,
    switch_wal,
    wait_archived,
)
from tests.support.signing import assert_openssh_verifies, make_signing_key
from tests.support.tui import WAIT_SECONDS, screen_text, wait_for, wait_for_exit

# `scenario` (the cluster archiving WAL, built once per session) and `new_dirs` come from
# tests/conftest.py, `frozen` (a site only on disk) from tests/tui/conftest.py.


# On the worker that builds the PITR scenario (tests/test_pitr.py says why).
pytestmark = pytest.mark.xdist_group("pitr")


@pytest.fixture
def operator_env(scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The operator's environment for the scenario (no S3), as the TUI loads it."""
    env = scenario_env(scenario, tmp_path / "state")
    for var in list(os.environ):
        if var not in env:
            monkeypatch.delenv(var)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_config()


def target_between_batches(scenario: Scenario) -> datetime:
    """A whole second after every row so far, then a batch after it, archived: a target
    typed to the second that falls between two batches."""
    ((now,),) = sql(scenario.cluster, "SELECT clock_timestamp()")
    target = now.replace(microsecond=0) + timedelta(seconds=1)
    sql(scenario.cluster, f"SELECT pg_sleep({(target - now).total_seconds() + 0.3:.3f})")
    insert_batch(scenario.cluster, 1)  # after the target: must not be recovered
    segment = switch_wal(scenario.cluster)
    wait_archived(scenario.cluster, scenario.backup_dir / "wal", segment)
    return target


def field_text(screen: PitrScreen, selector: str) -> str:
    """A Static's whole text, however the screen wraps it."""
    return str(screen.query_one(selector, Static).content)


async def open_pitr(pilot: Pilot[Any]) -> PitrScreen:
    """Accept the incident time, press p, wait for the archive to be read."""
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, IncidentTimeScreen), "incident prompt")
    await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, IncidentTimeScreen), "prompt gone")
    await pilot.press("p")
    await wait_for(pilot, lambda: isinstance(app.screen, PitrScreen), "the PITR screen")
    screen = app.screen
    assert isinstance(screen, PitrScreen)
    await wait_for(pilot, lambda: screen.ranges is not None, "the ranges read")
    return screen


async def check_refused(pilot: Pilot[Any], screen: PitrScreen, expected: str) -> None:
    await wait_for(pilot, lambda: not screen.checking, "the check done")
    await wait_for(pilot, lambda: expected in field_text(screen, "#pitr-error"), expected)
    assert field_text(screen, "#pitr-error").startswith("✖ ")
    assert isinstance(pilot.app.screen, PitrScreen) and screen.runner is None


async def start_recovery(
    pilot: Pilot[Any], screen: PitrScreen, target: datetime, data_dir: Path, port: int
) -> None:
    """Fill the form (target, directory, port), then type the directory to confirm."""
    await pilot.press("ctrl+u", *seconds(target), "tab", "ctrl+u", *str(data_dir))
    await pilot.press("tab", "ctrl+u", *str(port), "enter")
    await wait_for(
        pilot, lambda: isinstance(pilot.app.screen, ConfirmNameScreen), "the confirmation"
    )
    # Pushed is not yet drawn (a loaded machine shows it a few frames later).
    await wait_for(pilot, lambda: "Start point-in-time recovery?" in screen_text(pilot), "it drawn")
    assert f"{seconds(target)} UTC" in screen_text(pilot)
    await pilot.press(*str(data_dir), "enter")
    await wait_for(pilot, lambda: screen.runner is not None, "the recovery started")


@pytest.mark.slow
def test_pitr_from_the_tui_recovers_exactly_the_rows_before_the_target(
    scenario: Scenario, operator_env: Config, new_dirs: list[Path]
) -> None:
    target = target_between_batches(scenario)
    data_dir = new_data_dir(scenario, new_dirs)
    port = free_port()
    app = DrApp(operator_env, server_python=scenario.python)
    try:
        asyncio.run(recover_from_the_tui(app, scenario, target, data_dir, port))
        assert app.return_code == 0
        recovered = sql(scenario.cluster, "SELECT id FROM pitr_events ORDER BY id", port)
        before = sql(
            scenario.cluster,
            f"SELECT id FROM pitr_events WHERE at <= '{target.isoformat()}' ORDER BY id",
        )
        assert recovered == before and len(before) == sum(ROWS.values())
        (after,) = sql(scenario.cluster, f"SELECT count(*) FROM pitr_events WHERE at > '{target}'")
        assert after == (ROWS[1],)  # production still has the batch after the target
        ((in_recovery,),) = sql(scenario.cluster, "SELECT pg_is_in_recovery()", port)
        assert not in_recovery
    finally:
        stop_server(data_dir)
    assert not (data_dir / "postmaster.pid").exists()


async def recover_from_the_tui(
    app: DrApp, scenario: Scenario, target: datetime, data_dir: Path, port: int
) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pitr(pilot)
        assert screen.ranges is not None
        (shown,) = screen.ranges
        window = whole_seconds(shown)
        assert window is not None and window[0] <= target <= window[1]
        text = screen_text(pilot)
        assert f"✔ {span(*window)}  {scenario.base_name}" in text
        assert scenario.base_name in text
        assert app.focused is screen.query_one("#pitr-target")

        # Before the oldest base backup: refused inline, with the range; nothing created.
        # Enter moves on to the next empty field, and checks once none is empty.
        await pilot.press(*"2020-01-01 00:00", "enter")
        assert app.focused is screen.query_one("#pitr-dir")
        await pilot.press(*str(data_dir), "enter")
        await check_refused(pilot, screen, "before the earliest recoverable time")
        assert seconds(shown.start).replace(" ", "T") in field_text(screen, "#pitr-error")
        assert "✖ target 2020-01-01T00:00:00Z" in screen_text(pilot)
        assert app.focused is screen.query_one("#pitr-target")
        # Not a time at all; then a directory that is not empty (the scenario's root).
        await pilot.press("ctrl+u", *"yesterday", "enter")
        await check_refused(pilot, screen, "'yesterday' is not an ISO-8601 time")
        await pilot.press("ctrl+u", *seconds(target), "tab", "ctrl+u", *str(scenario.root))
        await pilot.press("enter")
        await check_refused(pilot, screen, "is not an empty directory")
        assert app.focused is screen.query_one("#pitr-dir")
        assert not data_dir.exists()

        await pilot.press("shift+tab")
        assert app.focused is screen.query_one("#pitr-target")
        await start_recovery(pilot, screen, target, data_dir, port)
        await wait_for(pilot, lambda: screen.state is not None, "the recovery ended")
        await pilot.pause()
        assert screen.error is None and screen.state is not None
        assert screen.state.result == "done" and screen.state.recovery_end is not None
        text = screen_text(pilot)
        for number in range(1, len(STEPS) + 1):
            assert f"✔ {number} " in text
        assert "✔ Recovered to" in text and "RPO achieved:" in text
        result = field_text(screen, "#pitr-result")
        assert f"Stop it: {stop_command(data_dir)}" in result
        assert f"Server running on port {port}, timeline 2 (WAL archiving off" in result
        rpo = (target - screen.state.recovery_end).total_seconds()
        assert screen.state.rpo_seconds == pytest.approx(rpo) and rpo < 3600
        assert f"Recovered to {seconds(screen.state.recovery_end)} UTC" in result
        # The log wraps at 80 columns: its lines joined again.
        log = " ".join(line.text.rstrip() for line in screen.query_one("#pitr-log", RichLog).lines)
        assert "recovery stopping before commit of transaction" in log  # the server's own log
        assert_no_secrets(text, result, log)
        await pilot.press("q")
        await wait_for_exit(app)


@pytest.mark.slow
def test_quitting_mid_recovery_asks_then_stops_and_shows_the_running_server(
    scenario: Scenario, operator_env: Config, new_dirs: list[Path]
) -> None:
    data_dir = new_data_dir(scenario, new_dirs)
    app = DrApp(operator_env, server_python=scenario.python)
    # Hold the recovery right after the server has started, as if the operator pressed q
    # just then: the replay would otherwise be over before a key could arrive.
    release = threading.Event()
    post = app.post_engine_event

    def held(event: Event) -> None:
        post(event)
        if isinstance(event, StepChanged) and (event.step_id, event.status) == (
            "start",
            StepStatus.DONE,
        ):
            release.wait(WAIT_SECONDS)

    app.post_engine_event = held  # type: ignore[method-assign]
    try:
        asyncio.run(quit_mid_recovery(app, scenario, data_dir, release))
    finally:
        release.set()
        stop_server(data_dir)
    (journal,) = (operator_env.state_dir / "pitr").glob("*.json")
    record = json.loads(journal.read_text())
    assert record["result"] == "interrupted" and record["server_running"]
    assert record["steps"]["replay"] == "failed"
    assert app.return_code == 130  # the recovery was stopped mid-run


async def quit_mid_recovery(
    app: DrApp, scenario: Scenario, data_dir: Path, release: threading.Event
) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pitr(pilot)
        assert screen.ranges is not None
        window = whole_seconds(screen.ranges[0])
        assert window is not None
        await start_recovery(pilot, screen, window[1], data_dir, free_port())
        await wait_for(
            pilot, lambda: screen.steps["start"] is StepStatus.DONE, "the server started"
        )
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, StopRecoveryScreen), "the question")
        text = screen_text(pilot)
        assert "at step 6 (Replay archived WAL" in text and "keeps running" in text
        await pilot.press("n")  # keep it running
        await pilot.pause()
        assert app.screen is screen and screen.running
        await pilot.press("escape")  # cannot leave while it runs
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, StopRecoveryScreen), "asked again")
        await pilot.press("y")
        release.set()
        await wait_for(pilot, lambda: screen.state is not None, "the recovery stopped")
        await pilot.pause()
        assert app.return_code is None  # still there, showing what is left running
        result = field_text(screen, "#pitr-result")
        assert result.startswith("■ Stopped at step replay: point-in-time recovery interrupted")
        assert f"Stop it: {stop_command(data_dir)}" in result
        assert "■ Stopped at step replay" in screen_text(pilot)
        assert (data_dir / "postmaster.pid").exists()
        await pilot.press("escape")  # back to the checklist, then out
        await pilot.pause()
        assert not isinstance(app.screen, PitrScreen)
        await pilot.press("q")
        await wait_for_exit(app)


@pytest.mark.slow
def test_a_failed_recovery_makes_the_tui_exit_1(
    scenario: Scenario,
    operator_env: Config,
    new_dirs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contract: the TUI exits 1 when a step failed, a PITR step too; the recovery's start
    and its failed step are notified as the CLI's `pitr` does."""
    backups = copy_backups(scenario, "tui-badbase")
    tar = backups / scenario.base_name / "base.tar.gz"
    with tar.open("r+b") as handle:
        handle.seek(tar.stat().st_size // 2)
        handle.write(b"\x00\x01\x02\x03")
    monkeypatch.setenv("BACKUP_DIR", str(backups))
    data_dir = new_data_dir(scenario, new_dirs)
    with webhook_receiver() as receiver:
        monkeypatch.setenv("PRESKOOL_DR_NOTIFY_URLS", receiver.url())
        app = DrApp(load_config(), server_python=scenario.python)
        asyncio.run(fail_from_the_tui(app, data_dir))
    assert app.return_code == 1
    assert not data_dir.exists()
    (started,) = receiver.of("pitr_started")
    (failed,) = receiver.of("pitr_failed")
    assert f"recovery of {scenario.base_name} + archived WAL" in started["message"]
    assert failed["message"].startswith("step fetch failed: ")
    assert receiver.of("pitr_finished") == []


async def fail_from_the_tui(app: DrApp, data_dir: Path) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pitr(pilot)
        assert screen.ranges is not None
        window = whole_seconds(screen.ranges[0])
        assert window is not None
        await start_recovery(pilot, screen, window[1], data_dir, free_port())
        await wait_for(pilot, lambda: screen.state is not None, "the recovery ended")
        await pilot.pause()
        assert screen.state is not None and screen.state.result == "failed"
        result = field_text(screen, "#pitr-result")
        assert (
            result.startswith("✖ Failed at step fetch") and "the base backup is damaged" in result
        )
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q")
        await wait_for_exit(app)


@pytest.mark.slow
def test_pitr_drill_from_the_tui_signs_an_entry_with_its_rpo(
    scenario: Scenario,
    operator_env: Config,
    new_dirs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(drill_runbook(tmp_path / "site")))
    key, allowed = make_signing_key(tmp_path, "oncall")
    log = tmp_path / "drill-log.jsonl"
    data_dir = new_data_dir(scenario, new_dirs)
    app = DrApp(
        load_config(),
        drill=True,
        operator="oncall",
        sign_key=key,
        drill_log=log,
        server_python=scenario.python,
    )
    asyncio.run(drill_from_the_tui(app, data_dir))
    assert app.return_code == 0
    entry = json.loads(log.read_text())
    assert entry["method"] == "pitr" and entry["performed_by"] == "oncall"
    assert entry["result"] == "pass" and entry["backup"] == scenario.base_name
    assert entry["rpo_seconds"] < 3600 and entry["rpo_ok"]
    assert all(c["ok"] for c in entry["validation"])
    assert_openssh_verifies(entry, allowed, "oncall", tmp_path)


async def drill_from_the_tui(app: DrApp, data_dir: Path) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_pitr(pilot)
        assert screen.ranges is not None
        window = whole_seconds(screen.ranges[0])
        assert window is not None
        await pilot.press("ctrl+u", *seconds(window[1]), "tab", "ctrl+u", *str(data_dir))
        await pilot.press("tab", "ctrl+u", *str(free_port()), "enter")
        await wait_for(pilot, lambda: "· a drill:" in screen_text(pilot), "the drill confirmation")
        assert isinstance(app.screen, ConfirmNameScreen)
        await pilot.press(*str(data_dir), "enter")
        await wait_for(pilot, lambda: screen.drill_result is not None, "the drill recorded")
        assert screen.state is not None and screen.state.result == "done"
        assert screen.drill_result is not None
        assert screen.drill_result.startswith("Drill PASS: drill recorded at line 1")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q")
        await wait_for_exit(app)


# ---------------------------------------------------------------- the form, fixed


def test_p_is_bound_and_in_the_command_palette() -> None:
    bindings = ChecklistScreen.BINDINGS
    (binding,) = [b for b in bindings if isinstance(b, Binding) and b.id == "pitr"]
    assert binding.key == "p" and binding.tooltip
    assert ("Point-in-time recovery", binding.tooltip, "pitr") in list(
        palette_actions(ChecklistScreen)
    )


def fixed_range(
    name: str, ended: datetime, end: datetime | None, last: str | None, gap: str | None = None
) -> RecoverableRange:
    info = BaseBackupInfo(
        name=name,
        server="db1:5432",
        server_version="15.6",
        timeline=1,
        start_lsn="3/A0000028",
        end_lsn="3/A0000138",
        start_time=ended - timedelta(seconds=40),
        end_time=ended,
        wal_segment_size=16 << 20,
        members={},
        archive_mode="on",
    )
    record = BackupRecord(name, "base", ended, 1 << 30, None, None, None, None, True)
    return RecoverableRange(info, record, ended, end, last, gap)


def fixed_ranges(config: Config, on_event: EventSink) -> list[RecoverableRange]:
    """The newest base backup with no WAL after it yet, one usable (its ends not on whole
    seconds), and an older one whose archive has a gap."""
    return [
        fixed_range(
            "preskool-base-20260220_045000",
            datetime(2026, 2, 20, 4, 50, 31, tzinfo=UTC),
            None,
            None,
        ),
        fixed_range(
            "preskool-base-20260220_023000",
            datetime(2026, 2, 20, 2, 30, 41, 520_000, tzinfo=UTC),
            datetime(2026, 2, 20, 4, 48, 2, 130, tzinfo=UTC),
            "0000000100000003000000A7",
        ),
        fixed_range(
            "preskool-base-20260219_023000",
            datetime(2026, 2, 19, 2, 30, 12, tzinfo=UTC),
            datetime(2026, 2, 19, 17, 2, 44, 250_000, tzinfo=UTC),
            "0000000100000002000000FE",
            gap="0000000100000002000000FF",
        ),
    ]


def test_pitr_form_snapshot(frozen: Any, snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, DrApp)
        await pilot.press("enter")  # the incident time
        screen = PitrScreen(app.config, start=app.start_pitr, ranges=fixed_ranges, port=5433)
        await app.push_screen(screen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press(*"2026-02-20 4:30", "enter", *"/var/lib/postgresql/15/pitr", "enter")
        await pilot.pause()
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(frozen.app(), run_before=run_before, terminal_size=(80, 24))
