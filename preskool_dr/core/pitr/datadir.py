"""The new data directory: the chosen base backup fetched and verified (MD5 sidecars
against its meta.json, step 2), extracted into the directory and checked against the
backup's SHA-256 manifest with pg_verifybackup (step 3); emptied when a resumed run starts
again from the fetch. An encrypted base backup (`base.tar.gz.age`: the WAL and the manifest
inside) is decrypted in the stream, file -> age -> gunzip -> tar, with the identity."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tarfile
import threading
import zlib
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from preskool_dr.core.backup.base_info import BASE_TAR, BASE_TAR_AGE, MANIFEST, WAL_TAR
from preskool_dr.core.base import age, procs
from preskool_dr.core.base.errors import Cancelled, DrError, VerificationError
from preskool_dr.core.base.events import EventSink, ProgressMeter
from preskool_dr.core.base.pgbin import find_pg_bin
from preskool_dr.core.base.settings import Config
from preskool_dr.core.pitr.plan import RecoverableRange
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.fetch import fetch_backup


def fetch_base_backup(
    config: Config, plan: RecoverableRange, on_event: EventSink, cancel: threading.Event
) -> tuple[Path, int]:
    """The verified local copy of the plan's base backup, and how many files it holds."""
    base = plan.base
    extra = [m for m in base.members if m not in (BASE_TAR, BASE_TAR_AGE, WAL_TAR, MANIFEST)]
    if extra:
        raise DrError(
            f"{base.name} holds tablespaces ({', '.join(extra)}): pitr restores only the "
            "main data directory; extract those by hand (see docs/PITR.md)"
        )
    path = fetch_backup(config, plan.record, on_event=on_event, step_id="fetch", cancel=cancel)
    results = checksum.verify_backup(path, on_event=on_event, step_id="fetch", cancel=cancel)
    for result in results:
        expected = base.members.get(result.path.name)
        if not result.ok or expected != result.actual_md5:
            raise VerificationError(
                f"{result.describe()} (meta.json says {expected}): the base backup is "
                "damaged; choose another target so an older base backup is used"
            )
    missing = set(base.members) - {r.path.name for r in results}
    if missing:
        raise VerificationError(f"{base.name} lacks {', '.join(sorted(missing))}")
    return path, len(results)


def extract_base_backup(
    backup_path: Path,
    data_dir: Path,
    on_event: EventSink,
    cancel: threading.Event,
    identity: Path | None = None,
) -> None:
    """base.tar.gz into `data_dir` (created 0700), pg_wal.tar.gz into its pg_wal; or the
    encrypted base.tar.gz.age, decrypted with `identity` on the way."""
    encrypted = backup_path / BASE_TAR_AGE
    identities = None
    if encrypted.exists():
        identities = age.need_identities(identity, f"base backup {backup_path.name}")
    take_data_dir(data_dir)
    if identities is not None:
        _extract_tar(encrypted, data_dir, on_event, cancel, identities)
        return
    _extract_tar(backup_path / BASE_TAR, data_dir, on_event, cancel)
    wal_tar = backup_path / WAL_TAR
    if wal_tar.exists():
        (data_dir / "pg_wal").mkdir(mode=0o700, exist_ok=True)
        _extract_tar(wal_tar, data_dir / "pg_wal", on_event, cancel)


def take_data_dir(data_dir: Path) -> None:
    """Make `data_dir` ours before anything is written into it: new, or an empty folder
    that may belong to the server's OS user (PITR.md's example), which is given to this user
    with mode 0700, so no one else can put a link into it while it is written as root (its
    tree goes to the server's OS user at the end). A symbolic link is refused, never
    followed."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)  # the server must reach it: not 0700
    with contextlib.suppress(FileExistsError):
        data_dir.mkdir(mode=0o700)
    try:
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DrError(
            f"--data-dir {data_dir} cannot be used ({exc.strerror or exc}; a symbolic link is "
            "never followed): choose a new folder, nothing was written"
        ) from None
    try:
        os.fchown(fd, os.geteuid(), os.getegid())
        os.fchmod(fd, 0o700)
        if os.listdir(fd):
            raise DrError(
                f"--data-dir {data_dir} is no longer empty (someone wrote into it after pitr "
                "checked it): choose a new folder, nothing was written"
            )
    finally:
        os.close(fd)


def manifest_mismatch(backup_path: Path, data_dir: Path, cancel: threading.Event) -> str | None:
    """pg_verifybackup's complaint about the extracted files, or None when every file
    matches the backup's manifest."""
    manifest = backup_path / MANIFEST
    if not manifest.exists():  # an encrypted backup: the manifest came out of its tar
        manifest = data_dir / MANIFEST
    result = procs.run_command(
        [
            find_pg_bin("pg_verifybackup"),
            f"--manifest-path={manifest}",
            "--quiet",
            str(data_dir),
        ],
        timeout=None,
        cancel=cancel,
    )
    if result.ok:
        return None
    return result.output.strip().splitlines()[0] if result.output.strip() else result.describe()


def empty_data_dir(data_dir: Path) -> None:
    for child in data_dir.iterdir() if data_dir.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class _CountingReader:
    """A file wrapper that reports bytes read and honours cancel, for tarfile's stream mode."""

    def __init__(self, raw: IO[bytes], meter: ProgressMeter, cancel: threading.Event) -> None:
        self._raw = raw
        self._meter = meter
        self._cancel = cancel

    def read(self, size: int = -1) -> bytes:
        if self._cancel.is_set():
            raise Cancelled("extraction cancelled")
        data = self._raw.read(size)
        self._meter.add(len(data))
        return data


def _extract_tar(
    path: Path,
    dest: Path,
    on_event: EventSink,
    cancel: threading.Event,
    identities: list[Any] | None = None,
) -> None:
    meter = ProgressMeter(on_event, "extract", f"extract {path.name}", path.stat().st_size)
    # The "data" filter (Python 3.11.4+) refuses members that would land outside `dest`.
    options: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with path.open("rb") as raw, contextlib.ExitStack() as stack:
            reader = cast(IO[bytes], _CountingReader(raw, meter, cancel))
            if identities is not None:
                reader = cast(
                    IO[bytes],
                    stack.enter_context(
                        age.Decryptor(cast(BinaryIO, reader), identities, path.name)
                    ),
                )
            # gzip.GzipFile, not tarfile's "r|gz": pg_basebackup's pg_wal.tar.gz is several
            # gzip members, and tarfile's stream mode reads only the first (an empty one).
            with (
                gzip.GzipFile(fileobj=reader, mode="rb") as unzipped,
                tarfile.open(fileobj=unzipped, mode="r|") as archive,
            ):
                # Members are MD5-verified pg_basebackup output.
                archive.extractall(dest, **options)  # noqa: S202
    except age.DecryptionError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DrError(f"cannot extract {path} into {dest}: {exc}") from None
    meter.finish()
