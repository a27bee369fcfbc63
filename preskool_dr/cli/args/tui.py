"""The parser of `preskool-dr tui` (its options and help): imported to build the
command line; the command itself (cli/tui_cmd.py) is imported only when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from preskool_dr.cli.args.lazy import lazy

EPILOG = """\
keys (inside):
  r run the selected step   s skip it (asks why)   R retry a failed step
  u roll back to the old database kept aside (after a failed step; asks its name)
  b backups   1-4 panels (Backups, Checksum, Restore, Log)   ? help   q quit
  p point-in-time recovery (base backup + archived WAL into a new data directory)
  ctrl+p lists every action by name. Step 5 asks for the database name typed.

examples:
  preskool-dr                                   open the checklist (resume or new run)
  preskool-dr tui --backup latest               start with the newest backup
  preskool-dr tui --drill --target-db preskool_drill   rehearse without touching production

exit status: 0 done, 1 a step failed, 130 quit while the run was unfinished.
A run interrupted by q, a dropped SSH session or a crash resumes: start it again.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tui",
        help="full-screen nine-step restore checklist (the default command)",
        description="The nine-step restore as a full-screen checklist with the RTO clock, "
        "backup browser, checksum and restore progress. State is saved after every step.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--drill",
        action="store_true",
        help="rehearsal: never stops, starts or writes to production (target drill.target_db)",
    )
    parser.add_argument(
        "--target-db",
        metavar="NAME",
        help="database to restore into (default: DB_NAME, or drill.target_db with --drill)",
    )
    parser.add_argument(
        "--backup",
        metavar="BACKUP",
        help="start a run with this backup: a path, a name in BACKUP_DIR, s3://bucket/key, "
        "or latest (default: choose in the browser)",
    )
    parser.add_argument(
        "--performed-by", metavar="NAME", help="operator name for the journal and drill log"
    )
    parser.add_argument(
        "--sign-key", type=Path, metavar="PATH", help="SSH key that signs the drill entry"
    )
    parser.add_argument(
        "--drill-log", type=Path, metavar="PATH", help="drill log to append to (drill sign-off)"
    )
    parser.add_argument(
        "--server-python",
        metavar="PATH",
        help="point-in-time recovery (p): Python with preskool-dr that the recovered server "
        f"runs wal-fetch with (default: {sys.executable}; as root the postgres user must run it)",
    )
    parser.set_defaults(handler=lazy("tui_cmd", "run"))
