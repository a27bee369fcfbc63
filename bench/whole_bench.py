"""What an operator feels: the whole `preskool-dr restore` command against the runbook's
steps 4-6 typed by hand, and the start-up of `preskool-dr --help` / `check --json`
against a bare `python -c pass`, each compared in the same rounds."""

from __future__ import annotations

import sys
from pathlib import Path

from common import APP_ROLE, TOOL, Lab, Run, Series, alternate, on_a_tty, say, shell, timed

from preskool_dr.demo.cluster import SUPERUSER

TARGET = "bench_whole"
BY_HAND = "steps 4-6 by hand: md5sum --check; createdb; gunzip -c F | psql"
DEFAULT = "preskool-dr restore F --confirm T --target-db T (default runbook)"
SERIAL = "preskool-dr restore F ... (restore.method: serial)"
PYTHON = "python -c pass"
HELP = "preskool-dr --help"
CHECK = "preskool-dr check --json"
STARTUP_ROUNDS = 10


def restore(lab: Lab, plain: Path, repeats: int) -> dict[str, Series]:
    """`plain` is a default `preskool-dr backup` (its .md5 sidecar beside it). Before every
    run of any variant the target is dropped (the command creates it, as the hand-typed
    steps do) and the server settles (CHECKPOINT, sync)."""
    runbooks = {
        DEFAULT: lab.runbook("whole-default"),  # the repo's runbook, app commands removed
        SERIAL: lab.runbook("whole-serial", restore={"method": "serial"}),
    }
    by_hand = (
        f"md5sum --quiet --check '{plain.name}.md5' && "
        f"createdb -U {SUPERUSER} -O {APP_ROLE} {TARGET} && "
        f"gunzip -c '{plain.name}' | psql -X -q -v ON_ERROR_STOP=1 -d {TARGET} > /dev/null"
    )

    def product(name: str, state: str) -> Run:
        env = lab.env(TARGET, runbook=runbooks[name], state=state)
        argv = [TOOL, "restore", str(plain), "--confirm", TARGET, "--target-db", TARGET]
        return on_a_tty(argv, env).run

    variants = {
        BY_HAND: lambda: shell(by_hand, lab.env(TARGET), cwd=plain.parent),
        DEFAULT: lambda: product(DEFAULT, "state-whole-default"),
        SERIAL: lambda: product(SERIAL, "state-whole-serial"),
    }
    say(f"  whole restore: {len(variants)} variants x {repeats}, alternating")

    def before(name: str) -> None:
        lab.drop_db(TARGET)
        lab.settle()

    series = alternate(variants, repeats, before=before)
    lab.drop_db(TARGET)
    return series


def startup(lab: Lab, repeats: int = STARTUP_ROUNDS) -> dict[str, Series]:
    """Wall time to an answer. `check --json` runs its real checks on a local-only runbook
    (no S3 bucket, no database connection); its exit code is the health, not an error."""
    env = lab.env("postgres", runbook=lab.runbook("startup"), state="state-startup")
    variants = {
        PYTHON: lambda: timed([sys.executable, "-c", "pass"], env)[0],
        HELP: lambda: timed([TOOL, "--help"], env)[0],
        CHECK: lambda: timed([TOOL, "check", "--json"], env, check=False)[0],
    }
    say(f"  start-up: {len(variants)} variants x {repeats}, alternating")
    return alternate(variants, repeats)
