"""Verify throughput: `preskool-dr verify` (MD5 and gzip check in one read) against the
runbook's `md5sum --check` followed by `gzip -t` (two reads)."""

from __future__ import annotations

from pathlib import Path

from common import TOOL, Lab, Series, alternate, say, shell, timed

BASELINE = "md5sum --check, then gzip -t (runbook)"


def run(lab: Lab, backup: Path, repeats: int) -> dict[str, Series]:
    env = lab.env("postgres")
    name = backup.name
    variants = {
        BASELINE: lambda: shell(
            f"md5sum --check --quiet '{name}.md5' && gzip -t '{name}'", env, cwd=backup.parent
        ),
        "preskool-dr verify": lambda: timed([TOOL, "verify", str(backup)], env)[0],
    }
    say(
        f"  verify: {backup.stat().st_size / 2**20:,.0f} MiB file, {len(variants)} variants x {repeats}"
    )
    return alternate(variants, repeats)
