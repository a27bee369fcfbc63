"""Printing helpers shared by the commands: the seed's tagged lines and JSON."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO

import humanize

from preskool_dr.core.base.events import Event, LogLine, Notice, Progress, StepChanged

BANNER_RULE = "═" * 56


def tagged(tag: str, text: str, stream: TextIO | None = None) -> None:
    """`[OK]    text`: the seed's aligned `[BACKUP]`/`[OK]`/`[FAIL]` lines."""
    label = f"[{tag}]"
    label = label.ljust(8) if len(label) < 8 else label + " "
    print(f"{label}{text}", file=stream or sys.stdout, flush=True)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


class TtyProgress:
    """One self-overwriting stderr line per transfer or check; only used on a terminal."""

    def __init__(self) -> None:
        self._open = False

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Progress):
            return

        def amount(n: float) -> str:
            if event.unit == "bytes":
                return str(humanize.naturalsize(n, binary=True))
            return f"{int(n):,} {event.unit}"  # e.g. pg_restore's TOC items

        text = f"{event.phase}: {amount(event.done)}"
        if event.total:
            text += f" of {amount(event.total)}"
            text += f" ({int(100 * (event.fraction or 0))}%)"  # 100% only when done
        if event.rate > 0 and event.unit == "bytes":
            text += f", {humanize.naturalsize(event.rate, binary=True)}/s"
        finished = event.total is not None and event.done >= event.total
        if finished and not self._open:
            return  # the closing event of a line already ended
        sys.stderr.write(f"\r{text}\x1b[K" + ("\n" if finished else ""))
        sys.stderr.flush()
        self._open = not finished


@contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP only set `cancel`: the running step stops its child and
    records the interruption, so the journal stays resumable."""

    def handler(signum: int, frame: FrameType | None) -> None:
        cancel.set()
        print(f"\n{signal.Signals(signum).name}: stopping after recording the step", flush=True)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# The loaders' own chatter (psql's command tags, pg_restore --verbose: a few lines per item of
# the dump) is the TUI's log panel's; here it would bury the step lines. Their errors reach
# the step's detail either way.
LOADER_SOURCES = frozenset({"psql", "pg_restore"})


def print_run_event(event: Event, total_steps: int, tty: TtyProgress | None) -> None:
    """The headless runs' one way to show events: a line per step transition (stdout),
    notices as tagged lines, app commands' output indented, progress only on a terminal."""
    if isinstance(event, StepChanged):
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(
            f"{stamp}  step {event.number}/{total_steps}  {event.step_id:<12} "
            f"{event.status.value.upper():<8} {event.detail}",
            flush=True,
        )
    elif isinstance(event, Notice):
        tag = {"ok": "OK", "warn": "WARN", "error": "FAIL"}.get(event.level, "INFO")
        tagged(tag, event.text)
    elif isinstance(event, Progress) and tty is not None:
        tty(event)
    elif isinstance(event, LogLine) and event.source not in LOADER_SOURCES:
        print(f"{'':22}{event.source}: {event.text}", flush=True)
