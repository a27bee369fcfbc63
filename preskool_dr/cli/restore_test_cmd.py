"""`preskool-dr restore-test`: the runbook's weekly restore test (section 3.1)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from preskool_dr.cli.notifying import notifier
from preskool_dr.cli.output import print_json, tagged
from preskool_dr.cli.restore_cmd import print_event
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import ignore_events
from preskool_dr.core.base.notify import Notification
from preskool_dr.core.restore.restore_test import run_restore_test


def run(args: argparse.Namespace, ctx: Any) -> int:
    on_event = ignore_events if args.json else print_event
    config = ctx.config
    # with --json, stdout is one JSON object: a delivery warning goes to stderr
    notify = notifier(config, sys.stderr if args.json else None)
    try:
        with _interrupts_stop_once():
            report = run_restore_test(config, args.backup, on_event=on_event)
    except DrError as exc:  # no backup to test, Glacier, no space: the test did not pass
        notify.send(Notification("restore_test_failed", args.backup, str(exc)))
        raise
    if not report.ok:
        details = {"database": report.database, "seconds": round(report.seconds, 1)}
        notify.send(
            Notification("restore_test_failed", report.backup, report.detail, details=details)
        )
    if args.json:
        print_json(report.to_json())
    else:
        verdict = "passed" if report.ok else "failed"
        tagged(
            "PASS" if report.ok else "FAIL",
            f"restore test of {report.backup} {verdict}: {report.detail}",
        )
    return 0 if report.ok else 1


@contextmanager
def _interrupts_stop_once() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the test like Ctrl-C (KeyboardInterrupt, so the scratch
    database is dropped on the way out); any further signal is ignored, so an impatient
    second Ctrl-C cannot interrupt that drop."""

    def cleaning_up(signum: int, frame: FrameType | None) -> None:
        print("preskool-dr: dropping the scratch database, please wait", file=sys.stderr)

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in handled:
            signal.signal(sig, cleaning_up)
        raise KeyboardInterrupt

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
