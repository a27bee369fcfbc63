"""The parser of `preskool-dr check` (its options and help): imported to build the
command line; the command itself (cli/check_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from preskool_dr.cli.args.lazy import lazy

EPILOG = """\
checks (the seed's alert table):
  backup_age      newest backup older than 25 h: WARNING; older than 26 h or none: CRITICAL
  backup_size     newest backup smaller than 1 MiB: WARNING
  s3_replication  newest backup missing from s3://$S3_BUCKET/preskool-backups/: WARNING
                  (no bucket configured: reported, not an alert)
  restore_test    last restore-test failed, older than 8 days, or none recorded in the
                  state folder: WARNING (a system install shares one state folder,
                  /var/lib/preskool-dr, so root's weekly restore-test counts for every user)
Thresholds come from runbook.yaml `thresholds`.

examples:
  preskool-dr check                                  Nagios/Icinga: first line + exit code
  preskool-dr check --json                           for scripts
  preskool-dr check --prometheus /var/lib/node_exporter/textfile/preskool_dr.prom

exit: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check itself could not run).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="backup freshness, size, S3 replication and restore-test alerts (Nagios exit codes)",
        description=(
            "Check backup health the way section 5 of the runbook describes it and answer as a\n"
            "Nagios plugin: `PRESKOOL_DR OK|WARNING|CRITICAL|UNKNOWN - summary`, then one line\n"
            "per check."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--prometheus",
        type=Path,
        metavar="FILE",
        help="also write node-exporter textfile gauges to FILE (replaced atomically)",
    )
    parser.set_defaults(handler=lazy("check_cmd", "run"))
