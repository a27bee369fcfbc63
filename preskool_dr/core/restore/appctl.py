"""The application side of the runbook: stop/start/migrate commands and the health URL."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base.errors import Cancelled
from preskool_dr.core.base.procs import CommandResult, run_command


def run_app_command(
    argv: Sequence[str],
    *,
    cwd: str | None,
    timeout: float,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> CommandResult:
    """Run one of app.stop/start/migrate: no shell, own session, bounded by `timeout`."""
    if cwd is not None and not Path(cwd).is_dir():
        return CommandResult(
            tuple(argv), 127, f"working directory {cwd} does not exist (app.cwd)", False, 0.0
        )
    result = run_command(argv, cwd=cwd, timeout=timeout, env=env, on_line=on_line, cancel=cancel)
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{Path(argv[0]).name} was stopped: the run was interrupted")
    return result


@dataclass(frozen=True)
class HealthTry:
    """One poll of the health URL, for a live line: `try 12/30 · 503 · gives up in 18 s`."""

    attempt: int
    most: int  # the tries there can be before the deadline (fewer when requests are slow)
    answer: str  # the status code, or `unreachable`
    seconds_left: float


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    status: int | None
    detail: str
    attempts: int


def check_health(
    url: str,
    *,
    wait_seconds: float,
    request_timeout: float = 5.0,
    interval: float = 1.0,
    cancel: threading.Event | None = None,
    on_attempt: Callable[[str], None] | None = None,
    on_try: Callable[[HealthTry], None] | None = None,
) -> HealthResult:
    """Poll `url` until it answers 2xx or `wait_seconds` pass (the app may still be starting).
    `on_attempt` hears each changed answer (the log), `on_try` every try (a live line)."""
    deadline = time.monotonic() + wait_seconds
    attempts = 0
    last = previous = "no answer yet"
    status: int | None = None
    while True:
        attempts += 1
        try:
            with urllib.request.urlopen(url, timeout=request_timeout) as response:  # noqa: S310
                status = response.status
                body = response.read(200).decode("utf-8", "replace").strip()
                if 200 <= status < 300:
                    return HealthResult(
                        True, status, f"{url} answered {status} {body}".strip(), attempts
                    )
                last, answer = f"{url} answered {status}", str(status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            body = exc.read(200).decode("utf-8", "replace").strip()
            last, answer = f"{url} answered {exc.code} {exc.reason} {body}".strip(), str(status)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            last, answer = f"{url} unreachable: {reason}", "unreachable"
        if on_try is not None:
            left = max(0.0, deadline - time.monotonic())
            on_try(HealthTry(attempts, attempts + int(left // interval), answer, left))
        if on_attempt and last != previous:
            on_attempt(last)  # a changed answer only: a slow start must not flood the log
        previous = last
        if time.monotonic() + interval > deadline:
            return HealthResult(False, status, f"{last} (gave up after {attempts} tries)", attempts)
        if cancel is not None and cancel.wait(interval):
            raise Cancelled("health check interrupted")
        if cancel is None:
            time.sleep(interval)
