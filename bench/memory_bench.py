"""Memory: the tool's peak resident set while it restores a multi-GiB backup, next to the
same for a small one: streaming with bounded buffers keeps it flat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import TOOL, Lab, on_a_tty, say, step_seconds

TARGET = "bench_memory"


def restore_rss(lab: Lab, runbook: Path, backup: Path, state: str) -> dict[str, Any]:
    env = lab.env(TARGET, runbook=runbook, state=state)
    argv = [TOOL, "restore", str(backup), "--confirm", TARGET, "--target-db", TARGET]
    result = on_a_tty([*argv, "--mode", "drop", "--performed-by", "bench"], env, sample_rss=True)
    sampler = result.rss
    assert sampler is not None
    journal = lab.last_run(state)
    samples = [rss for _, rss in sampler.samples]
    quarter = max(1, len(samples) // 4)
    return {
        "seconds": result.run.seconds,
        "step6_seconds": step_seconds(journal, "restore"),
        "peak_rss": sampler.peak,
        # resident set at a quarter, half, three quarters and the end of the run
        "rss_timeline": [samples[min(len(samples) - 1, k * quarter)] for k in (1, 2, 3)]
        + [samples[-1]],
        "samples": len(samples),
    }


def run(lab: Lab, big: dict[str, Any], small: Path) -> dict[str, Any]:
    tables = big["tables"]
    checks = {"required_tables": tables, "smoke_queries": []}
    runbooks = {
        "serial": lab.runbook("mem-serial", restore={"method": "serial"}, restore_test=checks),
        "parallel": lab.runbook(
            "mem-parallel", restore={"method": "parallel", "jobs": 2}, restore_test=checks
        ),
        "small": lab.runbook("mem-small", restore={"method": "serial"}),
    }
    results: dict[str, Any] = {}
    say("  memory: small backup, serial")
    results["small, serial"] = restore_rss(lab, runbooks["small"], small, "state-mem")
    for method in ("serial", "parallel"):
        say(f"  memory: {big['sql_bytes'] / 2**30:.1f} GiB backup, {method}")
        results[f"big, {method}"] = restore_rss(
            lab, runbooks[method], Path(big["path"]), "state-mem"
        )
    lab.drop_db(TARGET)
    return results
