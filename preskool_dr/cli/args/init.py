"""The parser of `preskool-dr init` (its options and help): imported to build the
command line; the command itself (cli/init_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from preskool_dr.cli.args.lazy import lazy

EPILOG = """\
examples:
  sudo preskool-dr init
      a system install: /etc/preskool-dr/runbook.yaml, /etc/preskool-dr/preskool-dr.env
      (mode 0600, for the secrets), /var/backups/preskool and /var/lib/preskool-dr (the
      runbook's state_dir: one state for root's jobs and the monitoring user's `check`;
      group preskool-dr, created when missing: usermod -aG preskool-dr nagios)
  preskool-dr init
      the same for your user: ~/.config/preskool-dr/, ~/.local/share/preskool-dr/backups,
      ~/.local/state/preskool-dr
  preskool-dr init --path /srv/dr/runbook.yaml --backup-dir /srv/dr/backups
      somewhere else (then set PRESKOOL_DR_RUNBOOK, or pass --runbook, to use it)
  sudo preskool-dr init --force
      replace an existing runbook (the old one is kept as runbook.yaml.bak; the .env
      file with your secrets is never replaced)

Then edit the runbook, put the passwords in ~/.pgpass (or the .env file) and run
  preskool-dr config check
Exit status: 0 written, 2 the runbook exists (nothing written without --force).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "init",
        help="write a first runbook.yaml, a 0600 file for the secrets, and the folders",
        description="Set up this host: a commented runbook.yaml from the shipped template, "
        "an environment file for the secrets (mode 0600, next to the runbook), and the "
        "backup and state folders (0750 for a system install, the state folder 2750 with group preskool-dr; 0700 for a user).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--path",
        type=Path,
        metavar="P",
        help="the runbook file to write (default: /etc/preskool-dr/runbook.yaml as root, "
        "else $XDG_CONFIG_HOME/preskool-dr/runbook.yaml); the .env file goes next to it",
    )
    parser.add_argument(
        "--backup-dir",
        type=Path,
        metavar="DIR",
        help="backups folder written into the runbook (default: $BACKUP_DIR, else "
        "/var/backups/preskool as root, else ~/.local/share/preskool-dr/backups)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="state folder (journals, restore-test record, drill log) written into the "
        "runbook as state_dir, so every user of it shares one state (default: "
        "$PRESKOOL_DR_STATE_DIR, else /var/lib/preskool-dr as root: group preskool-dr, "
        "created when missing, mode 2750; else $XDG_STATE_HOME/preskool-dr)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing runbook (kept as .bak)"
    )
    parser.set_defaults(handler=lazy("init_cmd", "run"))
