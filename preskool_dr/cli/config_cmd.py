"""`preskool-dr config check`: validate the runbook, show the effective settings and their
sources (file line, environment variable, default), secrets masked."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

from preskool_dr.cli.main import Context
from preskool_dr.cli.output import print_json
from preskool_dr.core.base.config import load_config, runbook_key_lines
from preskool_dr.core.base.errors import ConfigError
from preskool_dr.core.base.procs import redact
from preskool_dr.core.base.runbook_file import find_runbook
from preskool_dr.core.base.settings_report import (
    effective_settings,
    env_file_warnings,
    password_source,
)

EPILOG = """\
examples:
  preskool-dr config check
      the runbook found the usual way ($PRESKOOL_DR_RUNBOOK, ~/.config/preskool-dr/,
      /etc/preskool-dr/), then every setting with where it came from
  preskool-dr --runbook /etc/preskool-dr/runbook.yaml config check
      a given runbook (after editing it: a mistake is reported as FILE:LINE)
  set -a; . /etc/preskool-dr/preskool-dr.env; set +a; preskool-dr config check
      what cron and systemd will see, with the environment file loaded
  preskool-dr config check --json
      the same as JSON: {"valid", "runbook", "settings": [{"key", "value", "source",
      "detail"}], "password_source", "warnings"} or {"valid": false, "error"}

Exit status: 0 valid, 2 invalid (the message starts with FILE:LINE).
Secrets (PGPASSWORD, AWS keys, notification URLs) show only as ******** (set).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "config",
        help="check the runbook and show the effective settings",
        description="Inspect the configuration.",
        epilog="example:\n  preskool-dr config check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate the runbook; print every setting and where it came from",
        description="Validate runbook.yaml and the environment, then print the effective "
        "settings with their source: the runbook file (and line), the environment "
        "(which wins), or the default. Secrets are masked.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(handler=run_check)


def _how_found(ctx: Context) -> str:
    if ctx.runbook is not None:
        return "--runbook"
    if os.environ.get("PRESKOOL_DR_RUNBOOK"):
        return "PRESKOOL_DR_RUNBOOK"
    return "search path"


def run_check(args: argparse.Namespace, ctx: Context) -> int:
    try:
        path = find_runbook(ctx.runbook)
        config = load_config(path)
        file_keys = runbook_key_lines(path)
    except ConfigError as exc:
        message = redact(str(exc))
        if args.json:
            print_json({"valid": False, "error": message})
        print(f"preskool-dr: config check: INVALID: {message}", file=sys.stderr)
        return 2
    settings = effective_settings(config, file_keys, os.environ)
    passwords, warning = password_source(os.environ)
    warnings = [warning] if warning else []
    warnings += env_file_warnings(config, path)
    if not config.backups.dir.is_dir():
        warnings.append(
            f"backups.dir {config.backups.dir} does not exist yet (`preskool-dr init` or the "
            "first backup creates it)"
        )
    if args.json:
        print_json(
            {
                "valid": True,
                "runbook": str(path),
                "found_by": _how_found(ctx),
                "settings": [asdict(s) for s in settings],
                "password_source": passwords,
                "warnings": warnings,
            }
        )
        return 0
    print(f"runbook    {path}  (found by {_how_found(ctx)})")
    print("result     valid")
    print(f"passwords  {passwords}\n")
    width = max(len(s.key) for s in settings)
    value_width = min(48, max(len(s.value) for s in settings))
    print(f"{'SETTING':<{width}}  {'VALUE':<{value_width}}  SOURCE")
    for s in settings:
        where = f"{s.source} {s.detail}" if s.detail else s.source
        print(redact(f"{s.key:<{width}}  {s.value:<{value_width}}  {where}"))
    for line in warnings:
        print(f"\nWARNING: {line}")
    return 0
