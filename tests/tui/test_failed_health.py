"""A failed health check (step 9) at 80x24 and 120x40: the footer and the step's details
offer "R retry · u roll back" as keys, and each does what the CLI's line said: R runs the
check again, u puts the old database kept aside back (asking its name)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from textual.pilot import Pilot

from preskool_dr.core.base.events import StepStatus
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.widgets.step_info import StepInfo
from tests.support.health import HealthStub
from tests.support.site import Site
from tests.support.tui import confirm_recreate, run_selected, screen_text, start_run, wait_for

SIZES = [(80, 24), (120, 40)]


def footer(app: DrApp) -> set[str]:
    return {
        active.binding.description
        for active in app.checklist_screen.active_bindings.values()
        if active.binding.show
    }


async def to_a_failed_health_check(pilot: Pilot[Any], site: Site) -> DrApp:
    app = pilot.app
    assert isinstance(app, DrApp)
    await start_run(pilot)
    for step in ("download", "verify", "app_offline"):
        await run_selected(pilot, step)
    await confirm_recreate(pilot, site.db)
    for step in ("restore", "migrate", "app_online"):
        await run_selected(pilot, step)
    assert "Roll back" not in footer(app)  # nothing failed: only the palette has it
    await wait_for(pilot, lambda: app.checklist.selected_id == "health", "step 9 selected")
    await pilot.press("r")
    assert app.engine is not None
    health = app.engine.step("health")
    await wait_for(
        pilot,
        lambda: health.status is StepStatus.FAILED and not app.engine_busy(),
        "health check failed",
    )
    await pilot.pause()
    app.clear_notifications()
    await pilot.pause()
    return app


async def retry_or_roll_back(app: DrApp, site: Site, stub: HealthStub, key: str, size: Any) -> None:
    async with app.run_test(size=size) as pilot:
        await to_a_failed_health_check(pilot, site)
        assert app.engine is not None
        state = app.engine.state
        assert {"Retry", "Roll back"} <= footer(app)
        footer_line = screen_text(pilot).splitlines()[-1]
        assert "R Retry" in footer_line and "u Roll back" in footer_line, footer_line
        info = str(app.checklist_screen.query_one(StepInfo).render())
        assert info.startswith("Step 9: Health check\nR retry · u roll back\nfailed: "), info
        if key == "R":
            stub.release()  # the application answers now
            await pilot.press("R")
            await wait_for(pilot, lambda: state.result == "done", "health check passed")
            assert "Roll back" not in footer(app) and "Retry" not in footer(app)
        else:
            aside = state.aside_db
            assert aside is not None
            await pilot.press("u")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmNameScreen), "dialog")
            assert "renamed back" in screen_text(pilot)
            await pilot.press(*site.db.name, "enter")
            await wait_for(pilot, lambda: state.result == "rolled-back", "rolled back")
            assert not site.db.exists(aside)  # the aside copy is the target again
            await wait_for(pilot, lambda: "Roll back" not in footer(app), "u gone")
        await pilot.press("q")


@pytest.mark.parametrize(
    ("size", "key"),
    [
        pytest.param(
            size,
            key,
            id=f"{size[0]}x{size[1]}-{key}",
            marks=() if (size, key) == ((120, 40), "u") else pytest.mark.slow,
        )
        for size in SIZES
        for key in ("R", "u")
    ],
)  # the fast tier rolls back at 120x40; `make test` runs both keys at both sizes
def test_a_failed_health_check_offers_retry_and_roll_back(
    site: Site, size: tuple[int, int], key: str
) -> None:
    stub = HealthStub(503)
    try:
        site.set_app(health_url=stub.url, health_wait_seconds=1)
        site.backup()
        before = site.db.row_counts()
        app = DrApp(site.config())
        asyncio.run(retry_or_roll_back(app, site, stub, key, size))
        assert app.return_code == 0  # done, or rolled back: the run is finished
        if key == "u":
            assert site.db.row_counts() == before
    finally:
        stub.stop()
