"""The demo's backups: the runbook's schedule of the last days (`backup_plan`), taken for
real, oldest first, with a school day of attendance between them (`take_backups`). One of
them (the previous daily) is encrypted with age to the sandbox's own key, so the demo shows
an encrypted backup beside clear ones, and the TUI restores it with the identity the demo
puts in its environment (PRESKOOL_DR_AGE_IDENTITY).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.events import EventSink, Notice, utcnow
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage.layout import with_attributes


@dataclass(frozen=True)
class PlannedBackup:
    kind: str
    at: datetime
    encrypted: bool = False  # encrypted to the sandbox's age key


def backup_plan(now: datetime) -> list[PlannedBackup]:
    """The runbook's schedule, oldest first: the two latest dailies at 02:00, a pre-deploy
    dump from the morning between them, the Sunday 01:00 weekly before the last daily, and
    the weekly five Sundays before that (past its 30 days on disk, so retention leaves it
    only in S3 GLACIER)."""
    now = now.astimezone(UTC).replace(microsecond=0)
    last_daily = now.replace(hour=2, minute=0, second=0)
    if last_daily > now:
        last_daily -= timedelta(days=1)
    previous_daily = last_daily - timedelta(days=1)
    # The weekly before the last daily, so the newest backup is always a daily.
    days_since_sunday = (last_daily.weekday() - 6) % 7
    weekly = (last_daily - timedelta(days=days_since_sunday)).replace(hour=1)
    plan = [
        PlannedBackup("weekly", weekly - timedelta(weeks=5)),
        PlannedBackup("weekly", weekly),
        PlannedBackup("daily", previous_daily, encrypted=True),
        PlannedBackup("pre-deploy", previous_daily + timedelta(hours=9)),
        PlannedBackup("daily", last_daily),
    ]
    return sorted(plan, key=lambda b: b.at)


def take_backups(
    config: Config,
    school_day: Callable[[], None],
    on_event: EventSink,
    recipient: str | None = None,
) -> int:
    """Real backups, oldest first, with a school day of attendance between them so each
    one holds different data (as a week of real backups would); returns how many. The
    planned `encrypted` one is encrypted to `recipient` (taken clear without one)."""
    plan = backup_plan(utcnow())
    for number, planned in enumerate(plan, 1):
        if number > 1:
            school_day()
        on_event(
            Notice(
                "info",
                f"Backup {number}/{len(plan)}: {planned.kind} {planned.at:%Y-%m-%d %H:%M} UTC"
                + (" (encrypted)" if planned.encrypted and recipient else "")
                + "...",
            )
        )
        encrypted = recipient is not None and planned.encrypted
        result = run_backup(
            _encrypting(config, recipient) if encrypted and recipient else config,
            planned.kind,
            at=planned.at,
            on_event=lambda e: on_event(e) if _is_warning(e) else None,
        )
        # Local files carry the backup's time too, so `ls -lt` tells the same story.
        stamp = planned.at.timestamp()
        for path in with_attributes(result.path):
            if path.exists():  # the custom-format companion and its .md5 by default
                os.utime(path, (stamp, stamp))
    return len(plan)


def _encrypting(config: Config, recipient: str) -> Config:
    """`config` with encryption to `recipient` for one backup (the runbook stays clear, so
    `check` does not expect every backup to be encrypted)."""
    encryption = dataclasses.replace(config.encryption, recipients=(recipient,))
    return dataclasses.replace(config, encryption=encryption)


def _is_warning(event: object) -> bool:
    return isinstance(event, Notice) and event.level in ("warn", "error")
