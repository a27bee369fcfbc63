"""The custom-format companion of a logical backup: `pg_dump -Fc` of the same snapshot,
written beside the plain dump (`backup --format custom`), and its table of contents.
Loading it (`pg_restore -j N` in step 6) is core/restore/loaders/pg_restore.py."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.base import files, paths, procs
from preskool_dr.core.base.database import libpq_env
from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.settings import DatabaseSettings
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path

TOC_TIMEOUT = 300  # seconds for `pg_restore -l` (it reads only the table of contents)
_TOC_LINE = re.compile(r"^(\d+); \d+ \d+ (.+)$")


# ---------------------------------------------------------------- the table of contents


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    description: str  # `TABLE DATA public attendance preskool`

    @property
    def table(self) -> str | None:
        """`public.attendance` for a TABLE DATA entry."""
        if not self.description.startswith("TABLE DATA "):
            return None
        parts = self.description.removeprefix("TABLE DATA ").split(" ")
        return ".".join(parts[:2]) if len(parts) >= 2 else None


# Tables of contents read in this process, by the identity of the file they came from: a
# restore's step 4 (is it readable?) and step 6's load (its progress total) ask for the same
# one, at the same moment when the load started early. A file written since has another
# identity (ctime), so it is read again.
_read: dict[checksum.FileIdentity, list[TocEntry]] = {}
_read_lock = threading.Lock()  # one pg_restore -l at a time: the second asker waits for it
_READ_KEPT = 4


def read_toc(dump: Path, *, timeout: float = TOC_TIMEOUT) -> list[TocEntry]:
    """`pg_restore -l`: the entries pg_restore will process; DrError when it cannot read
    the file as a custom-format archive."""
    with _read_lock:
        identity = checksum.FileIdentity.at(dump)  # None: pg_restore says what is wrong
        if identity is not None and identity in _read:
            return list(_read[identity])
        entries = _list_toc(dump, timeout)
        if identity is not None and checksum.FileIdentity.at(dump) == identity:  # not written
            while len(_read) >= _READ_KEPT:
                del _read[next(iter(_read))]
            _read[identity] = entries
        return list(entries)


def _list_toc(dump: Path, timeout: float) -> list[TocEntry]:
    result = procs.run_command(["pg_restore", "--list", str(dump)], timeout=timeout)
    if not result.ok:
        last = result.output.strip().splitlines()[-1:] or [result.describe()]
        raise DrError(
            f"pg_restore cannot read {dump.name} ({last[0]}): it is not a usable "
            "custom-format backup; restore the plain .sql.gz instead"
        )
    entries = []
    for line in result.output.splitlines():
        match = _TOC_LINE.match(line)
        if match:
            entries.append(TocEntry(int(match[1]), match[2]))
    return entries


# ---------------------------------------------------------------- the companion dump

# pg_dump compresses on one core with the system zlib: at the plain dump's level 6 the
# companion took ~1.3x the whole backup's time, at level 1 it stays within the plain
# dump's (which deflates on every core, core/backup/gzip_writer.py) for ~15 % more bytes.
# It exists for restore speed, and pg_restore also inflates level 1 faster.
COMPANION_LEVEL = 1


class _CompanionDump:
    """`pg_dump -Fc` of the same snapshot into `.<name>.dump.part`, run beside the plain
    dump. It writes a file, not a pipe: pg_restore -j needs the data offsets pg_dump can
    only record in a seekable file."""

    def __init__(self, db: DatabaseSettings, snapshot_id: str, backup: Path) -> None:
        self.final = companion_path(backup)
        self.part = self.final.with_name(f".{self.final.name}.part")
        self.errors: list[str] = []
        # made here, new and 0600, for pg_dump to fill: pg_dump --file would create it
        # 0666 & ~umask (readable by the group while the whole database is written) and
        # follow a symlink planted at its name
        try:
            os.close(
                paths.open_private_file(
                    self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "companion's .part"
                )
            )
        except FileExistsError:
            raise DrError(
                f"something is already at {self.part} (the sweep under the backup lock "
                "removed what a killed run left, so someone put it there): nothing was "
                f"written - remove it (rm {self.part}), check who can write to "
                f"{self.part.parent}, and run the backup again"
            ) from None
        except OSError as exc:
            raise DrError(f"cannot create {self.part}: {exc.strerror or exc}") from None
        argv = [
            "pg_dump",
            "--format=custom",
            f"--compress={COMPANION_LEVEL}",
            "--no-password",
            f"--snapshot={snapshot_id}",
            f"--file={self.part}",
        ]
        try:
            self.proc = procs.spawn(argv, env=libpq_env(db, db.name), stdout=subprocess.DEVNULL)
        except OSError as exc:
            raise DrError(f"cannot start pg_dump: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._read_errors, daemon=True)
        self._reader.start()

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.errors.append(procs.redact(raw.decode("utf-8", "replace").strip()))

    def finish(self, on_event: EventSink, step_id: str) -> tuple[str, int]:
        """Wait for pg_dump, then checksum, sidecar and a TOC read; returns its MD5 and
        the number of TOC entries."""
        code = self.proc.wait()
        self._reader.join(timeout=5)
        if code != 0:
            first = next((e for e in self.errors if e), "no error message")
            raise DrError(
                f"pg_dump --format=custom failed (exit status {code}): {first} - "
                "nothing was saved; fix the cause and run the backup again"
            )
        fd = paths.open_private_file(self.part, os.O_RDONLY, "companion's .part")
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self.part, self.final)
        files.fsync_dir(self.final.parent)
        result = checksum.verify_file(
            self.final, None, on_event=on_event, step_id=step_id, check_gzip=False
        )
        checksum.write_sidecar(self.final, result.actual_md5)
        entries = read_toc(self.final)
        return result.actual_md5, len(entries)

    def discard(self) -> None:
        procs.terminate(self.proc)
        self._reader.join(timeout=5)
        for path in (self.part, self.final, checksum.sidecar_path(self.final)):
            path.unlink(missing_ok=True)


@dataclass
class CompanionDigest:
    """What `companion_dump` yields: the companion's MD5 once the block has ended (None
    when no companion was made), for the plain backup's .meta.json."""

    md5: str | None = None
    name: str = ""
    toc_entries: int = 0

    def notice(self, step_id: str = "backup") -> Notice | None:
        """The `[OK]` line that tells of it (said after the seed's lines of the .sql.gz)."""
        if self.md5 is None:
            return None
        return Notice(
            "ok",
            f"Custom-format companion: {self.name} "
            f"({self.toc_entries} TOC entries, MD5 {self.md5}), from the same snapshot",
            step_id,
        )


@contextlib.contextmanager
def companion_dump(
    db: DatabaseSettings,
    snapshot_id: str,
    backup: Path,
    *,
    enabled: bool,
    on_event: EventSink = ignore_events,
    step_id: str = "backup",
) -> Iterator[CompanionDigest]:
    """Around the plain dump: with `enabled`, a custom-format dump of the same snapshot runs
    beside it and is finished (renamed, checksummed, sidecar written) when the block ends
    without an error; on any error it is stopped and removed. The yielded record holds
    the companion's MD5 after the block."""
    digest = CompanionDigest()
    if not enabled:
        yield digest
        return
    dump = _CompanionDump(db, snapshot_id, backup)
    try:
        yield digest
        digest.md5, digest.toc_entries = dump.finish(on_event, step_id)
        digest.name = dump.final.name
    except BaseException:
        dump.discard()
        raise
