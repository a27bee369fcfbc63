"""`preskool-dr wal-push PATH` / `wal-fetch NAME DEST`: PostgreSQL's archive_command and
restore_command. Silent when they succeed (the server log would get a line per segment);
errors go to stderr, which PostgreSQL copies into its log."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from preskool_dr.cli.args.wal import EXIT_ABORT_RECOVERY
from preskool_dr.core.backup.wal.alert import clear_push_failure, notify_push_failure
from preskool_dr.core.backup.wal.fetch import WalMissing, fetch
from preskool_dr.core.backup.wal.push import push
from preskool_dr.core.backup.wal.settings import WalSettings, push_lock, push_recipients
from preskool_dr.core.base.errors import DrError, UsageError

# restore_command exit status 1 tells PostgreSQL "no such file": recovery ends there. A
# segment that exists but cannot be trusted must stop recovery instead, and PostgreSQL
# aborts on any status above 125. (126/127 read as "command not executable/not found".)


def run(args: argparse.Namespace, ctx: Any) -> int:
    settings = WalSettings.from_env()
    if ctx.identity is not None:
        settings = dataclasses.replace(settings, identity=ctx.identity.expanduser().absolute())
    if args.command == "wal-push":
        try:
            recipients, _ = push_recipients(ctx.runbook)
            lock_mode, lock_days = push_lock(ctx.runbook)
            settings = dataclasses.replace(
                settings, recipients=recipients, lock_mode=lock_mode, lock_days=lock_days
            )
            push(args.path, settings)
        except DrError as exc:  # whatever the cause, PostgreSQL keeps the segment and retries
            notify_push_failure(settings, args.path.name, str(exc))
            raise DrError(str(exc), exit_code=1) from None
        clear_push_failure(settings)
        return 0
    try:
        result = fetch(args.name, args.dest, settings)
    except WalMissing as exc:
        # Not an error in PostgreSQL's eyes: it probes for history files and the segment
        # after the last one; the line helps only when hunting a gap.
        print(f"preskool-dr wal-fetch: {exc} (exit 1: the end of the archive)", file=sys.stderr)
        return exc.exit_code
    except UsageError as exc:  # a broken restore_command: stop too, and say only that
        raise DrError(str(exc), exit_code=EXIT_ABORT_RECOVERY) from None
    except DrError as exc:
        raise _abort_recovery(args.name, str(exc)) from None
    except Exception as exc:
        raise _abort_recovery(args.name, f"wal-fetch failed unexpectedly: {exc!r}") from None
    if result.warning:
        print(f"preskool-dr: warning: {result.warning}", file=sys.stderr)
    return 0


def _abort_recovery(name: str, why: str) -> DrError:
    """NAME exists but cannot be delivered intact: exit 1 would let PostgreSQL end the
    recovery early, before NAME, and (with no recovery target) promote a copy missing
    everything after it. The exit status above 125 makes it stop instead, with this line
    in its log."""
    return DrError(
        f"{why} - wal-fetch exits {EXIT_ABORT_RECOVERY} so PostgreSQL stops the recovery at "
        f"{name} instead of ending it early there: put an intact copy of {name} (with its "
        ".md5) into the archive, or choose a target before it, and run pitr again",
        exit_code=EXIT_ABORT_RECOVERY,
    )
