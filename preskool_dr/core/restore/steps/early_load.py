"""Step 6's load, started while step 4 verifies: headless runs (`Engine.run_all`) only.

The load goes where step 6's always goes, `<target>_loading_<run id>`: a database made
for this run, closed to every role but the app role that loads it, that nothing else uses
or backs up. Step 4's checks (a full read, inflate and scan of the backup, the companion's
MD5 and table of contents) and step 5 then run beside the load instead of before it, and
production is untouched until step 5, as before. The load only becomes the target in
step 6, and only when
- step 4 passed, and the files the load opened are the ones step 4 verified (device,
  inode, size, mtime, ctime: the verify gate's identity, core/restore/pinned.py), also
  after the load (nothing wrote to them meanwhile);
- a companion it loaded is the one step 4 accepted;
- the restore-test's checks pass on it (step 6, as for any load).
Otherwise it is stopped and dropped, and step 6 loads the verified file as it always does.

What it gives up: the backup's SQL starts running (as the app role, in that closed
database, psql meta-commands refused as in every load) before step 4's MD5 verdict.
`restore.early_load: false` waits for step 4 instead. Encrypted backups are not loaded
early (step 4 is where their identity is first needed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from preskool_dr.core.base import age, database
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import Event, Notice, Progress, StepStatus
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore import pinned
from preskool_dr.core.restore.journal import BackupChoice, LoadRecord
from preskool_dr.core.restore.loaders.stream import StreamResult
from preskool_dr.core.restore.steps import loader
from preskool_dr.core.restore.steps.context import StepRun
from preskool_dr.core.restore.steps.db_names import loading_name
from preskool_dr.core.restore.steps.recreate_db import server_space
from preskool_dr.core.storage.checksum import FileIdentity
from preskool_dr.core.storage.layout import companion_path

EARLY = "started while step 4 verified"
HELD_LINES = 200


@dataclass
class _Opened:
    """A file the early load reads, held open (the loaders open it through `link`)."""

    path: Path
    fd: int
    link: Path  # `path` itself where there is no /proc
    identity: FileIdentity

    def unchanged(self) -> bool:
        return FileIdentity.of(os.fstat(self.fd)) == self.identity


@dataclass
class EarlyLoad:
    """One load running on its own thread; step 6 takes it (`unusable_reason`, `wait`,
    `close`) or it is stopped (`stop`: the load ends and its database is dropped). Step 6
    sees it through context.EarlyLoad."""

    run: StepRun
    loading: str
    backup: _Opened
    companion: _Opened | None
    folder: Path
    closed_acl: list[str] | None = None
    choice: LoadRecord | None = None
    result: StreamResult | None = None
    error: BaseException | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    # held back until step 6 waits: its notices, and the last of its children's lines
    _notices: list[Event] = field(default_factory=list)
    _lines: deque[Event] = field(default_factory=lambda: deque(maxlen=HELD_LINES))
    _released: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ step 6's side

    def unusable_reason(self, choice: BackupChoice) -> str | None:
        """Why step 6 may not take this load (None: it may): the files it read must be
        the ones step 4 verified, with the companion step 4 accepted, if it loaded one."""
        if choice.identity != self.backup.identity:
            return f"{choice.name} is not the file step 4 verified"
        if self.companion is not None and (
            choice.companion_md5 is None or choice.companion_identity != self.companion.identity
        ):
            return "it loaded the custom-format companion, which step 4 did not accept"
        return None

    def wait(self, cancel: threading.Event) -> tuple[StreamResult, LoadRecord]:
        """The load's result once it ends (its error raised); the events it held back
        while steps 4 and 5 ran are shown first. A GateError when a file it read was
        written while it loaded."""
        self._release()
        assert self._thread is not None
        while self._thread.is_alive():
            if cancel.is_set():
                self.cancel.set()
            self._thread.join(0.1)
        if self.error is not None:
            raise self.error
        for opened in filter(None, (self.backup, self.companion)):
            if not opened.unchanged():
                raise pinned.GateError(
                    f"{opened.link.name} was written while it was loaded: the loaded content "
                    "may not be what step 4 verified; stop whatever writes to it, then run "
                    "the restore again"
                )
        assert self.result is not None and self.choice is not None
        return self.result, self.choice

    def stop(self) -> None:
        """End the load (if it runs), drop its database and close its files."""
        self.cancel.set()
        if self._thread is not None:
            self._thread.join()
        with (
            contextlib.suppress(DrError, psycopg.Error),
            database.connect(self.run.config.database, admin=True) as conn,
        ):
            if database.database_exists(conn, self.loading):
                database.block_and_terminate(conn, self.loading)
                database.drop_database(conn, self.loading)
        self.close()

    def close(self) -> None:
        """Close its files (step 6 took the load, or `stop` ended it)."""
        _close([o for o in (self.backup, self.companion) if o is not None], self.folder)

    # ------------------------------------------------------------ the load's thread

    def _load(self, env: dict[str, str]) -> None:
        try:
            self.result = loader.load(
                self.run,
                self.backup.link,
                self.companion.link if self.companion else None,
                env,
                self.cancel,
                self.loading,
                sink=self._sink,
                decided=self._decided,
            )
        except BaseException as exc:  # step 6 raises it (`wait`)
            self.error = exc

    def _decided(self, choice: LoadRecord, level: str | None) -> None:
        self.choice = choice = dataclasses.replace(choice, early=True)
        if level is not None:
            name = self.backup.path.name
            text = f"loading {name}: {choice.how}, because {choice.reason}"
            self._sink(Notice(level, text, StepId.RESTORE))

    def _sink(self, event: Event) -> None:
        """The loader's events: held back while steps 4 and 5 run (their own lines and
        progress come first; progress is dropped meanwhile, psql's and pg_restore's lines
        kept to the last HELD_LINES); passed on once step 6 waits."""
        with self._lock:
            if self._released:
                self.run.on_event(event)
            elif isinstance(event, Notice):
                self._notices.append(event)
            elif not isinstance(event, Progress):
                self._lines.append(event)

    def _release(self) -> None:
        with self._lock:
            self._released = True
            for event in [*self._notices, *self._lines]:
                self.run.on_event(event)
            self._notices.clear()
            self._lines.clear()


def start(run: StepRun) -> EarlyLoad | None:
    """Start step 6's load now (before step 4 runs), or None when this run does not load
    early: restore.early_load is off, steps 5 and 6 are not both still to do, the backup is
    not local yet or is encrypted, or the server lacks room for it (step 4 says so)."""
    s = run.state
    choice = s.backup
    if (
        not run.config.restore.early_load
        or choice is None
        or not choice.local_path
        or age.is_encrypted_name(choice.name)
        or any(
            run.step(i).status is not StepStatus.PENDING
            for i in (StepId.RECREATE_DB, StepId.RESTORE)
        )
    ):
        return None
    try:
        server_space(run)
    except DrError:
        return None  # step 4 refuses the run with the same words
    backup = Path(choice.local_path)
    folder = run.config.state_dir / "load" / f"{s.run_id}-early"
    opened: list[_Opened] = []
    try:
        opened.append(_open(backup, folder))
        companion = companion_path(backup)
        if run.config.restore.method != "serial" and companion.is_file():
            opened.append(_open(companion, folder))
    except (OSError, DrError):
        _close(opened, folder)
        return None  # step 4 reads the files itself and says what is wrong
    early = EarlyLoad(
        run,
        loading_name(s.target_db, s.run_id),
        opened[0],
        opened[1] if len(opened) > 1 else None,
        folder,
    )
    db = run.config.database
    try:
        run.ensure_server_lock()
        with database.connect(db, admin=True) as conn:
            if database.database_exists(conn, early.loading):  # a half load of an earlier try
                database.block_and_terminate(conn, early.loading)
                database.drop_database(conn, early.loading)
            early.closed_acl = loader.create_loading(conn, early.loading, db.user)
    except (DrError, psycopg.Error):
        early.close()
        return None  # steps 5 and 6 meet the same trouble and report it
    env = database.load_env(db, early.loading, run.config.restore.maintenance_work_mem)
    early._thread = threading.Thread(
        target=early._load, args=(env,), name="early-load", daemon=True
    )
    early._thread.start()
    run.on_event(
        Notice(
            "info",
            f"step 6's load starts now, into the closed database {early.loading}, while "
            f"step 4 verifies {choice.name}; {s.target_db} is untouched until step 5, and "
            "the load is dropped if step 4 fails (restore.early_load)",
            StepId.VERIFY,
        )
    )
    return early


def _open(path: Path, folder: Path) -> _Opened:
    """`path` held open; a pipe or device never blocks here and is refused (step 4 says
    why)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise DrError(f"{path} is not a regular file")
        link = pinned.link_to_fd(folder, path, fd)
    except BaseException:
        os.close(fd)
        raise
    return _Opened(path, fd, link, FileIdentity.of(opened))


def _close(opened: list[_Opened], folder: Path) -> None:
    for item in opened:
        os.close(item.fd)
        if item.link != item.path:  # never the backup itself
            item.link.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()
