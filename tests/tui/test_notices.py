"""Notifications at 80x24 and 120x40: information goes to the log only, no toast covers a
dialog, and a small screen shows one toast at a time."""

from __future__ import annotations

import asyncio

import pytest

from preskool_dr.core.base.events import Notice
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.skip_reason import SkipReasonScreen
from tests.support.site import Site
from tests.support.tui import log_text, start_run, wait_for

SIZES = [(80, 24), (120, 40)]


def toasts(app: DrApp) -> list[str]:
    return [n.message for n in app._notifications]


async def notices(app: DrApp, size: tuple[int, int]) -> None:
    async with app.run_test(size=size, notifications=True) as pilot:
        await start_run(pilot)
        app.clear_notifications()

        # information: the log has it, no toast
        app.post_engine_event(Notice("info", "ended 0 session(s)"))
        app.notify("Cancelled: nothing was changed.")
        await wait_for(pilot, lambda: "ended 0 session(s)" in log_text(app), "info logged")
        assert "Cancelled: nothing was changed." in log_text(app)
        assert toasts(app) == []

        # a warning while a dialog is open waits for it to close
        app.checklist.focus()
        await pilot.press("home", "s")
        await wait_for(pilot, lambda: isinstance(app.screen, SkipReasonScreen), "skip reason")
        app.post_engine_event(Notice("warn", "disk 91% full"))
        await wait_for(pilot, lambda: "disk 91% full" in log_text(app), "warning logged")
        assert toasts(app) == []
        await pilot.press("escape")
        await wait_for(pilot, lambda: toasts(app) == ["disk 91% full"], "toast after the dialog")

        # one toast at a time below 100 columns, several on a big screen
        app.post_engine_event(Notice("warn", "second warning"))
        await wait_for(pilot, lambda: "second warning" in toasts(app), "second toast")
        small = size[0] < 100
        assert toasts(app) == (["second warning"] if small else ["disk 91% full", "second warning"])
        await pilot.press("q")


@pytest.mark.parametrize("size", SIZES)
def test_notifications_never_cover_a_dialog(site: Site, size: tuple[int, int]) -> None:
    site.backup()
    asyncio.run(notices(DrApp(site.config()), size))
