"""Keys at 80x24 and 120x40: Ctrl+C quits with q's question; the footer and the palette
offer what applies where the focus is, and nothing of the checklist's inside a dialog."""

from __future__ import annotations

import asyncio
import shlex
import time

import pytest
from textual.command import CommandPalette
from textual.widgets import Input

from preskool_dr.core.base.events import StepStatus
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.quit_confirm import QuitScreen
from preskool_dr.tui.screens.skip_reason import SkipReasonScreen
from tests.support.cli import cli_argv
from tests.support.site import Site
from tests.support.terminal import Tmux
from tests.support.tui import (
    screen_text,
    sizes_fast_one,
    start_run,
    status,
    wait_for,
    wait_for_exit,
)

SIZES = [(80, 24), (120, 40)]


def footer(app: DrApp) -> set[str]:
    """What the checklist screen's footer offers now."""
    return {
        active.binding.description
        for active in app.checklist_screen.active_bindings.values()
        if active.binding.show
    }


async def ctrl_c_while_running(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size, notifications=True) as pilot:
        await start_run(pilot)
        await pilot.press("home", "r")
        await wait_for(pilot, lambda: status(app, "app_offline") is StepStatus.RUNNING, "running")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        assert not any("[b]" in n.message for n in app._notifications)
        await pilot.press("n")  # keep running
        await pilot.pause()
        assert status(app, "app_offline") is StepStatus.RUNNING
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), "quit question")
        await pilot.press("y")
        await wait_for_exit(app)


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (80, 24), named=False))
def test_ctrl_c_quits_with_the_same_question_as_q(slow_site: Site, size: tuple[int, int]) -> None:
    slow_site.backup()
    app = DrApp(slow_site.config())
    asyncio.run(ctrl_c_while_running(app, size))
    assert app.return_code == 130


async def ctrl_c_in_the_first_dialog(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: isinstance(app.focused, Input), "incident prompt")
        await pilot.press("ctrl+c")  # from a text box too, where it used to copy
        await wait_for_exit(app)


@pytest.mark.parametrize("size", SIZES)
def test_ctrl_c_quits_from_a_text_box(site: Site, size: tuple[int, int]) -> None:
    app = DrApp(site.config())
    asyncio.run(ctrl_c_in_the_first_dialog(app, size))
    assert app.return_code == 0


async def keys_follow_focus(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size) as pilot:
        await start_run(pilot)
        keys = footer(app)
        assert {"Run step", "Skip", "Backups", "Help", "Quit"} <= keys
        assert not keys & {"Retry", "Filter", "Sort", "Glacier restore"}  # nothing failed
        await pilot.press("b")
        keys = footer(app)
        assert {"Filter", "Sort", "Quit"} <= keys  # the browser's own keys
        assert "Glacier restore" not in keys  # the highlighted backup is not archived
        assert "Sort" in screen_text(pilot).splitlines()[-1]

        # the palette lists what applies, with its key
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "palette")
        for query, shown, hidden in (
            ("run step", "Run step  r", "Retry"),  # nothing failed
            ("help", "Help  ?", "Roll back"),  # no aside copy
        ):
            await pilot.press("ctrl+u", *query)
            await pilot.pause(0.3)
            text = screen_text(pilot)
            assert shown in text and hidden not in text, text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), "closed")

        # in a dialog the checklist offers nothing: b and q type into the box
        app.checklist.focus()
        await pilot.press("home", "s")  # step 1 may be skipped: the dialog asks why
        await wait_for(pilot, lambda: isinstance(app.screen, SkipReasonScreen), "skip reason")
        await pilot.pause()
        assert footer(app) == set()
        await pilot.press("b", "q")
        assert app.screen.query_one(Input).value == "bq" and app.is_running
        await pilot.press("escape")
        await pilot.pause()
        assert {"Run step", "Quit"} <= footer(app)
        await pilot.press("q")


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (80, 24), named=False))
def test_footer_and_palette_follow_focus_and_state(site: Site, size: tuple[int, int]) -> None:
    site.backup()
    asyncio.run(keys_follow_focus(DrApp(site.config()), size))


# ---------------------------------------------------------------- in a real terminal (tmux)


@pytest.mark.slow
def test_ctrl_c_in_a_real_terminal_asks_as_q_then_exits_130(slow_site: Site) -> None:
    """Ctrl+C typed in a terminal (tmux) while step 1 runs: the question q asks, word for
    word and without raw markup; n keeps the step running; then y quits with 130, the run
    resumable, and the shell shows how to resume it."""
    slow_site.backup()
    argv = shlex.join(cli_argv("tui", runbook=slow_site.runbook))
    pane = Tmux(
        f"{argv}; echo TUI-EXIT=$?; sleep 600",
        slow_site.root,
        size=(100, 30),
        env=slow_site.env(),
    )
    slow_site.cleanups.append(pane.kill)
    pane.wait_for("incident", seconds=60)
    pane.keys("Enter")  # declared now
    pane.wait_for("Enter chooses it", seconds=60)
    time.sleep(1)  # the list takes the focus once it is filled
    pane.keys("Enter")  # the newest backup
    pane.wait_for("✔ 2 Identify backup", seconds=60)
    time.sleep(0.5)
    pane.keys("Home", "r")  # step 1: app.stop runs until it is stopped
    pane.wait_for("▶ 1 App offline", seconds=60)

    def question(key: str) -> list[str]:
        pane.keys(key)
        screen = pane.wait_for("Quit while a step runs?", "y quits", seconds=30)
        assert "[b]" not in screen and "[/b]" not in screen and "ctrl+q" not in screen, screen
        return [line for line in screen.splitlines() if "█" in line]  # the dialog's rows

    asked_by_q = question("q")
    pane.keys("n")  # keep running
    time.sleep(1)
    screen = pane.screen()
    assert "Quit while a step runs?" not in screen and "▶ 1 App offline" in screen, screen
    assert question("C-c") == asked_by_q  # the same question, word for word
    pane.keys("n")
    time.sleep(1)
    assert "▶ 1 App offline" in pane.screen()  # n: the step still runs
    question("C-c")
    pane.keys("y")
    screen = pane.wait_for("TUI-EXIT=", seconds=120)
    assert "TUI-EXIT=130" in screen, screen  # quit mid-run: the documented 130
    assert "is unfinished" in screen and "resume: preskool-dr tui" in screen, screen
    assert "Traceback" not in screen and "[b]" not in screen
    state = slow_site.the_run()
    assert state.result == "interrupted"
    assert state.step("app_offline").status is StepStatus.FAILED
