"""`preskool-dr check`: the seed's backup alerts as a Nagios plugin (exit 0/1/2/3)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from preskool_dr.cli.notifying import notifier
from preskool_dr.cli.output import print_json, tagged
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.monitor.check import run_checks
from preskool_dr.core.monitor.check_state import record_state
from preskool_dr.core.monitor.report import (
    CheckResult,
    HealthReport,
    Status,
    unknown_report,
    write_prometheus,
)


def run(args: argparse.Namespace, ctx: Any) -> int:
    report = _report(ctx)
    if args.prometheus:
        try:
            write_prometheus(report, args.prometheus)
        except OSError as exc:
            report = report.with_check(
                CheckResult(
                    "prometheus_file",
                    Status.UNKNOWN,
                    f"cannot write {args.prometheus}: {exc.strerror or exc}",
                )
            )
    if args.json:
        print_json(report.to_json())
    else:
        print(report.nagios_text(), flush=True)
    _notify_change(ctx, report)
    return int(report.status)


def _notify_change(ctx: Any, report: HealthReport) -> None:
    """Notify when the state differs from the last check's (stderr only: stdout is the
    plugin's answer, and the exit code stays the check's)."""
    try:
        config = ctx.config
    except DrError:
        return  # no runbook, no notify settings: the UNKNOWN answer says why
    send = notifier(config, sys.stderr)
    try:
        change = record_state(config.state_dir, report)
    except OSError as exc:
        # The monitoring user of a system install reads the shared state but may not write
        # it: that matters only when there is someone to notify.
        if send.enabled:
            tagged("WARN", f"notify: cannot remember the check state: {exc}", sys.stderr)
        return
    if change is not None:
        send.send(change.notification(config.database.label))


def _report(ctx: Any) -> HealthReport:
    try:
        return run_checks(ctx.config)
    except DrError as exc:  # includes ConfigError: a broken runbook.yaml is UNKNOWN, not exit 2
        return unknown_report(str(exc))
    except Exception as exc:
        # A crashing plugin exits 1, which Nagios reads as WARNING: answer UNKNOWN instead.
        return unknown_report(f"internal error: {type(exc).__name__}: {exc}")
