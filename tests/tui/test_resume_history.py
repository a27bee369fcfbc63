"""After a resume, at 80x24 and 120x40: the run says it was resumed once (a worker's report
reaches the screen once), and the log panel holds the run's earlier history, rebuilt from
the journal with the times the steps really started and ended."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from textual.worker import Worker, WorkerState

from preskool_dr.tui.app import DrApp
from preskool_dr.tui.messages import RunResumed
from tests.support.tui import (
    FIXED_NOW,
    RUN_ID,
    Frozen,
    log_text,
    screen_text,
    wait_for,
    write_journal,
)

SIZES = [(80, 24), (120, 40)]
DONE = ("app_offline", "identify", "download", "verify")


async def resume(app: DrApp, size: tuple[int, int], reports: list[object]) -> None:
    async with app.run_test(size=size, notifications=True, message_hook=reports.append) as pilot:
        await wait_for(pilot, lambda: RUN_ID in screen_text(pilot), "resume offer")
        await pilot.press("enter")
        await app.workers.wait_for_complete()  # its state changes are read after it ended
        await wait_for(pilot, lambda: app.engine is not None, "resumed")
        await pilot.pause(0.3)
        toasts = [n.message for n in app._notifications]
        assert not any("esumed" in t for t in toasts), toasts
        # the worker's earlier state changes are read when the loop gets to them, maybe after
        # it ended: a late "running" is no second report
        (worker,) = {
            m.worker
            for m in reports
            if isinstance(m, Worker.StateChanged) and m.worker.name == "resume"
        }
        for state in (WorkerState.PENDING, WorkerState.RUNNING):
            app.post_message(Worker.StateChanged(worker, state))
        await pilot.pause(0.3)
        await pilot.press("4")
        await wait_for(pilot, lambda: "Resumed run" in screen_text(pilot), "log shown")
        log = log_text(app)
        assert log.count("Resumed run") == 1, log
        # the journal's history, in order, at the times it happened (write_journal: the
        # incident 42:17 before now, each step 95 s long, two minutes apart)
        start = FIXED_NOW - timedelta(minutes=42, seconds=17)
        expected = [f"{start:%H:%M:%S} [run] incident declared at {start:%Y-%m-%d %H:%M:%S} UTC"]
        for number, title in enumerate(
            ("App offline", "Identify backup", "Download from S3", "Verify checksum"), start=1
        ):
            began = start + timedelta(minutes=2 * (number - 1))
            ended = began + timedelta(seconds=95)
            expected.append(f"{began:%H:%M:%S} [step {number}] {title}: running")
            expected.append(f"{ended:%H:%M:%S} [step {number}] {title}: done")
        flat = log.replace("\n", "")  # the panel wraps at its width; a wrap keeps the space
        at = [flat.find(line) for line in [*expected, "[run] Resumed run"]]
        assert -1 not in at and at == sorted(at), log  # each there, in order, then the resume


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resume_says_so_once_and_the_log_keeps_the_history(
    frozen: Frozen, size: tuple[int, int]
) -> None:
    write_journal(frozen, DONE)
    reports: list[object] = []
    asyncio.run(resume(frozen.app(), size, reports))
    # one report (the hook sees it on the screen, then on the App as it bubbles)
    assert len({id(m) for m in reports if isinstance(m, RunResumed)}) == 1
