"""The parser of `preskool-dr config` (its options and help): imported to build the
command line; the command itself (cli/config_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse

from preskool_dr.cli.args.lazy import lazy

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
    check.set_defaults(handler=lazy("config_cmd", "run_check"))
