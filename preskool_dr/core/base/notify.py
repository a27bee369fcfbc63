"""Telling people what happened: one notification per event, through Apprise or a command.

The runbook's `notify:` section (or PRESKOOL_DR_NOTIFY_URLS, comma-separated, which wins)
names Apprise URLs: `json://HOST:PORT/PATH` posts a generic JSON webhook, and Slack,
PagerDuty, e-mail, Teams... each have their own scheme. `notify.command` is an argv run
without a shell, with the event as JSON in $PRESKOOL_DR_EVENT.

Delivery never blocks or fails the job it reports on: each attempt has a short timeout,
a failed attempt is tried once more, and a delivery that still fails becomes a warning
Notice, never an exception. The whole send waits at most `deadline_seconds`, however the
network behaves (a hung DNS lookup included). URLs carry tokens, so they are only ever
shown in Apprise's privacy form (`json://127.0.0.1:8080/...`, secrets as `****`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from preskool_dr.core.base.events import EventSink, Notice, ignore_events, utcnow
from preskool_dr.core.base.procs import run_command
from preskool_dr.core.base.settings import Config

URLS_ENV = "PRESKOOL_DR_NOTIFY_URLS"
EVENT_ENV = "PRESKOOL_DR_EVENT"  # the command's copy of the event, as JSON
ATTEMPTS = 2
RETRY_PAUSE_SECONDS = 1.0

# event name -> (what the title calls it, Apprise's notification type)
EVENTS: dict[str, tuple[str, str]] = {
    "backup_failed": ("backup FAILED", "failure"),
    "backup_succeeded": ("backup succeeded", "success"),
    "restore_test_failed": ("restore test FAILED", "failure"),
    "check_state_changed": ("check state changed", "warning"),
    "restore_started": ("restore started", "info"),
    "restore_step_failed": ("restore step FAILED", "failure"),
    "restore_finished": ("restore finished", "info"),
    "drill_signed": ("drill signed", "info"),
    "drill_recorded": ("drill recorded, unsigned", "warning"),
    "pitr_started": ("point-in-time recovery started", "info"),
    "pitr_failed": ("point-in-time recovery FAILED", "failure"),
    "pitr_finished": ("point-in-time recovery finished", "success"),
    "wal_push_failed": ("WAL archiving FAILED", "failure"),
}


@dataclass(frozen=True)
class Notification:
    """One event: `subject` is the backup or run it is about; the title names both."""

    event: str  # a key of EVENTS
    subject: str
    summary: str  # the body's first line
    level: str = ""  # Apprise's info|success|warning|failure; default: the event's
    details: Mapping[str, Any] = field(default_factory=dict)  # also in the body, key: value
    at: datetime = field(default_factory=utcnow)
    host: str = field(default_factory=socket.gethostname)

    @property
    def title(self) -> str:
        return f"preskool-dr {EVENTS[self.event][0]}: {self.subject}"

    @property
    def kind(self) -> str:
        return self.level or EVENTS[self.event][1]

    @property
    def body(self) -> str:
        lines = [self.summary, f"event: {self.event}", f"host: {self.host}"]
        lines += [f"{key}: {value}" for key, value in self.details.items() if value is not None]
        lines.append(f"at: {self.at:%Y-%m-%dT%H:%M:%SZ}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "subject": self.subject,
            "title": self.title,
            "body": self.body,
            "level": self.kind,
            "host": self.host,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "details": dict(self.details),
        }


class Notifier:
    """Sends Notifications to the configured URLs and command; `send` never raises."""

    def __init__(
        self,
        urls: tuple[str, ...] = (),
        command: tuple[str, ...] = (),
        *,
        on_success: bool = False,
        timeout_seconds: float = 5.0,
        on_event: EventSink = ignore_events,
    ) -> None:
        self.urls = urls
        self.command = command
        self.on_success = on_success
        self.timeout = timeout_seconds
        self.on_event = on_event

    @classmethod
    def from_config(
        cls,
        config: Config,
        on_event: EventSink = ignore_events,
        env: Mapping[str, str] | None = None,
    ) -> Notifier:
        env = os.environ if env is None else env
        named = env.get(URLS_ENV, "")
        urls = tuple(u.strip() for u in named.split(",") if u.strip()) if named.strip() else ()
        settings = config.notify
        return cls(
            urls or settings.urls,
            settings.command,
            on_success=settings.on_success,
            timeout_seconds=settings.timeout_seconds,
            on_event=on_event,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.urls or self.command)

    @property
    def per_target_seconds(self) -> float:
        """One URL's (or the command's) worst case: every attempt timing out, plus pauses."""
        per_attempt = 2 * self.timeout  # connect + read
        return ATTEMPTS * per_attempt + (ATTEMPTS - 1) * RETRY_PAUSE_SECONDS

    @property
    def deadline_seconds(self) -> float:
        """The longest `send` waits: each target in turn at its worst, and a second more."""
        targets = len(self.urls) + (1 if self.command else 0)
        return targets * self.per_target_seconds + 1.0

    def send(self, note: Notification) -> bool:
        """Deliver `note` everywhere; True when every delivery succeeded. Failures become
        warning Notices; after `deadline_seconds` the job goes on without waiting."""
        if not self.enabled:
            return True
        outcome: list[bool] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._deliver(note)),
            name="preskool-dr-notify",
            daemon=True,  # a delivery still hanging never keeps the process alive
        )
        worker.start()
        worker.join(self.deadline_seconds)
        if worker.is_alive():
            self._warn(
                f"notify: {note.event} not confirmed within {self.deadline_seconds:.0f} s; "
                "going on without it"
            )
            return False
        return bool(outcome and outcome[0])

    def _deliver(self, note: Notification) -> bool:
        try:
            ok = all([self._to_url(url, note) for url in self.urls])
            if self.command:
                ok = self._to_command(note) and ok
            return ok
        except Exception as exc:  # a notifier bug must not fail the backup it reports on
            self._warn(f"notify: {note.event} not sent: {type(exc).__name__}")
            return False

    def _to_url(self, url: str, note: Notification) -> bool:
        import apprise  # here: a few hundred plugins, loaded only when there is a URL

        with _apprise_log() as log:
            plugin = apprise.Apprise.instantiate(url)
        if not plugin:
            scheme = url.split("://", 1)[0] if "://" in url else "?"
            self._warn(
                f"notify: URL #{self.urls.index(url) + 1} (scheme {scheme}://) is not one "
                "Apprise can send to; check notify.urls or PRESKOOL_DR_NOTIFY_URLS"
            )
            return False
        plugin.socket_connect_timeout = self.timeout
        plugin.socket_read_timeout = self.timeout
        shown = _shown(plugin.url(privacy=True))
        kind = getattr(apprise.NotifyType, note.kind.upper())  # an Enum only since Apprise 1.9
        for attempt in range(1, ATTEMPTS + 1):
            with _apprise_log() as log:
                if plugin.notify(body=note.body, title=note.title, notify_type=kind):
                    return True
            if attempt < ATTEMPTS:
                time.sleep(RETRY_PAUSE_SECONDS)
        reason = _scrub(log[-1], url, shown) if log else "no reason given"
        self._warn(f"notify: {note.event} to {shown} failed after {ATTEMPTS} attempts: {reason}")
        return False

    def _to_command(self, note: Notification) -> bool:
        payload = json.dumps(note.to_json(), sort_keys=True, default=str)
        result = run_command(
            self.command,
            timeout=self.per_target_seconds,
            env={EVENT_ENV: payload, f"{EVENT_ENV}_NAME": note.event},
            keep_lines=5,
        )
        if not result.ok:
            self._warn(f"notify: {note.event}: notify.command {result.describe()}")
        return result.ok

    def _warn(self, text: str) -> None:
        with suppress(Exception):  # a closed stdout must not fail the job either
            self.on_event(Notice("warn", text))


def _shown(private_url: str) -> str:
    """Apprise's privacy form masks the secrets it knows of; a generic webhook's path
    (`json://host/hooks/abc123...`) may hold one too, so long path parts go as well."""
    base = private_url.split("?", 1)[0]
    scheme, _, rest = base.partition("://")
    host, *path = rest.split("/")
    return f"{scheme}://" + "/".join([host, *("****" if len(p) >= 8 else p for p in path)])


def _scrub(text: str, url: str, shown: str) -> str:
    """Apprise's own reason, without any part of the raw URL that `shown` does not show."""
    for part in sorted(set(re.split(r"[/:@?&=,#]+", url)), key=len, reverse=True):
        if len(part) >= 6 and part not in shown:
            text = text.replace(part, "****")
    return text.strip()


@contextmanager
def _apprise_log() -> Iterator[list[str]]:
    """Apprise's warnings, collected instead of printed: some of its messages quote the URL
    they are about, and every failure is reported once, as our own warning."""
    lines: list[str] = []
    logger = logging.getLogger("apprise")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.WARNING)
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved[0], saved[1]
