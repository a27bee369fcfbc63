"""Backup: `preskool-dr backup` against the runbook's `pg_dump | gzip > F` then `md5sum`,
and the faster-compression and custom-format options with their sizes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from common import TOOL, Lab, Run, Series, alternate, say, shell, timed

BASELINE = "pg_dump | gzip > F; md5sum F (runbook)"
PLAIN = "preskool-dr backup --format plain (gzip level 6)"
ENCRYPTED = "preskool-dr backup, age-encrypted (gzip level 6)"
DEFAULT = "preskool-dr backup (default runbook: .sql.gz + companion)"
FAST = "preskool-dr backup --format plain (gzip level 1)"


def _sizes(folder: Path) -> dict[str, int]:
    plain = sum(p.stat().st_size for p in folder.glob("*.sql.gz*") if not p.name.endswith(".md5"))
    custom = sum(p.stat().st_size for p in folder.glob("*.dump"))
    return {"plain_bytes": plain, "custom_bytes": custom}


def run(lab: Lab, dbname: str, repeats: int) -> dict[str, Series]:
    default = lab.runbook("backup-default")  # the repo's runbook as shipped
    level6 = lab.runbook("backup-6", backups={"compress_level": 6})
    level1 = lab.runbook("backup-1", backups={"compress_level": 1})
    encrypted = lab.encrypting_runbook("backup-6-age", backups={"compress_level": 6})
    folders: dict[str, Path] = {}

    def folder(variant: str) -> Path:
        path = folders.setdefault(variant, lab.root / f"bk-{len(folders)}")
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def raw() -> Run:
        out = folder(BASELINE)
        env = lab.env(dbname)
        run = shell(
            f"pg_dump -d {dbname} | gzip > F.sql.gz && md5sum F.sql.gz > F.sql.gz.md5", env, cwd=out
        )
        run.extra.update(_sizes(out))
        return run

    def product(variant: str, runbook: Path, *extra: str) -> Callable[[], Run]:
        def go() -> Run:
            out = folder(variant)
            env = lab.env(dbname, runbook=runbook, state="state-backup") | {"BACKUP_DIR": str(out)}
            run, _ = timed([TOOL, "backup", "--no-upload", *extra], env)
            run.extra.update(_sizes(out))
            return run

        return go

    variants = {
        BASELINE: raw,
        DEFAULT: product("default", default),
        PLAIN: product("p6", level6, "--format", "plain"),
        ENCRYPTED: product("e6", encrypted),
        FAST: product("p1", level1, "--format", "plain"),
    }
    say(f"  backup: {len(variants)} variants x {repeats}")
    series = alternate(variants, repeats)
    for path in folders.values():
        shutil.rmtree(path, ignore_errors=True)
    return series
