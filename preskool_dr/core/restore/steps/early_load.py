"""Step 6's load, started as step 4 begins, or for a backup in S3 as soon as step 3 has
downloaded its custom-format companion (fetched first, while the .sql.gz still
downloads): headless runs (`Engine.run_all`) only.

Before it starts, the file it will read is opened and hashed through the open file
(core/restore/pinned.py): the .sql.gz must have the MD5 of its sidecar, a custom-format
companion the MD5 its .meta.json recorded (that meta naming the sidecar's MD5). So, as in
step 6, no byte of a backup that fails its checksum reaches the database. The rest of step
3 (the .sql.gz's download), step 4 (gzip integrity, the content scan, the companion's table
of contents, server space), step 1 and step 5 then run beside the load instead of before
it.

The load goes where step 6's always goes, `<target>_loading_<run id>`, closed to every role
but the app role, which loads it (as in step 6; note that this role also owns production,
and the app may still be online while step 4 runs). Step 6 takes the load only when
- it has not failed already (step 6 then loads again: the failure may be the server's);
- step 4 passed, on the very files the load opened (device, inode, size, mtime, ctime),
  and a companion it loaded is the one step 4 accepted;
- nothing wrote to those files while they were loaded;
- the restore-test's checks pass on it (as for any load).
Otherwise step 6 drops it and loads the verified file through the gate. A run that fails or
is stopped before step 6 drops it; one killed outright leaves it to `--resume`, which drops
it before loading again.

What it gives up: the backup's SQL starts running before step 4's gzip and content checks
have finished (its meta-commands are refused as they come, as in every load).
`restore.early_load: false` waits for step 4. Encrypted backups are not loaded early (step 4
is where their identity is first needed).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from preskool_dr.core.base import age, database
from preskool_dr.core.base.errors import DrError, NoSpaceError
from preskool_dr.core.base.events import Event, Notice, Progress, StepStatus
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore import pinned
from preskool_dr.core.restore.journal import BackupChoice, LoadRecord
from preskool_dr.core.restore.loaders.stream import StreamResult
from preskool_dr.core.restore.steps import loader
from preskool_dr.core.restore.steps.context import StepRun, local_backup
from preskool_dr.core.restore.steps.db_names import loading_name
from preskool_dr.core.restore.steps.recreate_db import server_space
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path
from preskool_dr.core.storage.meta import read_meta

EARLY = "started before step 4 passed"
HELD_LINES = 200


@dataclass
class EarlyLoad:
    """One load running on its own thread, reading files held open and hashed (`files`);
    step 6 takes it (`unusable_reason`, `wait`, `close`) or it is stopped (`stop`: the load
    ends and its database is dropped). Step 6 sees it through context.EarlyLoad."""

    run: StepRun
    loading: str
    backup: Path  # the .sql.gz
    held: pinned.Pinned  # what the load reads, held open and hashed: `backup` or its companion
    files: contextlib.ExitStack  # holds `held`; leaving it checks that nothing wrote to it
    closed_acl: list[str] | None = None
    result: tuple[StreamResult, LoadRecord] | None = None
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
        """Why step 6 may not take this load (None: it may): it must not have failed
        already (step 6 then loads again, through the gate: the failure may have been the
        server's, and steps 1 and 5 have run meanwhile), and what it read must be the file
        step 4 verified, or the companion step 4 accepted."""
        if self.error is not None:
            return f"it failed ({(str(self.error) or type(self.error).__name__).splitlines()[0]})"
        if not self.loads_companion:
            if choice.identity != self.held.identity:
                return f"{choice.name} is not the file step 4 verified"
            if choice.companion_md5 is not None:
                return "it loaded the plain backup, and step 4 accepted the companion instead"
        elif choice.companion_md5 is None:
            return "it loaded the custom-format companion, which step 4 did not accept"
        elif choice.companion_identity != self.held.identity:
            return (
                "the custom-format companion it loaded changed (inode, size or times) after "
                "the load opened it"
            )
        return None

    @property
    def holds(self) -> pinned.Pinned | None:
        """The file it holds open, as it hashed it through its descriptor (None once it
        failed: step 6 will not take it, so steps 4 and 5 read every file again)."""
        return None if self.error is not None else self.held

    @property
    def loads_companion(self) -> bool:
        return self.held.path != self.backup

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
        self.files.close()  # GateError when a file was written meanwhile
        assert self.result is not None
        return self.result

    def stop(self) -> None:
        """End the load (if it runs), drop its database and close its files."""
        self.close()
        with (
            contextlib.suppress(DrError, psycopg.Error),
            database.connect(self.run.config.database, admin=True) as conn,
        ):
            database.end_and_drop(conn, self.loading)

    def close(self) -> None:
        """End the load if it still runs, and close its files (step 6 took the load, or
        `stop` ended it)."""
        self.cancel.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(pinned.GateError):  # already failing, or dropped anyway
            self.files.close()

    # ------------------------------------------------------------ the load's thread

    def _load(self, env: dict[str, str]) -> None:
        try:
            self.result = loader.load(
                self.run,
                self.backup if self.loads_companion else self.held.load_path,
                self.held.load_path if self.loads_companion else None,
                env,
                self.cancel,
                self.loading,
                sink=self._sink,
                early=True,
            )
        except BaseException as exc:  # step 6 raises it (`wait`)
            self.error = exc

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


def start(
    run: StepRun,
    step_id: str,
    cancel: threading.Event,
    *,
    downloading: tuple[Path, int] | None = None,
) -> EarlyLoad | None:
    """Start step 6's load now, from step `step_id`, or None when this run does not load
    early: restore.early_load is off, steps 5 and 6 are not both still to do, the backup is
    not local or is encrypted, what it would load does not have its recorded MD5, or the
    server lacks room for it (step 4 then says why). Step 3 calls it once the companion is
    down, `downloading` the backup (its local path, and the bytes its download still
    writes: the server needs room for both when they share a disk); only the companion
    can be loaded then. `cancel` (the calling step's) stops the hashing before it."""
    s = run.state
    choice = s.backup
    local = local_backup(run, downloading)
    if (
        not run.config.restore.early_load
        or choice is None
        or local is None
        or age.is_encrypted_name(choice.name)
        or any(
            run.step(i).status is not StepStatus.PENDING
            for i in (StepId.RECREATE_DB, StepId.RESTORE)
        )
    ):
        return None
    try:
        # the target stays until step 5 while this load writes: its space is not free yet
        server_space(run, downloading, load_first=True)
    except NoSpaceError as exc:
        if downloading is not None:  # step 4's own check may pass: say why the load waits
            run.on_event(Notice("info", f"step 6's load waits for step 4: {exc}", step_id))
        return None
    except (DrError, OSError):
        return None
    files = contextlib.ExitStack()
    early: EarlyLoad | None = None
    try:
        try:
            held = _open_checked(run, local, files, step_id, cancel, downloading is not None)
        except (OSError, DrError):
            files.close()
            return None
        early = EarlyLoad(run, loading_name(s.target_db, s.run_id), local, held, files)
        db = run.config.database
        try:
            run.ensure_server_lock()
            with database.connect(db, admin=True) as conn:
                database.end_and_drop(conn, early.loading)  # a half load of an earlier try
                early.closed_acl = loader.create_loading(conn, early.loading, db.user)
        except (DrError, psycopg.Error):
            early.stop()
            return None  # steps 5 and 6 meet the same trouble and report it
        run.on_event(
            Notice(
                "info",
                f"step 6's load starts now: {held.path.name} has the MD5 recorded at backup "
                f"time; it loads into the closed database {early.loading} while "
                f"{'step 3 downloads and ' if downloading else ''}step 4 checks the rest of "
                f"{choice.name}; {s.target_db} is untouched until step 5, and the load is "
                "dropped unless step 4 passes (restore.early_load)",
                step_id,
            )
        )
        env = database.load_env(db, early.loading, run.config.restore.maintenance_work_mem)
        thread = threading.Thread(target=early._load, args=(env,), name="early-load", daemon=True)
        thread.start()
        early._thread = thread  # only a started thread: `close` joins it
    except BaseException:
        # nothing may stay open or half made: no one else knows of this load yet
        if early is not None:
            early.stop()
        else:
            files.close()
        raise
    return early


def _open_checked(
    run: StepRun,
    backup: Path,
    files: contextlib.ExitStack,
    step_id: str,
    cancel: threading.Event,
    companion_only: bool,
) -> pinned.Pinned:
    """What the load will read, opened into `files` and hashed through the open file: the
    custom-format companion when the method may load one and it has the MD5 the backup's
    .meta.json recorded (that meta describing this backup: its MD5 is the sidecar's); else
    the backup itself, against its sidecar (not while step 3 still downloads it:
    `companion_only`). GateError or OSError when the file is not what its sidecar or meta
    says, DrError when there is nothing to load yet."""
    md5, _ = checksum.expected_md5(backup)
    if md5 is None:
        raise DrError(f"{backup.name} has no usable sidecar")  # step 4 says what is wrong
    folder = run.config.state_dir / "load" / f"{run.state.run_id}-early"

    def pin(path: Path, expected: str) -> pinned.Pinned:
        return files.enter_context(
            pinned.open_verified(
                path,
                expected,
                None,
                folder,
                rehash=True,
                on_event=run.on_event,
                step_id=step_id,
                cancel=cancel,
            )
        )

    companion = companion_path(backup)
    meta = read_meta(backup) if companion.is_file() else None
    if (
        run.config.restore.method != "serial"
        and meta is not None
        and meta.md5 == md5
        and meta.companion_md5 is not None
    ):
        with contextlib.suppress(OSError, DrError):  # step 4 refuses it too: the plain file
            return pin(companion, meta.companion_md5)
    if companion_only:
        raise DrError(f"{backup.name} is still downloading")
    return pin(backup, md5)
