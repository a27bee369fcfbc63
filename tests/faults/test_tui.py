"""TUI: the terminal resized to 40x12 and back while step 6 loads, the SSH session dropped
(SIGHUP) mid-load and the run resumed, a flood of output from an application command.

Guarantee: the TUI's screen never runs the restore: the engine works in the App's thread
workers and reports by messages, so resizing the terminal (down to 40x12 and back) neither
stops nor disturbs a running step, and the checklist shows what the journal says at every
size. A dropped SSH session (SIGHUP) stops the running step, records it as interrupted and
exits 130 with the old database kept aside; the next `preskool-dr tui` offers to resume the
run and finishes it. Output floods are bounded: the log panel keeps the newest lines only
(its buffer never grows past MAX_LINES, and it says how many it dropped) and draws them in
batches, so keys are still handled while a command prints hundreds of thousands of lines.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import ContentSwitcher

from preskool_dr.core.base.events import LogLine, StepStatus
from preskool_dr.core.restore.engine import OUTPUT_TAIL
from preskool_dr.core.restore.journal import Journal
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.quit_confirm import QuitScreen
from preskool_dr.tui.screens.resume_run import ResumeRunScreen
from preskool_dr.tui.widgets.log_panel import MAX_LINES
from preskool_dr.tui.widgets.summary_panel import SummaryPanel
from tests.support.backups import (
    backup_sql,
    blocker,
    create_db,
    insert_before,
    rewrite_backup,
    wait_until_blocked,
)
from tests.support.cli import cli_argv
from tests.support.site import Site
from tests.support.terminal import Tmux, alive, children
from tests.support.tui import (
    STEP_TITLES,
    confirm_recreate,
    run_selected,
    screen_text,
    start_run,
    status,
    wait_for,
    wait_for_exit,
)

# Prints `lines` lines, waits for a file, prints as many again: a deploy tool gone chatty,
# held half way so the test can press a key while the step is certainly still running.
FLOOD = """\
import os, sys, time
release, half = sys.argv[1], int(sys.argv[2])
for i in range(1, 2 * half + 1):
    if i == half + 1:
        print("flood: waiting for the test", flush=True)
        while not os.path.exists(release):
            time.sleep(0.05)
    print(f"#{i}")  # short: a wrapped line would split what the case reads
"""
FLOOD_HALF = 100_000


def hold_the_load(site: Site) -> str:
    """A backup whose load waits (in a DO loop, before COPY students) until a database named
    like the returned one exists: step 6 is held in progress until the case says go."""
    backup = site.backup()
    release = f"{site.db.name}_go"
    sql_bytes = insert_before(backup_sql(backup), b"COPY public.students", blocker(release))
    rewrite_backup(backup, sql_bytes)

    def let_go() -> None:  # whatever happened, no psql is left waiting in the blocker
        if not site.db.exists(release):
            create_db(site.db, release)

    site.cleanups.append(let_go)
    return release


async def load_until_held(pilot: Pilot[Any], site: Site) -> DrApp:
    """Steps 2-5 through the keys, then `r` on step 6 until psql sits in the blocker."""
    app = await start_run(pilot)
    for step_id in ("download", "verify", "app_offline"):
        await run_selected(pilot, step_id)
    await confirm_recreate(pilot, site.db)
    await wait_for(pilot, lambda: app.checklist.selected_id == "restore", "step 6 selected")
    await pilot.press("r")
    await asyncio.to_thread(wait_until_blocked, site.db, site.db.name)
    return app


def checklist_matches_journal(app: DrApp, site: Site) -> list[StepStatus]:
    """The checklist widget shows the journal on disk, step by step; returns the statuses."""
    assert app.engine is not None
    on_disk = Journal(site.state_dir).load(app.engine.state.run_id)
    shown = [app.checklist.status(i) for i in range(len(STEP_TITLES))]
    assert shown == [record.status for record in on_disk.steps]
    return shown


def checklist_lines(statuses: list[StepStatus]) -> list[str]:
    """The checklist rows the screen must show for `statuses`."""
    icons = {StepStatus.DONE: "✔", StepStatus.RUNNING: "▶", StepStatus.PENDING: "·"}
    return [
        f"{icons[s]} {n} {title}"
        for n, (s, title) in enumerate(zip(statuses, STEP_TITLES, strict=True), 1)
    ]


async def finish_after_the_load(pilot: Pilot[Any], app: DrApp) -> None:
    """Steps 7-9, then the end-of-run summary (the aside copy is kept: no dialog offers to
    drop it) and quit."""
    for step_id in ("migrate", "app_online", "health"):
        await run_selected(pilot, step_id)
    await wait_for(pilot, lambda: app.query_one(SummaryPanel).display, "summary")
    assert not isinstance(app.screen, ConfirmNameScreen)
    await pilot.press("q")


# ---------------------------------------------------------------- resize


@pytest.mark.slow
def test_resize_to_40x12_and_back_during_the_load(site: Site) -> None:
    """The terminal shrinks to 40x12 while step 6 loads, then grows to 80x24 and 120x40: no
    crash, the load goes on and completes, the checklist shows the journal at every size."""
    release = hold_the_load(site)
    at_backup = site.checksum()
    site.change_data()
    before = site.checksum()
    app = DrApp(site.config())
    asyncio.run(resize_during_the_load(app, site, release))

    assert app.return_code == 0
    state = site.the_run()
    assert state.result == "done"
    assert site.checksum() == at_backup  # the backup's rows, loaded to the end
    assert state.aside_db and site.checksum(state.aside_db) == before
    assert site.calls() == ["stop", "migrate", "start"]
    site.assert_no_leak()


async def resize_during_the_load(app: DrApp, site: Site, release: str) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await load_until_held(pilot, site)
        expected = [StepStatus.DONE] * 5 + [StepStatus.RUNNING] + [StepStatus.PENDING] * 3
        for width, height in ((40, 12), (80, 24), (120, 40)):
            await pilot.resize_terminal(width, height)
            assert app.size == (width, height)
            assert app.running_step() == "restore"  # the load did not notice
            assert checklist_matches_journal(app, site) == expected
            text = screen_text(pilot)  # the whole screen draws at this size
            if width >= 80:  # the checklist has room for its titles again
                for line in checklist_lines(expected):
                    assert line in text, f"{line!r} at {width}x{height}:\n{text}"
        create_db(site.db, release)  # let the load go on
        await wait_for(
            pilot,
            lambda: status(app, "restore") is StepStatus.DONE and not app.engine_busy(),
            "the load finished",
        )
        expected[5] = StepStatus.DONE
        assert checklist_matches_journal(app, site) == expected
        assert "✔ 6 Restore" in screen_text(pilot)
        await pilot.resize_terminal(40, 12)
        await pilot.resize_terminal(80, 24)
        await finish_after_the_load(pilot, app)


# ---------------------------------------------------------------- SSH hang-up


@pytest.mark.slow
def test_hangup_mid_load_then_resume_in_the_tui(site: Site) -> None:
    """The SSH session drops (SIGHUP) while step 6 loads: exit 130, step 6 recorded as
    interrupted, the old database aside; the next TUI offers the run and finishes it."""
    release = hold_the_load(site)
    at_backup = site.checksum()
    site.change_data()
    before = site.checksum()
    app = DrApp(site.config())
    asyncio.run(hang_up_during_the_load(app, site))

    assert app.hung_up and app.stop_signal == signal.SIGHUP
    assert app.return_code == 130
    state = site.the_run()
    assert state.result == "interrupted"
    record = state.step("restore")
    assert record.status is StepStatus.FAILED
    assert f"resume with --resume {state.run_id}" in record.detail
    assert state.aside_db and site.checksum(state.aside_db) == before  # production kept aside
    assert site.calls() == ["stop"]

    create_db(site.db, release)  # the blocked backend may finish: the resume reloads anyway
    again = DrApp(site.config())
    asyncio.run(resume_and_finish(again, state.run_id))

    assert again.return_code == 0
    assert Journal(site.state_dir).unfinished() == []
    assert site.checksum() == at_backup
    assert site.checksum(state.aside_db) == before
    assert site.calls() == ["stop", "migrate", "start"]
    site.assert_no_leak()


async def hang_up_during_the_load(app: DrApp, site: Site) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await load_until_held(pilot, site)
        os.kill(os.getpid(), signal.SIGHUP)  # what sshd sends when the session drops
        await wait_for_exit(app)


async def resume_and_finish(app: DrApp, run_id: str) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeRunScreen), "resume offer")
        # pushed is not yet drawn: the first frame can lag
        await wait_for(pilot, lambda: run_id in screen_text(pilot), "resume offer drawn")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.engine is not None, "resumed")
        assert status(app, "restore") is StepStatus.FAILED
        assert "✖ 6 Restore" in screen_text(pilot)
        await run_selected(pilot, "restore")  # r on the failed step: a clean reload
        await finish_after_the_load(pilot, app)


# The pane's process, between the terminal and the TUI like a login shell: runs its argv as
# a child in the same terminal and writes the child's exit code to a file. On the hang-up it
# either passes SIGHUP on to the child (as bash does to its jobs) or ignores it (a shell
# that does not: the TUI must notice the dead terminal by itself).
SHELL_STAND_IN = """\
import os, signal, subprocess, sys
child = subprocess.Popen(sys.argv[3:])
forward = sys.argv[2] == "forward"
signal.signal(signal.SIGHUP, lambda *_: forward and os.kill(child.pid, signal.SIGHUP))
code = child.wait()
open(sys.argv[1], "w").write(str(code))
"""
# from the closed pane: the hang-up noticed (at once, or by the 5 s terminal check), the
# step stopped and recorded, then at most 3 s of Textual's shutdown; the rest is slack
HANG_UP_EXIT_BOUND = 40.0


@pytest.mark.parametrize("sighup", ["forward", "ignore"])
@pytest.mark.slow
def test_closed_tmux_pane_mid_load_exits_130_and_frees_the_lock(site: Site, sighup: str) -> None:
    """A real terminal (a tmux pane) closed while step 6 loads: the TUI process ends with 130
    within seconds (its event loop is stuck writing to the dead terminal), the journal says
    interrupted, and the run's locks are free: a headless resume finishes the run."""
    release = hold_the_load(site)
    at_backup = site.checksum()
    code_file = site.root / "tui-exit-code"
    argv = cli_argv("tui", runbook=site.runbook)
    command = shlex.join([sys.executable, "-c", SHELL_STAND_IN, str(code_file), sighup, *argv])
    pane = Tmux(f"exec {command}", site.root, size=(100, 30), env=site.env())
    site.cleanups.append(pane.kill)

    pane.wait_for("incident", seconds=60)
    (tui_pid,) = children(pane.pane_pid)
    pane.keys("Enter")  # declared now
    pane.wait_for("Enter chooses it", seconds=60)
    time.sleep(1)  # the list takes the focus once it is filled
    pane.keys("Enter")  # the newest backup
    pane.wait_for("✔ 2 Identify backup", seconds=60)
    for number, title in ((3, "Download from S3"), (4, "Verify checksum"), (1, "App offline")):
        time.sleep(0.5)  # the checklist moves to the next step once the last one is drawn
        pane.keys("r")
        pane.wait_for(f"✔ {number} {title}", seconds=60)
    time.sleep(0.5)
    pane.keys("r")  # step 5 asks for the database's name
    pane.wait_for("moved aside", seconds=60)
    pane.keys(site.db.name, "Enter")
    pane.wait_for("✔ 5 Recreate database", seconds=60)
    time.sleep(0.5)
    pane.keys("r")
    wait_until_blocked(site.db, site.db.name)

    closed_at = time.monotonic()
    pane.kill(seconds=HANG_UP_EXIT_BOUND)  # the SSH session drops: SIGHUP, a dead terminal
    took = time.monotonic() - closed_at
    assert not alive(tui_pid), f"the TUI still runs {took:.0f} s after the hang-up"
    assert code_file.read_text() == "130"

    state = site.the_run()
    assert state.result == "interrupted"
    assert state.step("restore").status is StepStatus.FAILED
    create_db(site.db, release)  # the held backend may end: the resume reloads anyway
    resumed = site.resume(state.run_id)  # takes the run's lock: nobody holds it any more
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert site.checksum() == at_backup


# ---------------------------------------------------------------- output flood


@pytest.mark.slow
def test_output_flood_keeps_the_log_bounded_and_keys_working(site: Site) -> None:
    """app.stop prints 200,000 lines: a key pressed while it still runs is handled, and the
    log panel, shown and then hidden, holds at most MAX_LINES lines: the newest ones."""
    site.backup()
    release = site.root / "flood-release"
    site.set_app(stop=[sys.executable, "-c", FLOOD, str(release), str(FLOOD_HALF)])
    app = DrApp(site.config())
    asyncio.run(flood_the_log(app, site, release))

    assert app.return_code == 130  # quit between steps: the run stays resumable
    output = site.the_run().step("app_offline").output
    assert 0 < len(output) <= OUTPUT_TAIL  # the journal keeps a tail, too
    assert output[-1] == f"#{2 * FLOOD_HALF}"


async def flood_the_log(app: DrApp, site: Site, release: Path) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        await pilot.press("home", "r")  # step 1: app.stop is the flood
        assert app.engine is not None
        step = app.engine.step("app_offline")
        await wait_for(
            pilot, lambda: step.output[-1:] == ["flood: waiting for the test"], "half the flood"
        )
        log = app.log_panel
        switcher = app.query_one(ContentSwitcher)
        assert switcher.current == "log"  # step 1 shows the log
        await pilot.press("1")  # the backups panel, while the command still runs
        assert switcher.current == "backups"
        assert status(app, "app_offline") is StepStatus.RUNNING
        assert len(log.lines) <= MAX_LINES and len(log.waiting) < MAX_LINES

        release.touch()  # the second half floods a hidden panel
        await wait_for(
            pilot,
            lambda: status(app, "app_offline") is StepStatus.DONE and not app.engine_busy(),
            "step 1 done",
        )
        assert len(log.waiting) < MAX_LINES  # bounded while hidden, too
        await pilot.press("4")
        assert switcher.current == "log"
        await wait_for(pilot, lambda: not log.waiting, "the log drawn")
        lines = [strip.text.rstrip() for strip in log.lines]
        assert len(lines) <= MAX_LINES
        flood = [line for line in lines if " #" in line]
        assert flood[-1].endswith(f" #{2 * FLOOD_HALF}")
        assert not any(line.endswith(" #1") for line in lines)
        # what came after the flood is there too (a long line wraps: rejoin the last rows)
        assert "App offline: done" in " ".join(lines[-4:])
        await pilot.press("q")  # the app is offline: asked first
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        await pilot.press("y")


@pytest.mark.slow
def test_event_flood_before_the_log_was_ever_shown(site: Site) -> None:
    """200,000 log events while the log panel has never been on screen: the waiting lines
    stay bounded, a key is handled, and panel 4 then shows the newest lines and how many
    older ones were dropped."""
    site.backup()
    app = DrApp(site.config())
    asyncio.run(flood_a_hidden_log(app))


async def flood_a_hidden_log(app: DrApp) -> None:
    total = 2 * FLOOD_HALF

    def flood() -> None:  # the engine's callback, from a worker thread as in a run
        for i in range(1, total + 1):
            app.post_engine_event(LogLine("app", f"#{i}"))

    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        log = app.log_panel
        switcher = app.query_one(ContentSwitcher)
        assert switcher.current == "backups" and not log.size.width  # never shown yet
        await asyncio.to_thread(flood)
        await pilot.press("down")  # queued behind the flood: handled all the same
        assert app.browser.table.cursor_row == 1 or app.browser.table.row_count == 1
        await wait_for(pilot, lambda: log.dropped > 0, "the flood handled")
        assert len(log.waiting) == MAX_LINES - 1
        assert log.lines == [] and not log._deferred_renders  # nothing piled up in RichLog
        await pilot.press("4")
        assert switcher.current == "log"
        await wait_for(pilot, lambda: not log.waiting and log.lines != [], "the log drawn")
        lines = [strip.text.rstrip() for strip in log.lines]
        assert len(lines) <= MAX_LINES
        assert "older lines not shown" in lines[0]
        dropped = int(lines[0].split()[1].replace(",", ""))
        assert dropped >= total - MAX_LINES
        assert lines[-1].endswith(f" #{total}")
        assert not any(line.endswith(" #1") for line in lines)
        await pilot.press("q")
