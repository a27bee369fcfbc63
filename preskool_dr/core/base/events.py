"""Plain event objects the core emits while it works.

The engine, backup and verify code report through one callback (`EventSink`); the CLI
prints events as lines, the TUI posts them as messages. Nothing here knows who listens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

PROGRESS_INTERVAL = 0.1  # seconds: at most ~10 Progress events a second


def utcnow() -> datetime:
    return datetime.now(UTC)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StepChanged:
    """A step moved to `status`; `detail` is the one line the operator reads about it."""

    step_id: str
    number: int
    title: str
    status: StepStatus
    detail: str = ""
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Progress:
    """Work under way: bytes (or items) done of total, with the current item when known."""

    step_id: str
    phase: str
    done: int
    total: int | None
    rate: float = 0.0  # units per second, averaged
    current: str | None = None  # e.g. the table being loaded
    items_done: int = 0  # e.g. tables loaded so far
    unit: str = "bytes"

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def eta_seconds(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


@dataclass(frozen=True)
class LogLine:
    """One line of a child process's output (already free of secrets)."""

    source: str
    text: str
    step_id: str | None = None


@dataclass(frozen=True)
class Notice:
    """Something the operator should know that is not a step transition."""

    level: str  # "info", "ok", "warn", "error"
    text: str
    step_id: str | None = None


Event = StepChanged | Progress | LogLine | Notice
EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    """The sink for callers that do not watch progress."""


class ProgressMeter:
    """Turns a stream of byte counts into Progress events, at most one per PROGRESS_INTERVAL
    (the TUI over a slow SSH link must not drown in updates). Thread-safe: boto3's transfer
    threads report through it concurrently."""

    def __init__(
        self, on_event: EventSink, step_id: str, phase: str, total: int | None, done: int = 0
    ) -> None:
        self._on_event = on_event
        self._step_id = step_id
        self._phase = phase
        self._total = total
        self._start_done = done  # resumed bytes do not count towards the rate
        self.done = done
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._emit()

    def _emit(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        self._on_event(Progress(self._step_id, self._phase, self.done, self._total, rate))

    def add(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self._last >= PROGRESS_INTERVAL:
                self._last = now
                self._emit()

    def restart(self, done: int = 0) -> None:
        """Count again from `done` (a resumed transfer that had to start over)."""
        with self._lock:
            self.done = self._start_done = done

    def finish(self) -> None:
        with self._lock:
            self._emit()
