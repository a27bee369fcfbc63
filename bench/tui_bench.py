"""TUI responsiveness: with step 6 running inside the TUI (the engine in a worker thread of
the same process, so it competes for the interpreter), how long `?` takes until the help
is on the screen. Driven with Textual's Pilot, headless, at 120x40.

A press counts as answered at the first screen update (the compositor's output, rendered to
the terminal's bytes as a real driver would) that holds the help: the headless driver skips
that rendering, so the benchmark does it itself, inside the app's own display call.

    .venv/bin/python bench/tui_bench.py                 # standalone: its own cluster and data
    .venv/bin/python bench/tui_bench.py --scale 1 --pgbench-scale 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import TOOL, Lab, say, timed

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.events import StepStatus

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


def help_visible(app: Any) -> bool:
    """The help dialog is on the active screen, shown and laid out (it has a size)."""
    dialogs = app.screen.query("#help-dialog")
    return bool(dialogs) and dialogs.first().display and dialogs.first().region.area > 0


class PaintClock:
    """Wraps the app's `_display` (called with every screen update): renders the update to
    terminal bytes as a real driver does, then notes when an update first holds the help."""

    def __init__(self, app: Any) -> None:
        from textual._compositor import CompositorUpdate

        self.painted: bool | None = None  # None: not waiting; False: waiting for help_visible
        self.at = 0.0
        display = app._display

        def timed_display(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)  # the real driver's work, headless
            if renderable is not None and self.painted is False and help_visible(app):
                self.painted, self.at = True, time.perf_counter()

        app._display = timed_display

    def arm(self) -> None:
        self.painted = False

    def disarm(self) -> None:
        self.painted = None


async def shown(condition: Any) -> None:
    """Poll every millisecond, yielding to the app's event loop in between."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the TUI never showed it")
        await asyncio.sleep(0.001)


async def press_help(app: Any, clock: PaintClock) -> float:
    """`?`, wait for the help to be painted, `Esc`, wait for it to be gone: seconds to paint."""
    clock.arm()
    started = time.perf_counter()
    key(app, "question_mark", "?")
    await shown(lambda: bool(clock.painted))
    clock.disarm()
    key(app, "escape", "\x1b")
    await shown(lambda: not help_visible(app))
    await asyncio.sleep(GAP_SECONDS)
    return clock.at - started


def run(lab: Lab, backup: Path, method: str) -> dict[str, Any]:
    try:
        from preskool_dr.tui.app import DrApp
        from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
        from preskool_dr.tui.screens.incident_time import IncidentTimeScreen
    except ImportError as exc:
        say(f"  tui: skipped, the TUI is not importable yet ({exc})")
        return {"skipped": f"the TUI (preskool_dr.tui) is not importable yet: {exc}"}
    runbook = lab.runbook(f"tui-{method}", restore={"method": method, "jobs": 2})
    # a fresh state dir per run: an earlier run left in it would be offered for resuming
    env = lab.env(TARGET, runbook=runbook, state=f"state-tui-{method}-{time.monotonic_ns()}")
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
                clock = PaintClock(app)
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
                    latency = await press_help(app, clock)
                    if status("restore") is StepStatus.RUNNING:  # pressed and painted during it
                        latencies.append(latency)
                await until(lambda: not app.engine_busy(), pilot)
                for _ in range(IDLE_PRESSES):
                    idle.append(await press_help(app, clock))
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


def main(argv: list[str] | None = None) -> int:
    """This benchmark alone, on its own cluster: for measuring TUI changes between full
    `make bench` runs. Prints p50/p95 per loader and the load average around each round."""
    from datasets import build_realistic

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=2.0, help="PreSkool seed scale (default 2)")
    parser.add_argument("--pgbench-scale", type=int, default=20, help="pgbench -s (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per loader (default 1)")
    args = parser.parse_args(argv)
    with Lab.open() as lab:
        build_realistic(lab, "preskool_src", scale=args.scale, pgbench_scale=args.pgbench_scale)
        env = lab.env("preskool_src", runbook=lab.runbook("take"), state="state-take")
        timed([TOOL, "backup", "--no-upload"], env)
        (backup,) = lab.backup_dir.glob("preskool-backup-*.sql.gz")
        for _ in range(args.rounds):
            for method in ("serial", "parallel"):
                load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
                r = run(lab, backup, method)
                if "skipped" in r:
                    say(f"{method}: skipped: {r['skipped']}")
                    continue
                say(
                    f"{method}: {r['presses']} presses, p50 {r['p50_ms']:.0f} ms, "
                    f"p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms; idle p50 "
                    f"{r['idle_p50_ms']:.0f} ms (load before {load})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
