"""The run journal: one JSON file per restore run, rewritten atomically after every step
transition, so a killed process, a dropped SSH session or a crash resumes where it was.

`<state dir>/runs/<run_id>.json`, mode 0600. It holds hostnames, operators and what was
destroyed, never a secret.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import DrError, NotFoundError
from preskool_dr.core.base.events import StepStatus, utcnow
from preskool_dr.core.base.paths import open_private_file, secure_state_subdir
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.storage.checksum import FileIdentity

JOURNAL_VERSION = 1


def new_run_id(now: datetime | None = None) -> str:
    """`20260220-041233-a1b2`: sortable, readable over the phone, unique enough."""
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass
class StepRecord:
    id: StepId
    number: int
    title: str
    status: StepStatus = StepStatus.PENDING
    detail: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    skip_reason: str | None = None
    output: list[str] = field(default_factory=list)  # tail of child output, redacted

    @property
    def elapsed_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def settled(self) -> bool:
        """Done or skipped: the checklist may move past it."""
        return self.status in (StepStatus.DONE, StepStatus.SKIPPED)


@dataclass
class BackupChoice:
    spec: str  # what the operator asked for: a path, a name, s3://..., latest
    name: str
    time: datetime
    local_path: str | None = None
    s3_url: str | None = None
    size: int | None = None
    md5: str | None = None  # the verified digest, once step 4 passed
    downloaded: bool = False  # step 3 fetched local_path from S3: removed if step 4 fails it
    # The backup's identity: its full location when step 2 chose it (absolute local path, or
    # s3://bucket/key when it was only in S3), never its base name. None in older journals.
    location: str | None = None
    identity: FileIdentity | None = None  # the file step 4 hashed (the verify gate)
    # the custom-format companion step 4 accepted (MD5 as recorded in the backup's meta)
    companion_md5: str | None = None
    companion_identity: FileIdentity | None = None


@dataclass
class VerifyRecord:
    """Step 4's findings, kept for the checksum panel (also after a resume)."""

    expected_md5: str | None  # None: no usable sidecar (see sidecar_error)
    actual_md5: str
    md5_ok: bool
    gzip_ok: bool
    gzip_error: str | None = None
    sidecar_error: str | None = None
    # the text is not whole pg_dump output; None: it is, or the gzip was too damaged to tell
    dump_error: str | None = None


@dataclass
class RunState:
    run_id: str
    mode: str  # "restore" | "drill"
    operator: str
    tool_host: str  # the machine preskool-dr runs on
    db_host: str
    db_port: int
    target_db: str
    recreate_mode: str  # "aside" | "drop"
    incident_declared_at: datetime
    created_at: datetime
    steps: list[StepRecord]
    backup: BackupChoice | None = None
    aside_db: str | None = None  # the old database, renamed aside in step 5
    aside_state: str | None = None  # planned | renamed | dropped | rolled-back
    destroyed: dict[str, Any] | None = None  # what step 5 replaced: size, row estimates
    confirmed_at: datetime | None = None
    result: str = "running"  # running | done | failed | interrupted | rolled-back
    finished_at: datetime | None = None
    pid: int | None = None
    app_accessible_at: datetime | None = None
    verify: VerifyRecord | None = None
    validation: list[dict[str, Any]] = field(default_factory=list)
    drill_log_entry: str | None = None  # sha256 of the drill-log line written for this run
    drill_log_line: int | None = None  # its line number, and the log it went to: so a log
    drill_log_path: str | None = None  # cut after it is caught (drill-log verify, check)
    notes: list[str] = field(default_factory=list)
    version: int = JOURNAL_VERSION

    def step(self, step_id: str) -> StepRecord:
        for record in self.steps:
            if record.id == step_id:
                return record
        raise KeyError(step_id)

    @property
    def target_label(self) -> str:
        return f"{self.target_db}@{self.db_host}:{self.db_port}"

    @property
    def finished(self) -> bool:
        return self.result in ("done", "rolled-back")

    @property
    def rto_seconds(self) -> float:
        """Incident declared -> app accessible (or now, while the run is open)."""
        end = self.app_accessible_at or self.finished_at or utcnow()
        return max(0.0, (end - self.incident_declared_at).total_seconds())

    @property
    def rpo_seconds(self) -> float | None:
        """Data lost at most: incident time minus the chosen backup's time."""
        if self.backup is None:
            return None
        return max(0.0, (self.incident_declared_at - self.backup.time).total_seconds())


# ---------------------------------------------------------------- (de)serialisation


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, StepStatus):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    return value


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_TIME_FIELDS = {
    "incident_declared_at",
    "created_at",
    "confirmed_at",
    "finished_at",
    "app_accessible_at",
    "started_at",
    "time",
}


def _from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            continue  # written by a newer version: ignore, do not fail a resume
        if key in _TIME_FIELDS:
            value = parse_time(value)
        elif key == "status":
            value = StepStatus(value)
        elif key == "id":
            value = StepId(value)
        elif key == "steps":
            value = [_from_dict(StepRecord, s) for s in value]
        elif key == "backup" and value is not None:
            value = _from_dict(BackupChoice, value)
        elif key == "verify" and value is not None:
            value = _from_dict(VerifyRecord, value)
        elif key in ("identity", "companion_identity") and value is not None:
            value = _from_dict(FileIdentity, value)
        kwargs[key] = value
    return cls(**kwargs)


def state_to_json(state: RunState) -> dict[str, Any]:
    data: dict[str, Any] = _to_jsonable(state)
    return data


def state_from_json(data: dict[str, Any]) -> RunState:
    state: RunState = _from_dict(RunState, data)
    return state


def _resumable_state(data: Any) -> RunState:
    """ValueError when `data` is not a run of the nine steps this version runs (a damaged,
    hand-edited or foreign file): resuming it would fail half way."""
    try:
        state = state_from_json(data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if tuple(s.id for s in state.steps) != tuple(StepId):
        raise ValueError("its steps are not the nine this version runs")
    return state


# ---------------------------------------------------------------- storage


class Journal:
    """Run files under `<state dir>/runs/`."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "runs"

    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise NotFoundError(
                f"{run_id!r} is not a run id (see `preskool-dr restore --list-runs`)"
            )
        return self.dir / f"{run_id}.json"

    def save(self, state: RunState) -> Path:
        """Write atomically: temp file (0600) in the same folder, fsync, rename, fsync folder.

        The folder must be this user's alone (secure_state_subdir); the temp file is made
        with O_CREAT|O_EXCL|O_NOFOLLOW (mkstemp), so nothing planted is opened, and the
        rename replaces whatever sits at the journal's name without following it."""
        secure_state_subdir(self.dir)
        target = self.path(state.run_id)
        _refuse_symlink(target)
        payload = json.dumps(state_to_json(state), indent=2, sort_keys=True).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{state.run_id}.", suffix=".tmp", dir=self.dir)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target

    def load(self, run_id: str) -> RunState:
        path = self.path(run_id)
        secure_state_subdir(self.dir)
        _refuse_symlink(path)
        try:
            return _resumable_state(json.loads(_read_private(path)))
        except FileNotFoundError:
            raise NotFoundError(
                f"no run {run_id!r} in {self.dir}: list runs with `preskool-dr restore --list-runs`"
            ) from None
        except (OSError, ValueError) as exc:
            raise NotFoundError(
                f"run journal {path} is unreadable ({exc}): it cannot be resumed; start a new run"
            ) from None

    def runs(self) -> list[RunState]:
        """Every readable run, newest first."""
        if not self.dir.is_dir():
            return []
        secure_state_subdir(self.dir)
        states = []
        for path in sorted(self.dir.glob("*.json"), reverse=True):
            try:
                states.append(_resumable_state(json.loads(_read_private(path))))
            except (OSError, ValueError, DrError):
                continue  # a foreign or damaged file is not a run; `load` reports it by id
        return states

    def unfinished(self) -> list[RunState]:
        """Runs to offer for resuming; none from a state folder that is not safe to read
        (the front end's next step, starting a run, says why it is refused)."""
        try:
            runs = self.runs()
        except DrError:
            return []
        return [s for s in runs if not s.finished and s.result != "abandoned"]


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise DrError(
            f"the run journal {path} is a symbolic link: someone planted it to redirect "
            f"preskool-dr's writes or feed it another run; nothing was changed - remove it "
            f"(rm {path}), check who can write to {path.parent}, and retry"
        )


def _read_private(path: Path) -> str:
    """The journal's text, read without following a symlink, from a regular file of this
    user (paths.open_private_file says what else it refuses)."""
    fd = open_private_file(path, os.O_RDONLY, "run journal")
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode("utf-8")
