"""The parser of `preskool-dr demo` (its options and help): imported to build the
command line; the command itself (cli/demo_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from preskool_dr.cli.args.lazy import lazy

# demo/sandbox.py's DEMO_SCALE (a test keeps them equal)
DEMO_SCALE = 0.5


EPILOG = """\
examples:
  preskool-dr demo
      start the sandbox, open the TUI on it, remove everything when you quit
  preskool-dr demo --drill
      the same, as a quarterly drill (restores into preskool_drill, signs the drill log)
  preskool-dr demo --keep
      leave the sandbox running after the TUI and print how to reach it
  preskool-dr demo --keep --no-tui
      only build the sandbox, e.g. to try the headless commands against it
  preskool-dr demo --stop /tmp/preskool-demo-abc123
      stop and remove a sandbox left by --keep (or by a demo that was killed)

The sandbox: a private PostgreSQL cluster with a seeded preskool_db, a local S3 endpoint
(moto) with a bucket, a stand-in app with a health URL, a runbook.yaml pointing at them,
and five backups made by the real backup code: two daily, a pre-deploy, and two weekly
in S3 GLACIER (the older one past its 30 days on disk, so only in S3).
It needs the PostgreSQL server packages; `make demo` installs them.
In the TUI: r runs the selected step, type preskool_db when asked, q quits.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="try the restore on a throwaway sandbox (no infrastructure needed)",
        description="Start an embedded sandbox with PreSkool data and backups, then the TUI on it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the sandbox running on exit and print how to connect and stop it",
    )
    parser.add_argument(
        "--stop",
        type=Path,
        metavar="DIR",
        help="stop and remove the sandbox in DIR (printed by --keep), then exit",
    )
    parser.add_argument("--drill", action="store_true", help="open the TUI in drill mode")
    parser.add_argument(
        "--no-tui", action="store_true", help="only build the sandbox (needs --keep)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEMO_SCALE,
        metavar="N",
        help=f"data volume (default {DEMO_SCALE}: ~4 MB backups; 1.0 doubles it)",
    )
    parser.set_defaults(handler=lazy("demo_cmd", "run"))
