"""TUI responsiveness: with step 6 running inside the TUI (the engine in a worker thread of
the same process, so it competes for the interpreter), how long `?` takes to put the
help screen up. Driven with Textual's Pilot, headless, at 120x40."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

from common import Lab, say

from preskool_dr.core.config import load_config
from preskool_dr.core.events import StepStatus

TARGET = "bench_tui"
SETTLE_SECONDS = 600.0  # a bound for a hung run, not a measurement
GAP_SECONDS = 0.1  # between two presses: an operator does not hold the key down
MIN_PRESSES = 5
IDLE_PRESSES = 10  # the same key with nothing running, for comparison


def key(app: Any, name: str, char: str) -> None:
    """A key press as the terminal driver delivers it. Pilot's own `press` also waits until
    the whole process is idle, which it never is while the engine thread loads data."""
    from textual import events

    event = events.Key(name, char)
    event.set_sender(app)
    app._driver.send_message(event)


def help_drawn(app: Any, screen_type: type) -> bool:
    """The help screen is the active screen and its dialog has been laid out (it has a
    size): what the next screen update paints."""
    screen = app.screen
    if not isinstance(screen, screen_type):
        return False
    dialogs = screen.query("#help-dialog")
    return bool(dialogs) and dialogs.first().region.area > 0


async def shown(condition: Any) -> None:
    """Poll every millisecond, yielding to the app's event loop in between."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the TUI never showed it")
        await asyncio.sleep(0.001)


def run(lab: Lab, backup: Path, method: str) -> dict[str, Any]:
    try:
        from preskool_dr.tui.app import DrApp
        from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
        from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
        from preskool_dr.tui.screens.step_help import StepHelpScreen
    except ImportError as exc:
        say(f"  tui: skipped, the TUI is not importable yet ({exc})")
        return {"skipped": f"the TUI (preskool_dr.tui) is not importable yet: {exc}"}
    runbook = lab.runbook(f"tui-{method}", restore={"method": method, "jobs": 2})
    env = lab.env(TARGET, runbook=runbook, state=f"state-tui-{method}")
    saved = dict(os.environ)
    os.environ.update(env)  # libpq in the engine reads PGPASSWORD from here
    try:
        config = load_config(runbook, env=env)
        app = DrApp(config, target_db=TARGET, backup=str(backup), operator="bench")

        async def until(condition: Any, pilot: Any) -> None:
            deadline = time.monotonic() + SETTLE_SECONDS
            while not condition():
                if time.monotonic() > deadline:
                    raise RuntimeError("the TUI run did not get there")
                await pilot.pause(0.02)

        def status(step_id: str) -> StepStatus:
            assert app.engine is not None
            return app.engine.step(step_id).status

        idle: list[float] = []

        async def drive() -> list[float]:
            latencies: list[float] = []
            async with app.run_test(size=(120, 40)) as pilot:
                await until(lambda: isinstance(app.screen, IncidentTimeScreen), pilot)
                await pilot.press("enter")
                await until(
                    lambda: app.engine is not None and status("identify") is StepStatus.DONE,
                    pilot,
                )
                for step_id in ("download", "verify", "app_offline", "recreate_db", "restore"):
                    await until(
                        lambda s=step_id: app.checklist.selected_id == s and not app.engine_busy(),
                        pilot,
                    )
                    await pilot.press("r")
                    if step_id == "recreate_db":
                        await until(lambda: isinstance(app.screen, ConfirmNameScreen), pilot)
                        await pilot.press(*TARGET, "enter")
                    if step_id != "restore":
                        await until(
                            lambda s=step_id: (
                                status(s) not in (StepStatus.PENDING, StepStatus.RUNNING)
                                and not app.engine_busy()
                            ),
                            pilot,
                        )
                await until(lambda: status("restore") is not StepStatus.PENDING, pilot)
                while status("restore") is StepStatus.RUNNING:
                    started = time.perf_counter()
                    key(app, "question_mark", "?")
                    await shown(lambda: help_drawn(app, StepHelpScreen))
                    latencies.append(time.perf_counter() - started)
                    key(app, "escape", "\x1b")
                    await shown(lambda: not isinstance(app.screen, StepHelpScreen))
                    await asyncio.sleep(GAP_SECONDS)
                await until(lambda: not app.engine_busy(), pilot)
                for _ in range(IDLE_PRESSES):
                    started = time.perf_counter()
                    key(app, "question_mark", "?")
                    await shown(lambda: help_drawn(app, StepHelpScreen))
                    idle.append(time.perf_counter() - started)
                    key(app, "escape", "\x1b")
                    await shown(lambda: not isinstance(app.screen, StepHelpScreen))
                    await asyncio.sleep(GAP_SECONDS)
                if status("restore") is not StepStatus.DONE:
                    raise RuntimeError(
                        f"restore in the TUI failed: {app.engine.step('restore').detail}"
                    )  # type: ignore[union-attr]
            return latencies

        say(f"  tui: `?` latency while step 6 runs ({method})")
        latencies = asyncio.run(drive())
    finally:
        os.environ.clear()
        os.environ.update(saved)
        lab.drop_db(TARGET)
    if len(latencies) < MIN_PRESSES:
        say(f"  tui: only {len(latencies)} presses fitted in the restore: too short to measure")
        return {"skipped": f"the restore ended after {len(latencies)} key presses ({method})"}
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[-1]
    return {
        "method": method,
        "presses": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * p95,
        "max_ms": 1000 * max(latencies),
        "idle_p50_ms": 1000 * statistics.median(idle),
    }
