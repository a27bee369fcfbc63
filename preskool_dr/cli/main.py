"""`preskool-dr`: argument parsing and dispatch. Each command's parser lives in
`cli/args/<command>.py` (`register(subparsers)`: options and help only) and the command in
`cli/<command>_cmd.py` (`run(args, ctx) -> exit code`), imported only when it runs: `--help`
and a command's start never import the others' dependencies (textual, boto3, psycopg...)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from preskool_dr import __version__
from preskool_dr.cli.completion import INSTALL_HELP, add_completion_option
from preskool_dr.core.base.errors import DrError

if TYPE_CHECKING:
    from preskool_dr.core.base.settings import Config

# Parsers in cli/args/. The order here is the order `--help` lists them in.
COMMAND_MODULES = (
    "tui",
    "demo",
    "init",
    "config",
    "backup",
    "list",
    "verify",
    "restore_test",
    "restore",
    "check",
    "drill_log",
    "wal",
    "pitr",
    "schedule",
)
# PostgreSQL runs these once per WAL segment: they skip building every other parser.
PER_SEGMENT_COMMANDS = {"wal-push": "wal", "wal-fetch": "wal"}
# A command line that starts with a command's name builds that command's parser alone (its
# options and help are the same; `check` from cron starts sooner). tests/test_cli_startup.py
# keeps this equal to what the parsers register.
COMMAND_PARSERS = {
    **{name: name for name in ("tui", "demo", "init", "config", "backup", "list", "verify")},
    **{name: name for name in ("restore", "check", "pitr", "schedule")},
    "restore-test": "restore_test",
    "drill-log": "drill_log",
    **PER_SEGMENT_COMMANDS,
}

DESCRIPTION = """\
Backup and disaster recovery for the PreSkool ERP PostgreSQL database.

With no command, opens the full-screen restore checklist (same as `preskool-dr tui`).
Start here in an outage:  preskool-dr list   then   preskool-dr verify latest
On a new host:            preskool-dr init    then   preskool-dr config check
"""


@dataclass
class Context:
    """What every command gets: the parsed global options and the config, loaded on demand."""

    runbook: Path | None
    identity: Path | None = None  # --identity: wins over PRESKOOL_DR_AGE_IDENTITY
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from preskool_dr.core.base.config import load_config  # yaml: when a command asks

            config = load_config(self.runbook)
            if self.identity is not None:
                encryption = dataclasses.replace(
                    config.encryption, identity=self.identity.expanduser().resolve()
                )
                config = dataclasses.replace(config, encryption=encryption)
            self._config = config
        return self._config


def build_parser(modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preskool-dr",
        description=DESCRIPTION,
        epilog=INSTALL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"preskool-dr {__version__}")
    add_completion_option(parser)
    parser.add_argument(
        "--runbook",
        type=Path,
        metavar="PATH",
        help="runbook.yaml to use (default: $PRESKOOL_DR_RUNBOOK, then "
        "$XDG_CONFIG_HOME/preskool-dr/runbook.yaml (~/.config), then "
        "/etc/preskool-dr/runbook.yaml; never the current directory). Refused when "
        "writable by group/others or owned by another user than you or root",
    )
    parser.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="age identity file (age-keygen's AGE-SECRET-KEY-1... or an SSH private key) "
        "that decrypts encrypted backups for restore, restore-test, verify and wal-fetch "
        "(default: $PRESKOOL_DR_AGE_IDENTITY); keep it off the database host when you can",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        module = importlib.import_module(f"preskool_dr.cli.args.{name}")
        module.register(sub)
    return parser


def _never_fail_on_output() -> None:
    """File names that are not UTF-8 arrive as surrogate escapes; a terminal set to strict
    UTF-8 would crash printing one. Escape it instead (`\\udce9`): the line still says
    which file."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _never_fail_on_output()
    first = (sys.argv[1:] if argv is None else argv)[:1]
    fast = COMMAND_PARSERS.get(first[0]) if first else None
    parser = build_parser((fast,) if fast else COMMAND_MODULES)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*(argv or sys.argv[1:]), "tui"])
    ctx = Context(runbook=args.runbook, identity=args.identity)
    log_format = getattr(args, "log_format", None)  # the long-running commands' option
    if log_format is not None:  # (so wal-push never imports cli.output)
        from preskool_dr.cli.output import use_log_format

        use_log_format(log_format)
    log_json = log_format == "json"
    try:
        return int(args.handler(args, ctx))
    except DrError as exc:
        _last_words(f"error: {exc}", log_json)
        return exc.exit_code
    except KeyboardInterrupt:
        _last_words("interrupted", log_json)
        return 130


def _last_words(text: str, log_json: bool) -> None:
    """The line a command ends on when it fails: JSON too under `--log-format json`."""
    if log_json:
        from preskool_dr.cli.output import error_line

        error_line(text)
    else:
        print(f"preskool-dr: {text}", file=sys.stderr)
