"""The parser of `preskool-dr schedule` (its options and help): imported to build the
command line; the command itself (cli/schedule_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from preskool_dr.cli.args.lazy import lazy
from preskool_dr.core.base.schedule import (
    CHECK_INTERVALS,
    CRON_DIR,
    DEFAULT_PROMETHEUS_FILE,
    FORMATS,
    SYSTEMD_DIR,
    seed_jobs,
)


def _table() -> str:
    """The help's schedule, from the same table the units and cron lines come from."""
    return "\n".join(
        f"  {' '.join(job.args):<24}{job.when.describe():<20}cron: {job.when.cron_fields()}"
        for job in seed_jobs(Path("FILE"))
    )


EPILOG = f"""\
the schedule (seed runbook, section 1; all times UTC):
{_table()}

examples:
  preskool-dr schedule print systemd                 look before installing
  preskool-dr schedule print cron
  sudo preskool-dr --runbook /etc/preskool-dr/runbook.yaml schedule install systemd
  sudo systemctl daemon-reload
  sudo systemctl enable --now preskool-dr-backup.timer preskool-dr-backup-weekly.timer \\
      preskool-dr-restore-test.timer preskool-dr-check.timer
  sudo preskool-dr schedule install cron             writes {CRON_DIR}/preskool-dr
  preskool-dr schedule install systemd --dir ./units write elsewhere, copy later

systemd: one service + timer per job (OnCalendar in UTC, Persistent=true), hardened with
NoNewPrivileges, ProtectSystem=strict (writable: the backup and state folders, the textfile
folder), PrivateTmp; secrets come from EnvironmentFile= (the 0600 file `init` writes:
/etc/preskool-dr/preskool-dr.env as root). cron: the same jobs with CRON_TZ=UTC, each
sourcing that file first, output appended to the seed's /var/log/preskool-*.log.
The jobs run the preskool-dr you run this with (its absolute path), with --runbook when
you give one. The folders they may write come from what the jobs will see (the environment
file, then the runbook, then the defaults), not from your shell: after changing them,
install again with --force. Exit 0 written/printed, 2 usage or a file exists.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="print or install the seed's schedule as systemd timers or a cron file",
        description=(
            "Print or install the seed's schedule: the daily and weekly backups, the weekly\n"
            "restore-test and the monitoring check, as systemd service + timer units or an\n"
            "/etc/cron.d file."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="schedule_action", metavar="ACTION", required=True)
    printer = actions.add_parser(
        "print",
        help="print the units or the cron file",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(printer)
    installer = actions.add_parser(
        "install",
        help="write the units or the cron file and say what to run next",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(installer)
    installer.add_argument(
        "--dir",
        type=Path,
        metavar="D",
        help=f"folder to write into (default: {SYSTEMD_DIR} for systemd, {CRON_DIR} for cron)",
    )
    installer.add_argument("--force", action="store_true", help="replace files that exist")
    parser.set_defaults(handler=lazy("schedule_cmd", "run"))


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="systemd units or a cron file")
    parser.add_argument(
        "--prometheus",
        type=Path,
        metavar="FILE",
        default=DEFAULT_PROMETHEUS_FILE,
        help=f"the textfile `check` writes (default: {DEFAULT_PROMETHEUS_FILE})",
    )
    parser.add_argument(
        "--check-every",
        type=int,
        choices=CHECK_INTERVALS,
        default=5,
        metavar="MINUTES",
        help="how often `check` runs, in minutes dividing an hour (default: 5)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="the environment file the jobs read, 0600 (default: /etc/preskool-dr/"
        "preskool-dr.env as root, else $XDG_CONFIG_HOME/preskool-dr/preskool-dr.env)",
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="who the jobs run as (default: you; systemd User=, the cron user field)",
    )
