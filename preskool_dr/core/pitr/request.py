"""What a pitr run is asked to do, and the checks made before anything is written: the
target time, the confirmation, an empty data directory, a free port; and, for a resumed
run, whether it may go on at all."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from preskool_dr.core.base.errors import UsageError
from preskool_dr.core.pitr.journal import PitrState
from preskool_dr.core.pitr.server import stop_command
from preskool_dr.core.storage.meta import iso_utc


def parse_target(text: str) -> datetime:
    """ISO-8601; a time without an offset is UTC, like every time this tool prints."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO-8601 time (e.g. 2026-02-20T03:55:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(at: datetime | None) -> str:
    """A time as pitr prints it (UTC, ISO-8601), "-" for none."""
    return iso_utc(at) if at is not None else "-"


@dataclass(frozen=True)
class PitrRequest:
    target: datetime
    data_dir: Path
    port: int
    confirm: str
    incident: datetime | None = None  # for the RPO; default: the target
    server_python: str = sys.executable  # what the recovered server runs wal-fetch with
    operator: str = ""
    drill: bool = False  # a rehearsal: validate the recovered database for the drill log


def check_request(request: PitrRequest) -> Path:
    """Usage checks that need no backup: confirmation, an empty directory, a free port.
    Returns the absolute data directory."""
    data_dir = Path(os.path.abspath(request.data_dir.expanduser()))
    typed = Path(os.path.abspath(Path(request.confirm).expanduser())) if request.confirm else None
    if typed != data_dir:
        raise UsageError(
            f"--confirm {request.confirm or '(missing)'} does not repeat --data-dir "
            f"{data_dir}: nothing was done",
            field="confirm",
        )
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise UsageError(
            f"{data_dir} is not an empty directory: pitr only writes into a new or empty one "
            "(it never touches a live data directory); choose another --data-dir",
            field="data_dir",
        )
    if not 1 <= request.port <= 65535:
        raise UsageError(f"--port {request.port} is not a TCP port (1-65535)", field="port")
    if _port_in_use(request.port):
        raise UsageError(
            f"port {request.port} is in use on this host: choose a free --port", field="port"
        )
    if request.target.tzinfo is None:
        raise UsageError("the target time needs a timezone", field="target")
    return data_dir


def _port_in_use(port: int) -> bool:
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as sock:
                sock.settimeout(2)
                if sock.connect_ex((address, port)) == 0:
                    return True
        except OSError:
            continue  # no IPv6 on this host
    return False


def resume_request(state: PitrState, confirm: str) -> PitrRequest:
    """The request of the run `state` journals, to go on with it; UsageError saying what to
    do instead when it is done, failed, or still running elsewhere."""
    run_id = state.run_id
    data_dir = Path(state.data_dir)
    typed = Path(os.path.abspath(Path(confirm).expanduser())) if confirm else None
    if typed != data_dir:
        raise UsageError(
            f"--confirm {confirm or '(missing)'} does not repeat run {run_id}'s data "
            f"directory {data_dir}: nothing was done"
        )
    if state.result == "done":
        raise UsageError(
            f"run {run_id} is done (recovered to {iso(state.recovery_end)}): nothing to "
            f"resume; its server: `{stop_command(data_dir)}` stops it"
        )
    if state.result == "failed":
        raise UsageError(
            f"run {run_id} failed at step {state.failed_step() or '?'} and is not resumed "
            f"(a failure repeats): read {state.server_log}, stop its server if one runs "
            f"(`{stop_command(data_dir)}`), remove {data_dir}, then start a new pitr"
        )
    if state.result == "running" and state.pid and _is_preskool_process(state.pid):
        raise UsageError(
            f"run {run_id} is still running (preskool-dr pid {state.pid}): wait for it, "
            f"or stop it (kill {state.pid}) and resume then"
        )
    return PitrRequest(
        target=state.target,
        data_dir=data_dir,
        port=state.port,
        confirm=str(data_dir),
        incident=state.incident,
        server_python=state.server_python or sys.executable,
        operator=state.operator,
        drill=state.drill,
    )


def _is_preskool_process(pid: int) -> bool:
    """Alive and a preskool-dr process (a recycled pid is not the old run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    try:
        return b"preskool" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: assume the worst, the message says how to check
