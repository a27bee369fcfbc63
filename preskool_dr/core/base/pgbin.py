"""Where the PostgreSQL server programs are (pg_ctl, initdb, pg_waldump, pg_verifybackup).

Debian keeps them out of PATH (in /usr/lib/postgresql/<major>/bin), so a plain `which`
misses them on the very hosts the runbook targets. Used by point-in-time recovery and by
the demo's private cluster.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

from preskool_dr.core.base import procs
from preskool_dr.core.base.errors import DrError


def find_pg_bin(name: str) -> str:
    """Locate a PostgreSQL server binary: PATH, `pg_config --bindir`, /usr/lib/postgresql/*/bin
    (the newest major version)."""
    found = shutil.which(name)
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = procs.run_command([pg_config, "--bindir"], timeout=60).output.strip()
        candidate = Path(bindir) / name
        if bindir and candidate.exists():
            return str(candidate)
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0,
    )
    if versions:
        return versions[-1]
    raise DrError(
        f"PostgreSQL program {name!r} not found: install the 'postgresql' package "
        "(make test / make demo do this when run as root)"
    )
