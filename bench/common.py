"""Shared machinery of the benchmarks: a private cluster, the product's environment,
timed child processes (wall and CPU time), alternating repeated runs, RSS sampling."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from preskool_dr.core.base.age import generate_identity  # noqa: E402
from preskool_dr.demo.cluster import Cluster, create_cluster  # noqa: E402

BIN = Path(sys.executable).parent
TOOL = str(BIN / "preskool-dr")
APP_ROLE = "preskool"
PASSWORD = "bench-pw-7c1d"  # a throwaway cluster's password, like the demo's


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- measurements


CORES = os.cpu_count() or 1


@dataclass
class Run:
    """One timed run: wall seconds, CPU seconds of the child processes, and extras.
    `host_cpu`: core-seconds the whole machine was busy over the same seconds (every
    process, the PostgreSQL server too; None when `seconds` is not the interval measured):
    near CORES x seconds, the run was bound by the CPU, and only less work makes it faster."""

    seconds: float
    cpu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    host_cpu: float | None = None

    @property
    def host_share(self) -> float | None:
        """The machine's cores busy over the run, 0 to 1."""
        if self.host_cpu is None or self.seconds <= 0:
            return None
        return self.host_cpu / (CORES * self.seconds)


@dataclass
class Series:
    """Repeated runs of one variant."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def cpu_median(self) -> float:
        return statistics.median(r.cpu for r in self.runs)

    @property
    def host_share_median(self) -> float | None:
        shares = [r.host_share for r in self.runs]
        return statistics.median(s for s in shares if s is not None) if None not in shares else None

    def ratios(self, baseline: Series) -> list[float]:
        """Round by round: this run / the baseline's run of the same round."""
        return [r.seconds / b.seconds for r, b in zip(self.runs, baseline.runs, strict=True)]

    def paired(self, baseline: Series) -> float:
        """Median over rounds of this run / the baseline's run of the same round: the runs
        of one round are seconds apart, so a neighbour's load drifting over minutes cancels."""
        return statistics.median(self.ratios(baseline))

    def extra_median(self, key: str) -> float:
        return statistics.median(float(r.extra[key]) for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "min": self.best,
            "median": self.median,
            "cpu_median": self.cpu_median,
            "runs": [
                {"seconds": r.seconds, "cpu": r.cpu, "host_cpu": r.host_cpu, **r.extra}
                for r in self.runs
            ],
        }


def alternate(
    variants: dict[str, Callable[[], Run]],
    repeats: int,
    before: Callable[[str], None] | None = None,
) -> dict[str, Series]:
    """Run every variant `repeats` times, interleaved and in a rotating order, so a noisy
    neighbour on this shared machine hits all variants alike."""
    series = {name: Series(name) for name in variants}
    names = list(variants)
    for round_no in range(repeats):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            if before is not None:
                before(name)
            run = variants[name]()
            series[name].runs.append(run)
            say(f"    {name:<44} {run.seconds:8.2f} s  (cpu {run.cpu:6.2f} s)")
    return series


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _host_busy() -> float:
    """Core-seconds this machine's CPUs have been busy since boot: /proc/stat's total less
    idle and iowait (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Clock:
    """Started just before a measured command; `stop` gives its Run."""

    t0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=_children_cpu)
    host0: float = field(default_factory=_host_busy)

    def stop(self) -> Run:
        seconds = time.perf_counter() - self.t0
        return Run(seconds, _children_cpu() - self.cpu0, host_cpu=_host_busy() - self.host0)


def timed(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    check: bool = True,
    stdout: int | None = subprocess.DEVNULL,
) -> tuple[Run, subprocess.CompletedProcess[bytes]]:
    """Run argv to completion; wall time and the CPU time of it and its waited children."""
    clock = _Clock()
    result = subprocess.run(
        list(argv), env=env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, check=False
    )
    run = clock.stop()
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)[:200]} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace')[-2000:]}"
        )
    return run, result


def shell(command: str, env: dict[str, str], *, cwd: Path | None = None) -> Run:
    """A runbook command line, as the operator would type it (bash -c, pipes and all)."""
    run, _ = timed(["bash", "-o", "pipefail", "-c", command], env, cwd=cwd)
    return run


@dataclass
class TtyRun:
    run: Run
    stdout: str
    tty: str  # what the tool drew on its terminal (stderr): progress lines
    rss: RssSampler | None = None


def on_a_tty(argv: Sequence[str], env: dict[str, str], *, sample_rss: bool = False) -> TtyRun:
    """Run with stderr on a pseudo-terminal, as in an operator's ssh session: the CLI then
    draws its progress line, and every redraw can be counted. `sample_rss` watches the
    tool's own resident memory while it runs."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    clock = _Clock()
    try:
        proc = subprocess.Popen(
            list(argv), env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
        )
    finally:
        os.close(slave)
    sampler = RssSampler(proc.pid) if sample_rss else None
    out_bytes, _ = proc.communicate()
    if sampler is not None:
        sampler.stop()
    run = clock.stop()
    reader.join(timeout=10)
    os.close(master)
    out = out_bytes.decode(errors="replace")
    tty = b"".join(chunks).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)[:200]} failed ({proc.returncode}):\n{out[-3000:]}{tty[-2000:]}"
        )
    return TtyRun(run, out, tty, sampler)


class RssSampler:
    """Samples a process's resident set (VmRSS) every `interval` seconds; `peak` is VmHWM."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = time.perf_counter()
        self._thread.start()

    def _read(self) -> tuple[int, int] | None:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        values = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
        if "VmRSS" not in values:  # exited (a zombie has no memory left)
            return None
        return values["VmRSS"], values.get("VmHWM", 0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            got = self._read()
            if got is None:
                return
            rss, hwm = got
            self.samples.append((time.perf_counter() - self._started, rss))
            self.peak = max(self.peak, hwm, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- the lab


@dataclass
class Lab:
    """A private cluster, an app role, BACKUP_DIR and state dir; removed by `close()`."""

    cluster: Cluster
    root: Path

    @classmethod
    @contextlib.contextmanager
    def open(cls) -> Iterator[Lab]:
        root = Path(tempfile.mkdtemp(prefix="preskool-bench-"))
        os.chmod(root, 0o755)  # the cluster's server user reaches its dirs through here
        cluster = create_cluster(root, password=PASSWORD)
        lab = cls(cluster, root)
        try:
            with lab.admin() as conn:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(APP_ROLE), sql.Literal(PASSWORD)
                    )
                )
            (root / "backups").mkdir()
            yield lab
        finally:
            cluster.remove()
            shutil.rmtree(root, ignore_errors=True)

    @property
    def backup_dir(self) -> Path:
        return self.root / "backups"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.cluster.conninfo(dbname), password=PASSWORD, autocommit=True)

    def fresh_db(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(APP_ROLE)
                )
            )

    def settle(self) -> None:
        """Write out every dirty buffer now (CHECKPOINT), then the kernel's dirty pages
        (sync), so that the next timed run neither inherits the last run's writes nor has a
        checkpoint or a writeback burst fall at a different point of its work. With the test
        cluster's fsync=off nothing else flushes them: ~1 GB stayed dirty after a load."""
        with self.admin() as conn:
            conn.execute("CHECKPOINT")
        os.sync()

    def drop_db(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def db_size(self, name: str) -> int:
        with self.admin() as conn:
            row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
        return int(row[0]) if row else 0

    def server_version(self) -> str:
        with self.admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def env(
        self, dbname: str, *, runbook: Path | None = None, state: str = "state"
    ) -> dict[str, str]:
        """The product's environment (and libpq's, for the runbook's own commands)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PG", "DB_", "AWS_", "S3_", "PRESKOOL_DR_", "BACKUP_"))
        }
        env.update(
            {
                "DB_HOST": self.cluster.host,
                "DB_PORT": str(self.cluster.port),
                "DB_NAME": dbname,
                "DB_USER": APP_ROLE,
                "PGPASSWORD": PASSWORD,
                "BACKUP_DIR": str(self.backup_dir),
                "PRESKOOL_DR_STATE_DIR": str(self.root / state),
                "PGHOST": self.cluster.host,
                "PGPORT": str(self.cluster.port),
                "PGUSER": APP_ROLE,
                "PGDATABASE": dbname,
            }
        )
        # the repo's runbook unless told otherwise: the current directory is never searched
        env["PRESKOOL_DR_RUNBOOK"] = str(runbook or REPO / "runbook.yaml")
        return env

    def runbook(self, name: str, **sections: Any) -> Path:
        """The repo's runbook without app commands (steps 1, 7-9 skip themselves), with
        top-level sections merged in."""
        data = yaml.safe_load((REPO / "runbook.yaml").read_text())
        data["app"] = {"stop": [], "start": [], "migrate": [], "health_url": None}
        for key, value in sections.items():
            if isinstance(data.get(key), dict) and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def age_key(self) -> tuple[Path, str]:
        """The bench's age identity file and its recipient (made once per lab)."""
        path = self.root / "bench-age.key"
        if not path.exists():
            return path, generate_identity(path)
        first = path.read_text().splitlines()[0]
        return path, first.removeprefix("# public key: ")

    def encrypting_runbook(self, name: str, **sections: Any) -> Path:
        """`runbook(name, ...)` with encryption to the bench's key, and that key as the
        identity (so restore decrypts)."""
        identity, recipient = self.age_key()
        return self.runbook(
            name, encryption={"recipients": [recipient], "identity": str(identity)}, **sections
        )

    def last_run(self, state: str = "state") -> dict[str, Any]:
        """The newest run journal: step timings and details."""
        runs = sorted((self.root / state / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
        return json.loads(runs[-1].read_text())


def timed_restore(argv: Sequence[str], env: dict[str, str], lab: Lab, state: str) -> Run:
    """A whole `preskool-dr restore` on a terminal, with where its wall time went, from its
    journal (`TIME_SPLIT`): before its first step (start-up and the backup's lookup), its
    steps before step 6 (with the load that began early running beside them), step 6 (the
    load, or what remained of one started early), and what follows step 6 (steps 7-9,
    the journal, the exit)."""
    launched = datetime.now(UTC)
    run = on_a_tty(argv, env).run
    steps = [s for s in lab.last_run(state)["steps"] if s.get("started_at")]
    first = min(datetime.fromisoformat(s["started_at"]) for s in steps)
    load = next(s for s in steps if s["id"] == "restore")
    load_start = datetime.fromisoformat(load["started_at"])
    load_end = datetime.fromisoformat(load["finished_at"])
    points = [launched, first, load_start, load_end, launched + timedelta(seconds=run.seconds)]
    for key, start, end in zip(TIME_SPLIT, points, points[1:], strict=False):
        run.extra[key] = (end - start).total_seconds()
    return run


# the parts of a restore's wall time `timed_restore` measures, in order, and their labels
TIME_SPLIT = {
    "split_startup": "before step 2",
    "split_checks": "steps 2-5",
    "split_load": "step 6",
    "split_after": "after step 6",
}


def step_seconds(journal: dict[str, Any], step_id: str) -> float:
    step = next(s for s in journal["steps"] if s["id"] == step_id)
    start = datetime.fromisoformat(step["started_at"])
    end = datetime.fromisoformat(step["finished_at"])
    return (end - start).total_seconds()
