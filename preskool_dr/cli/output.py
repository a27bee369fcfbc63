"""Printing helpers shared by the commands: the seed's tagged lines and JSON.

Every line a headless command prints about its work goes through here (`tagged`, `say`,
`print_run_event`, `progress_sink`), so `--log-format json` turns all of them into one JSON
object per line on stderr, for journald and log shippers, without each command knowing.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO

import humanize

from preskool_dr.core.base.events import (
    Event,
    EventSink,
    LogLine,
    Notice,
    Progress,
    StepChanged,
    StepStatus,
    ignore_events,
)
from preskool_dr.core.base.procs import redact

BANNER_RULE = "═" * 56

JSON_PROGRESS_INTERVAL = 5.0  # seconds between progress lines of one phase: logs, not a bar
TAG_LEVELS = {"OK": "ok", "PASS": "ok", "WARN": "warn", "FAIL": "error"}
STATUS_LEVELS = {StepStatus.FAILED: "error", StepStatus.DONE: "ok", StepStatus.SKIPPED: "warn"}


class JsonLog:
    """One JSON object per line on stderr; secrets redacted from every message."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._last_progress: dict[tuple[str, str], float] = {}

    def emit(
        self,
        event: str,
        message: str,
        *,
        level: str = "info",
        step: str | None = None,
        **extra: Any,
    ) -> None:
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": event,
            "step": step,
            "level": level,
            "message": redact(message),
            **{key: redact(v) if isinstance(v, str) else v for key, v in extra.items()},
        }
        stream = self._stream or sys.stderr
        stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        stream.flush()

    def event(self, event: Event) -> None:
        if isinstance(event, StepChanged):
            self.emit(
                "step",
                f"step {event.number} {event.title}: {event.status.value}"
                + (f": {event.detail}" if event.detail else ""),
                level=STATUS_LEVELS.get(event.status, "info"),
                step=event.step_id,
                status=event.status.value,
                number=event.number,
                title=event.title,
                detail=event.detail,
            )
        elif isinstance(event, Notice):
            self.emit("notice", event.text, level=event.level, step=event.step_id)
        elif isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, LogLine) and event.source not in LOADER_SOURCES:
            self.emit("output", event.text, step=event.step_id, source=event.source)

    def _progress(self, event: Progress) -> None:
        key = (event.step_id, event.phase)
        now = time.monotonic()
        finished = event.total is not None and event.done >= event.total
        if not finished and now - self._last_progress.get(key, -math.inf) < JSON_PROGRESS_INTERVAL:
            return
        self._last_progress[key] = now
        total = f" of {event.total}" if event.total is not None else ""
        self.emit(
            "progress",
            f"{event.phase}: {event.done}{total} {event.unit}",
            step=event.step_id,
            phase=event.phase,
            done=event.done,
            total=event.total,
            unit=event.unit,
            rate=round(event.rate, 1),
            current=event.current,
        )


_json_log: JsonLog | None = None  # set by use_log_format("json")


def use_log_format(name: str) -> None:
    global _json_log
    _json_log = JsonLog() if name == "json" else None


def json_logging() -> bool:
    return _json_log is not None


def say(text: str, event: str = "message", level: str = "info", **extra: Any) -> None:
    """A plain line on stdout (text), or a JSON record with `extra` fields (json)."""
    if _json_log is not None:
        _json_log.emit(event, text.strip(), level=level, **extra)
    else:
        print(text, flush=True)


def error_line(text: str) -> None:
    """The error main() ends a `--log-format json` command with."""
    JsonLog().emit("error", text, level="error")


def progress_sink() -> EventSink:
    """Where a command without step lines sends progress: JSON lines, a terminal's
    self-overwriting line, or nowhere (cron logs stay clean)."""
    if _json_log is not None:
        return _json_log.event
    return TtyProgress() if sys.stderr.isatty() else ignore_events


def tagged(tag: str, text: str, stream: TextIO | None = None) -> None:
    """`[OK]    text`: the seed's aligned `[BACKUP]`/`[OK]`/`[FAIL]` lines."""
    if _json_log is not None:
        _json_log.emit("message", text, level=TAG_LEVELS.get(tag, "info"), tag=tag)
        return
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
        name = signal.Signals(signum).name
        say(f"\n{name}: stopping after recording the step", event="signal", level="warn")

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
    notices as tagged lines, app commands' output indented, progress only on a terminal;
    or all of them as JSON lines."""
    if _json_log is not None:
        _json_log.event(event)
    elif isinstance(event, StepChanged):
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
