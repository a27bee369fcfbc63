"""`sandbox.json`: the demo writes it as it starts each part (the cluster, the S3 endpoint,
the stand-in app) and `demo --stop DIR` reads it to stop a sandbox left running by
`demo --keep` or a killed demo. It names processes and folders, never the password.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from preskool_dr.core.base import files
from preskool_dr.core.base.errors import DrError, NotFoundError
from preskool_dr.demo.cluster import Cluster

MANIFEST = "sandbox.json"


def write_manifest(
    folder: Path, cluster: Cluster | None, *, s3_pid: int | None, app_pid: int | None
) -> None:
    """What `stop_sandbox` needs to find the processes later; no secrets in it."""
    data = {
        "version": 1,
        "dir": str(folder),
        "cluster": None
        if cluster is None
        else {
            "root": str(cluster.root),
            "data_dir": str(cluster.data_dir),
            "socket_dir": str(cluster.socket_dir),
            "port": cluster.port,
            "run_as": cluster.run_as,
        },
        "pids": {"s3": s3_pid, "app": app_pid},
    }
    files.atomic_write(folder / MANIFEST, (json.dumps(data, indent=2) + "\n").encode())


def describe_cluster(cluster: Cluster) -> str:
    return f"the private PostgreSQL on {cluster.host}:{cluster.port} (data in {cluster.data_dir})"


def describe_folder(folder: Path) -> str:
    return f"the sandbox folder {folder} (runbook, backups, state, drill key)"


def remove_cluster(cluster: Cluster, removed: list[str]) -> list[str]:
    """Stop and delete `cluster`; returns problems, and notes what went in `removed`."""
    try:
        cluster.remove()
    except (DrError, OSError) as exc:
        return [f"PostgreSQL in {cluster.data_dir} may still run: {exc}"]
    if cluster.is_running():
        return [f"PostgreSQL in {cluster.data_dir} is still running"]
    removed.append(
        f"stopped the private PostgreSQL ({cluster.host}:{cluster.port}) and removed "
        f"{cluster.root} (its data directory)"
    )
    return []


def remove_folder(folder: Path, removed: list[str]) -> list[str]:
    if not folder.exists():
        return []
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        return [f"could not remove all of {folder}: remove it by hand (rm -rf {folder})"]
    removed.append(f"removed the temporary folder {folder} (runbook, backups, state, drill key)")
    return []


# ---------------------------------------------------------------- `demo --stop DIR`


def stop_sandbox(folder: Path, removed: list[str] | None = None) -> list[str]:
    """Stop a sandbox left running by `demo --keep` (or a killed demo), from its manifest;
    returns problems. `removed` gets a line for each thing stopped or removed."""
    removed = [] if removed is None else removed
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise NotFoundError(
            f"{folder} is not a demo sandbox (no {MANIFEST}): give the folder "
            "`preskool-dr demo --keep` printed"
        ) from None
    except (OSError, ValueError) as exc:
        raise DrError(f"cannot read {folder / MANIFEST}: {exc}") from None
    problems: list[str] = []
    markers = {"app": "preskool_dr.demo.standin_app", "s3": "moto.server"}
    what = {"app": "the stand-in app (pid {})", "s3": "the S3 endpoint (moto, pid {})"}
    for name, pid in (data.get("pids") or {}).items():
        if isinstance(pid, int) and name in markers:
            trouble = _stop_process_group(pid, markers[name])
            problems += trouble
            if not trouble:
                removed.append("stopped " + what[name].format(pid))
    info = data.get("cluster")
    if info:
        cluster = Cluster(
            root=Path(info["root"]),
            data_dir=Path(info["data_dir"]),
            socket_dir=Path(info["socket_dir"]),
            port=int(info["port"]),
            password="",
            run_as=info.get("run_as"),
        )
        problems += remove_cluster(cluster, removed)
    problems += remove_folder(folder, removed)
    return problems


def _stop_process_group(pid: int, marker: str, grace: float = 5.0) -> list[str]:
    """SIGTERM, then SIGKILL, the session `pid` leads, if it still runs the program we
    started (a pid can be reused after a reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return []  # already gone
    if marker not in cmdline:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [f"not allowed to stop process {pid} ({marker}): stop it as its owner"]
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return []
            time.sleep(0.1)
    return [f"process {pid} ({marker}) did not stop"]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
