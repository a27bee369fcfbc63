"""How the checklist screen reads over SSH at 80x24 and 120x40, in colour and under NO_COLOR:
the selected step and the focused panel are always visible; the backup browser shows what
decides the choice at any width."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from rich.style import Style
from textual.widget import Widget

from preskool_dr.core.base.events import StepStatus
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.widgets.backup_browser import CHOSEN, FAILED_VERIFY, NARROW
from tests.support.site import Site
from tests.support.tui import run_selected, screen_text, sizes_fast_one, start_run, status, wait_for

SIZES = [(80, 24), (120, 40)]


def row_style(app: DrApp, row: int) -> Style:
    """The style of the checklist's row `row` where its title is drawn."""
    region = app.checklist.content_region
    return app.screen.get_style_at(region.x + 4, region.y + row)


def border(widget: Widget) -> str:
    return widget.styles.border_top[0]


def readable(style: Style, plain: Style) -> bool:
    """Text and background differ, and the background sets the row apart from the others."""
    return (
        style.bgcolor is not None
        and style.color is not None
        and style.bgcolor != style.color
        and style.bgcolor != plain.bgcolor
    )


async def selected_row_everywhere(app: DrApp, size: tuple[int, int], no_color: bool) -> None:
    async with app.run_test(size=size) as pilot:
        await start_run(pilot)
        left, panels = app.screen.query_one("#left"), app.screen.query_one("#panels")
        for place in ("checklist", "backups"):
            if place == "backups":
                await pilot.press("b")  # the focus goes to the backup table
                assert app.focused is app.browser.table
            await pilot.pause()
            # read the selection now: the checklist moves on by itself after step 2
            row = app.checklist.selected
            other = (row + 1) % 9
            style, plain = row_style(app, row), row_style(app, other)
            if no_color:
                assert style.reverse and not plain.reverse, place
            else:
                assert readable(style, plain), (place, style, plain)
            focused, unfocused = (left, panels) if place == "checklist" else (panels, left)
            assert border(focused) == "heavy" and border(unfocused) == "round", place


@pytest.mark.parametrize("size", SIZES)
def test_selected_step_stays_readable(site: Site, size: tuple[int, int]) -> None:
    site.backup()
    asyncio.run(selected_row_everywhere(DrApp(site.config()), size, no_color=False))


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (120, 40), named=False))
def test_selected_step_under_no_color(
    site: Site, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    site.backup()
    asyncio.run(selected_row_everywhere(DrApp(site.config()), size, no_color=True))


def browser_row(app: DrApp, name: str) -> list[str]:
    table = app.browser.table
    return [str(cell) for cell in table.get_row(name)]


async def browser_marks(app: DrApp, site: Site, size: tuple[int, int], path: Path) -> None:
    async with app.run_test(size=size) as pilot:
        await start_run(pilot)
        left = app.screen.query_one("#left")
        if size[0] == 80:
            assert left.outer_size.width == 32 and app.browser.columns == NARROW
        else:  # the steps and the table grow with the window
            assert left.outer_size.width > 32 and {"Where", "Storage"} <= set(app.browser.columns)
        state, _time, age, kind, size_text, *_ = browser_row(app, path.name)
        assert state == CHOSEN and kind == "daily" and age == "0m"
        assert re.fullmatch(r"\d+(\.\d)?K", size_text), size_text  # short, with its unit
        # the backup changes on disk after it was chosen: step 4 fails, the row says so
        path.write_bytes(b"not the backup any more")
        await run_selected(pilot, "download")
        await wait_for(pilot, lambda: app.checklist.selected_id == "verify", "verify selected")
        await pilot.press("r")
        await wait_for(pilot, lambda: status(app, "verify") is StepStatus.FAILED, "verify failed")
        await wait_for(
            pilot, lambda: browser_row(app, path.name)[0] == CHOSEN + FAILED_VERIFY, "marked"
        )
        await pilot.press("b")
        assert "failed the checksum step" in screen_text(pilot)
        await pilot.press("q")


@pytest.mark.parametrize("size", sizes_fast_one(SIZES, (80, 24), named=False))
def test_backup_browser_shows_what_decides(site: Site, size: tuple[int, int]) -> None:
    path = site.backup()
    asyncio.run(browser_marks(DrApp(site.config()), site, size, path))
