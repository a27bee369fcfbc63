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
