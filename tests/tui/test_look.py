"""How the checklist screen reads over SSH at 80x24 and 120x40, in colour and under NO_COLOR:
the selected step and the focused panel are always visible."""

from __future__ import annotations

import asyncio

import pytest
from rich.style import Style
from textual.widget import Widget

from preskool_dr.tui.app import DrApp
from tests.tui.conftest import Site, start_run

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
        row = app.checklist.selected
        other = (row + 1) % 9
        for place in ("checklist", "backups"):
            if place == "backups":
                await pilot.press("b")  # the focus goes to the backup table
                assert app.focused is app.browser.table
            await pilot.pause()
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
    asyncio.run(selected_row_everywhere(DrApp(site.config), size, no_color=False))


@pytest.mark.parametrize("size", SIZES)
def test_selected_step_under_no_color(
    site: Site, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    site.backup()
    asyncio.run(selected_row_everywhere(DrApp(site.config), size, no_color=True))
