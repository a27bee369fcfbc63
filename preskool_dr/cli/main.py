"""`preskool-dr`: argument parsing and dispatch. Each command lives in its own module
with `register(subparsers)` and `run(args, ctx) -> exit code`."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from preskool_dr import __version__
from preskool_dr.core.config import Config, load_config
from preskool_dr.core.errors import DrError

# The order here is the order `--help` lists them in.
COMMAND_MODULES = (
    "tui_cmd",
    "demo_cmd",
    "backup_cmd",
    "list_cmd",
    "verify_cmd",
    "restore_test_cmd",
    "restore_cmd",
    "check_cmd",
    "drill_log_cmd",
)

DESCRIPTION = """\
Backup and disaster recovery for the PreSkool ERP PostgreSQL database.

With no command, opens the full-screen restore checklist (same as `preskool-dr tui`).
Start here in an outage:  preskool-dr list   then   preskool-dr verify latest
"""


@dataclass
class Context:
    """What every command gets: the parsed global options and the config, loaded on demand."""

    runbook: Path | None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.runbook)
        return self._config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preskool-dr",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"preskool-dr {__version__}")
    parser.add_argument(
        "--runbook",
        type=Path,
        metavar="PATH",
        help="runbook.yaml to use (default: $PRESKOOL_DR_RUNBOOK, ./runbook.yaml, the repo's)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"preskool_dr.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*(argv or sys.argv[1:]), "tui"])
    ctx = Context(runbook=args.runbook)
    try:
        return int(args.handler(args, ctx))
    except DrError as exc:
        print(f"preskool-dr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("preskool-dr: interrupted", file=sys.stderr)
        return 130
