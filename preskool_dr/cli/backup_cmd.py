"""`preskool-dr backup`: the seed's backup.sh, with the same `[BACKUP]`/`[OK]` lines."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime
from types import FrameType
from typing import Any

from preskool_dr.cli.notifying import notifier
from preskool_dr.cli.output import (
    BANNER_RULE,
    json_logging,
    progress_sink,
    tagged,
)
from preskool_dr.core.backup.common import human_size
from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.errors import Cancelled, DrError, UsageError
from preskool_dr.core.base.events import Event, Notice, Progress, utcnow
from preskool_dr.core.base.notify import Notification

TAGS = {"info": "BACKUP", "ok": "OK", "warn": "WARN", "error": "FAIL"}


def run(args: argparse.Namespace, ctx: Any) -> int:
    if args.format == "custom" and args.kind == "base":
        raise UsageError("--format custom is for logical backups (daily, weekly, pre-deploy)")
    config = ctx.config
    started = utcnow()
    if not json_logging():  # the seed's banner is for people reading the cron log
        print(BANNER_RULE)
        print(f"  PreSkool ERP — Database Backup | {banner_date(started)}")
        print(BANNER_RULE, flush=True)
    printer = EventPrinter()
    notify = notifier(config)
    about = {"kind": args.kind, "database": config.database.label}
    subject = f"{args.kind} backup of {config.database.label}"
    previous = signal.signal(signal.SIGTERM, _cancel_on_sigterm)
    try:
        result = run_backup(
            config,
            args.kind,
            upload=not args.no_upload,
            at=started,
            on_event=printer,
            custom=None if args.format is None else args.format == "custom",
        )
    except DrError as exc:
        printer.end_progress()
        tagged("FAIL", str(exc), sys.stderr)
        notify.send(Notification("backup_failed", subject, str(exc), details=about))
        return exc.exit_code
    except Exception as exc:  # a crash is a failed backup too: someone must hear of it
        error = f"internal error: {type(exc).__name__}: {exc}"
        notify.send(Notification("backup_failed", subject, error, details=about))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if notify.on_success:
        summary = f"{result.path.name} in {result.path.parent}"
        if result.uploaded:
            summary += f", uploaded to {result.uploaded[0]}"
        notify.send(Notification("backup_succeeded", result.path.name, summary, details=about))
    return 0


def banner_date(at: datetime) -> str:
    """`Thu Feb 20 02:00:00 UTC 2026`, as `date` prints it in the seed."""
    return f"{at:%a %b} {at.day:2d} {at:%H:%M:%S} UTC {at:%Y}"


def _cancel_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Raised in the main thread, so the core's cleanup (stop pg_dump, remove the .part) runs.
    raise Cancelled("backup stopped by SIGTERM before it finished; run it again")


class EventPrinter:
    """The one event -> line mapping: Notices become tagged lines on stdout; Progress is a
    self-overwriting line on stderr, only when that is a terminal (cron logs stay clean)."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.progress_shown = False
        self.json_sink = progress_sink() if json_logging() else None

    def __call__(self, event: Event) -> None:
        if self.json_sink is not None and not isinstance(event, Notice):
            self.json_sink(event)  # progress as JSON lines; a Notice is a tagged() line
        elif isinstance(event, Notice):
            self.end_progress()
            tagged(TAGS.get(event.level, "INFO"), event.text)
        elif isinstance(event, Progress) and self.live:
            rate = f", {human_size(int(event.rate))}/s" if event.rate else ""
            sys.stderr.write(f"\r\x1b[K  {event.phase}: {human_size(event.done)}{rate}")
            sys.stderr.flush()
            self.progress_shown = True

    def end_progress(self) -> None:
        if self.progress_shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.progress_shown = False
