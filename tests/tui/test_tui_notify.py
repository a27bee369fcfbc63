"""The TUI's restore notifies like the CLI's: the run started (its backup chosen), a step
failed, the run finished (done, or left failed when the TUI closes), each once, to a real
local JSON webhook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from preskool_dr.core.base.events import StepStatus
from preskool_dr.tui.app import DrApp
from tests.support.leaks import assert_no_secrets
from tests.support.notify import TOKEN, Receiver, webhook_receiver
from tests.support.site import Site
from tests.support.tui import (
    confirm_recreate,
    log_text,
    run_selected,
    start_run,
    status,
    wait_for,
)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with webhook_receiver() as found:
        monkeypatch.setenv("PRESKOOL_DR_NOTIFY_URLS", found.url())
        yield found


async def fail_step_one_and_quit(pilot: Pilot[Any], receiver: Receiver) -> str:
    app = await start_run(pilot)
    assert app.engine is not None
    run_id = app.engine.state.run_id
    await wait_for(pilot, lambda: len(receiver.of("restore_started")) == 1, "started")
    await run_selected(pilot, "download")
    await run_selected(pilot, "verify")
    await wait_for(pilot, lambda: app.checklist.selected_id == "app_offline", "step 1 selected")
    await pilot.press("r")
    await wait_for(
        pilot,
        lambda: status(app, "app_offline") is StepStatus.FAILED and not app.engine_busy(),
        "step 1 failed",
    )
    await wait_for(pilot, lambda: len(receiver.of("restore_step_failed")) == 1, "failure sent")
    assert receiver.of("restore_finished") == []  # a failed step leaves the run open
    await pilot.press("q")
    return run_id


@pytest.mark.slow
def test_a_failed_step_and_leaving_the_run_notify(site: Site, receiver: Receiver) -> None:
    site.backup()
    site.set_app(stop=["false"])  # step 1 fails
    app = DrApp(site.config(), operator="alice")

    async def drive() -> str:
        async with app.run_test(size=(120, 40)) as pilot:
            return await fail_step_one_and_quit(pilot, receiver)

    run_id = asyncio.run(drive())

    (started,) = receiver.of("restore_started")
    assert started["title"] == f"preskool-dr restore started: run {run_id}"
    assert "restore of preskool-backup-" in started["message"]
    (failed,) = receiver.of("restore_step_failed")
    assert failed["title"] == f"preskool-dr restore step FAILED: run {run_id}"
    assert failed["message"].startswith("step 1 (")
    (finished,) = receiver.of("restore_finished")  # sent when the TUI closed
    assert finished["title"] == f"preskool-dr restore finished: run {run_id} FAILED"
    assert "RTO " in finished["message"] and finished["type"] == "failure"
    assert len(receiver.posts) == 3
    assert_no_secrets(json.dumps(receiver.posts))


@pytest.mark.slow
def test_a_completed_run_notifies_start_and_finish_once(site: Site, receiver: Receiver) -> None:
    site.backup()
    app = DrApp(site.config(), operator="alice")

    async def drive() -> str:
        async with app.run_test(size=(120, 40)) as pilot:
            await start_run(pilot)
            assert app.engine is not None
            for step in ("download", "verify", "app_offline"):
                await run_selected(pilot, step)
            await confirm_recreate(pilot, site.db)
            for step in ("restore", "migrate", "app_online", "health"):
                await run_selected(pilot, step)
            assert app.engine.state.result == "done"
            await wait_for(pilot, lambda: len(receiver.of("restore_finished")) == 1, "finish")
            run_id = app.engine.state.run_id
            await pilot.press("q")
            return run_id

    run_id = asyncio.run(drive())

    assert [body["title"] for body in (*receiver.of("restore_started"),)] == [
        f"preskool-dr restore started: run {run_id}"
    ]
    (finished,) = receiver.of("restore_finished")
    assert finished["title"] == f"preskool-dr restore finished: run {run_id} DONE"
    assert finished["type"] == "success" and "rto_seconds: " in finished["message"]
    assert receiver.of("restore_step_failed") == []
    assert len(receiver.posts) == 2


def test_an_unreachable_webhook_is_a_warning_in_the_log(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivery never fails the run: the warning goes to the log, without the token."""
    with webhook_receiver() as down:
        url = down.url("fail")  # answers 500
    monkeypatch.setenv("PRESKOOL_DR_NOTIFY_URLS", url.replace("/fail/", "/fail-x/"))
    site.backup()
    app = DrApp(site.config(), operator="alice")

    async def drive() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await start_run(pilot)
            await wait_for(pilot, lambda: "notify: " in log_text(app), "warning logged")
            assert TOKEN not in log_text(app)
            await pilot.press("q")

    asyncio.run(drive())
