"""Run journals: one JSON file per run, rewritten atomically after every step transition,
so a killed process, a dropped SSH session or a crash resumes where it was.

One journal type (`RunJournal`) keeps both kinds of run, each in its folder of the state
dir (`JOURNAL_FOLDERS`):
- `<state dir>/runs/<run_id>.json`: the nine-step restores and drills (`RunState`, below);
- `<state dir>/pitr/<run_id>.json`: point-in-time recoveries (`PitrState`, core/pitr).
Each file is mode 0600 in a folder of this user's alone, written atomically and never
through a symlink. It holds hostnames, operators and what was destroyed, never a secret.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import re
import secrets
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from preskool_dr.core.base.errors import DrError, NotFoundError
from preskool_dr.core.base.events import StepStatus, utcnow
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.paths import open_private_file, secure_state_subdir
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.storage.checksum import FileIdentity

JOURNAL_VERSION = 1
RESTORE_FOLDER = "runs"  # restores and drills
PITR_FOLDER = "pitr"  # point-in-time recoveries
JOURNAL_FOLDERS = (RESTORE_FOLDER, PITR_FOLDER)
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")  # fullmatch: `$` would allow a trailing newline


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
    # why only the MD5 was read (gzip and content unchecked): step 6 loads the companion
    skipped: str | None = None


@dataclass
class LoadRecord:
    """How step 6 loaded the backup, and why that way (the operator reads why a restore
    was not as fast as expected here, also after the run)."""

    loader: str  # "pg_restore" | "parallel" | "serial"
    how: str  # e.g. "pg_restore -j 4 of X.dump", "4 parallel sessions", "serial"
    reason: str  # why this loader, and why not a faster one
    early: bool = False  # started before step 4 passed (core/restore/steps/early_load.py)


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
    load: LoadRecord | None = None  # step 6's loader and why (None until it chose one)
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


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_json(value: Any) -> Any:
    """A journal record (a dataclass) as JSON values: times in UTC with a `Z`, enums as
    their values."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


R = TypeVar("R")


def from_json(cls: type[R], data: Any) -> R:
    """The record of dataclass `cls` that `to_json` wrote, each field read back as its type
    hint says (times, enums, nested records). A key this version does not know (written by
    a newer one) is ignored, so it does not fail a resume. TypeError, ValueError or
    AttributeError when `data` is no such record."""
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} is a JSON object, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)  # its fields' types
    return cls(**{key: _read(hints[key], value) for key, value in data.items() if key in hints})


def _read(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `X | None`
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return [_read(item, v) for v in value]
    if hint is datetime:
        return parse_time(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    return value


# ---------------------------------------------------------------- the journal files


class Record(Protocol):
    run_id: str


S = TypeVar("S", bound=Record)


class RunJournal(abc.ABC, Generic[S]):
    """The journal files of one kind of run, `<state dir>/<folder>/<run_id>.json`.

    A kind names its folder and its words, and says which records it accepts (`decode`);
    where the files live, how they are written and what is refused is the same for all."""

    folder: ClassVar[str]
    what: ClassVar[str]  # how a message names one file: "run journal"
    # messages, formatted with run_id, folder, path and error
    not_a_run_id: ClassVar[str]
    missing: ClassVar[str]
    unreadable: ClassVar[str]

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / self.folder

    @abc.abstractmethod
    def decode(self, data: Any) -> S:
        """The record in `data` (`from_json`); TypeError, ValueError, KeyError or
        AttributeError when it is not one this version can resume (a damaged, hand-edited
        or foreign file): resuming it would fail half way."""

    def path(self, run_id: str) -> Path:
        if not RUN_ID.fullmatch(run_id):
            raise NotFoundError(self.not_a_run_id.format(run_id=run_id, folder=self.dir))
        return self.dir / f"{run_id}.json"

    def save(self, state: S) -> Path:
        """Write atomically (base/files.py atomic_write: temp file 0600 made with O_EXCL, fsync,
        rename, fsync of the folder). The folder must be this user's alone
        (secure_state_subdir), and a symlink at the journal's name is refused."""
        secure_state_subdir(self.dir)
        target = self.path(state.run_id)
        self._refuse_symlink(target)
        payload = json.dumps(to_json(state), indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(target, payload, mode=0o600)
        return target

    def load(self, run_id: str) -> S:
        path = self.path(run_id)
        secure_state_subdir(self.dir)
        try:
            return self.read(path)
        except FileNotFoundError:
            raise NotFoundError(self.missing.format(run_id=run_id, folder=self.dir)) from None
        except (OSError, ValueError) as exc:
            raise NotFoundError(self.unreadable.format(path=path, error=exc)) from None

    def read(self, path: Path) -> S:
        """The record in `path`, a regular file of this user (paths.open_private_file says
        what else it refuses), read without following a symlink. ValueError when it is not
        a record of this kind."""
        self._refuse_symlink(path)
        fd = open_private_file(path, os.O_RDONLY, self.what)
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
        try:
            return self.decode(data)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from None

    def runs(self) -> list[S]:
        """Every readable run, newest first."""
        if not self.dir.is_dir():
            return []
        secure_state_subdir(self.dir)
        states = []
        for path in sorted(self.dir.glob("*.json"), reverse=True):
            try:
                states.append(self.read(path))
            except (OSError, ValueError, DrError):
                continue  # a foreign or damaged file is not a run; `load` reports it by id
        return states

    def _refuse_symlink(self, path: Path) -> None:
        if path.is_symlink():
            raise DrError(
                f"the {self.what} {path} is a symbolic link: someone planted it to redirect "
                f"preskool-dr's writes or feed it another run; nothing was changed - remove it "
                f"(rm {path}), check who can write to {path.parent}, and retry"
            )


class Journal(RunJournal[RunState]):
    """The restore and drill runs' journals, `<state dir>/runs/`."""

    folder = RESTORE_FOLDER
    what = "run journal"
    not_a_run_id = "{run_id!r} is not a run id (see `preskool-dr restore --list-runs`)"
    missing = "no run {run_id!r} in {folder}: list runs with `preskool-dr restore --list-runs`"
    unreadable = "run journal {path} is unreadable ({error}): it cannot be resumed; start a new run"

    def decode(self, data: Any) -> RunState:
        state = from_json(RunState, data)
        if tuple(s.id for s in state.steps) != tuple(StepId):
            raise ValueError("its steps are not the nine this version runs")
        return state

    def unfinished(self) -> list[RunState]:
        """Runs to offer for resuming; none from a state folder that is not safe to read
        (the front end's next step, starting a run, says why it is refused)."""
        try:
            runs = self.runs()
        except DrError:
            return []
        return [s for s in runs if not s.finished and s.result != "abandoned"]
