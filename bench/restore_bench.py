"""Step 6 against the runbook's own command, `gunzip -c F | psql`, into a fresh database:
the serial stream, the parallel plain restore (N = 1, 2) and the custom-format companion
with pg_restore -j, each through the real `preskool-dr restore` on a terminal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from common import TOOL, Lab, Run, Series, alternate, on_a_tty, say, shell, step_seconds

TARGET = "bench_restore"
BASELINE = "gunzip -c F | psql (runbook)"
# The baseline once more in every round: how far two runs of the very same command land from
# each other in this pairing, the yardstick for a target within a few percent.
NOISE = "gunzip -c F | psql, again (noise floor)"
SERIAL = "preskool-dr restore, serial"
ENCRYPTED = "preskool-dr restore, serial, age-encrypted backup"
_LOAD = re.compile(r" in ([0-9.]+) s \((?P<how>[^)]*)\)")
PROGRESS_MARK = "\rload: "  # how the CLI redraws its progress line for step 6


def product_restore(lab: Lab, runbook: Path, backup: Path, state: str) -> Run:
    """`preskool-dr restore` end to end (steps 2-9; the app steps skip themselves)."""
    env = lab.env(TARGET, runbook=runbook, state=state)
    argv = [TOOL, "restore", str(backup), "--confirm", TARGET, "--target-db", TARGET]
    result = on_a_tty([*argv, "--mode", "drop", "--performed-by", "bench"], env)
    journal = lab.last_run(state)
    step = next(s for s in journal["steps"] if s["id"] == "restore")
    match = _LOAD.search(step["detail"])
    if step["status"] != "done" or match is None:
        raise RuntimeError(f"restore step did not finish: {step['detail']}")
    load = float(match[1])
    updates = result.tty.count(PROGRESS_MARK)
    return Run(
        load,
        result.run.cpu,
        {
            "step6_seconds": step_seconds(journal, "restore"),
            "command_seconds": result.run.seconds,
            "progress_updates": updates,
            "updates_per_second": updates / load if load else 0.0,
            "how": match["how"],
        },
    )


def run(lab: Lab, plain: Path, custom: Path, encrypted: Path, repeats: int) -> dict[str, Series]:
    """`plain` has no companion; `custom` (a backup of the same data) has one; `encrypted` is
    the same data age-encrypted (`.sql.gz.age`), restored with the identity."""
    # the load alone, as the baseline runs it: without the early load, which overlaps it
    # with step 4's checks (the whole-command rows, whole_bench.py, measure that)
    runbooks = {
        "serial": lab.runbook(
            "restore-serial", restore={"method": "serial", "jobs": 1, "early_load": False}
        ),
        "par1": lab.runbook(
            "restore-par1", restore={"method": "parallel", "jobs": 1, "early_load": False}
        ),
        "par2": lab.runbook(
            "restore-par2", restore={"method": "parallel", "jobs": 2, "early_load": False}
        ),
        "custom2": lab.runbook(
            "restore-custom2", restore={"method": "auto", "jobs": 2, "early_load": False}
        ),
        "age": lab.encrypting_runbook(
            "restore-age", restore={"method": "serial", "jobs": 1, "early_load": False}
        ),
    }
    dump = custom.with_name(custom.name.replace(".sql.gz", ".dump"))
    libpq = lab.env(TARGET)
    runbook_command = f"gunzip -c '{plain}' | psql -X -v ON_ERROR_STOP=1 -d {TARGET} > /dev/null"
    variants = {
        BASELINE: lambda: shell(runbook_command, libpq),
        NOISE: lambda: shell(runbook_command, libpq),
        SERIAL: lambda: product_restore(lab, runbooks["serial"], plain, "state-serial"),
        ENCRYPTED: lambda: product_restore(lab, runbooks["age"], encrypted, "state-age"),
        "preskool-dr restore, parallel N=1": lambda: product_restore(
            lab, runbooks["par1"], plain, "state-par1"
        ),
        "preskool-dr restore, parallel N=2": lambda: product_restore(
            lab, runbooks["par2"], plain, "state-par2"
        ),
        "preskool-dr restore, custom -j 2": lambda: product_restore(
            lab, runbooks["custom2"], custom, "state-custom2"
        ),
        "pg_restore -j 2 (reference)": lambda: shell(
            f"pg_restore -j 2 --exit-on-error -d {TARGET} '{dump}'", libpq
        ),
    }
    say(f"  restore: {len(variants)} variants x {repeats}, alternating")

    def before(name: str) -> None:
        lab.fresh_db(TARGET)
        lab.settle()

    before(BASELINE)
    variants[BASELINE]()  # untimed: the first load of a session warms caches for all alike
    series = alternate(variants, repeats, before=before)
    lab.drop_db(TARGET)
    return series


def summary(series: dict[str, Series]) -> dict[str, dict[str, Any]]:
    """Ratios against the runbook's command (min and median), and progress rates."""
    base = series[BASELINE]
    rows = {}
    for name, s in series.items():
        row: dict[str, Any] = {
            "min": s.best,
            "median": s.median,
            "ratio_min": s.best / base.best,
            "ratio_median": s.median / base.median,
            "ratio_paired": s.paired(base),
            "cpu_median": s.cpu_median,
        }
        if s.runs and "progress_updates" in s.runs[0].extra:
            row["updates_per_second_min"] = min(r.extra["updates_per_second"] for r in s.runs)
            row["step6_median"] = s.extra_median("step6_seconds")
            row["command_median"] = s.extra_median("command_seconds")
            row["how"] = s.runs[0].extra["how"]
        rows[name] = row
    return rows
