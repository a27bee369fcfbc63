"""The WAL archive behind point-in-time recovery: `wal-push` (archive_command) and
`wal-fetch` (restore_command), plus the listing `check` and `pitr` read.

PostgreSQL runs push and fetch once per WAL segment, as the server's OS user, with only
the postmaster's environment (BACKUP_DIR, S3_BUCKET, AWS_*). So they read neither
runbook.yaml nor any state file: a broken runbook must never stop archiving, which would
fill pg_wal and take production down. boto3 is imported only when a bucket is set.

Layout: `BACKUP_DIR/wal/<name>` beside an md5sum-style sidecar `<name>.md5`, written before
the segment is renamed into place so a segment under its final name always has one; and
`s3://$S3_BUCKET/wal/<name>` with its MD5 in the object metadata (`md5`), sent as
Content-MD5 so S3 itself refuses bytes damaged on the way.
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preskool_dr.core.base import files
from preskool_dr.core.base.errors import DrError, UsageError, VerificationError
from preskool_dr.core.base.paths import ensure_private_dir, inside
from preskool_dr.core.base.settings import BackupSettings, Config
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.repository import Repository

if TYPE_CHECKING:
    from preskool_dr.core.storage.s3store import S3Store

WAL_DIRNAME = "wal"
S3_PREFIX = "wal/"
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
# The archive belongs to the database server's OS user (wal-push runs as postgres). Group
# read, never others: an operator in the postgres group runs `check` (lists the folder) and
# pitr drills without root, whose recovering server runs wal-fetch as that operator and
# reads these files. Backups hold the whole database: nothing is world-readable.
FILE_MODE = 0o640
ARCHIVE_DIR_MODE = 0o750
# A push's temp copy older than this was left by a killed push (one takes seconds).
STALE_TEMP_SECONDS = 3600
# A segment archived locally less than this long ago may still be on its way to S3.
S3_GRACE_SECONDS = 300
_LOG_SPAN = 0x1_0000_0000  # bytes of WAL per "log id" (the middle 8 hex digits of a name)
# Patterns are used with fullmatch only: `$` would also match before a trailing newline.
_SEGMENT_RE = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
# Segments, timeline history files, backup history files, and the .partial segment a
# promotion leaves: everything archive_command is ever given.
_NAME_RE = re.compile(r"[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history")
_MD5_RE = re.compile(r"[0-9a-f]{32}")
_PLAIN_ETAG = re.compile(r'"?([0-9a-f]{32})"?')


class WalMissing(DrError):
    """The archive has no such file. Exit 1: PostgreSQL reads that as the end of the archive."""

    exit_code = 1


def check_name(name: str) -> str:
    """A WAL file name as PostgreSQL archives it; anything else (e.g. `../x`) is refused."""
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a WAL file name (24 hex digits, a .history, .backup or .partial "
            "file): pass %p to wal-push and %f %p to wal-fetch"
        )
    return name


def parse_lsn(text: str) -> int:
    """`0/3000028` -> byte position in the WAL."""
    high, _, low = text.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r}") from None


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment file name, `TTTTTTTTLLLLLLLLSSSSSSSS`: timeline, log id, segment."""

    timeline: int
    log: int
    seg: int

    @classmethod
    def parse(cls, name: str) -> Segment | None:
        match = _SEGMENT_RE.fullmatch(name)
        if match is None:
            return None
        return cls(*(int(group, 16) for group in match.groups()))

    @classmethod
    def at(cls, timeline: int, number: int, segment_size: int) -> Segment:
        per_log = _LOG_SPAN // segment_size
        return cls(timeline, number // per_log, number % per_log)

    @classmethod
    def for_lsn(cls, timeline: int, lsn: str, segment_size: int) -> Segment:
        """The segment holding the byte at `lsn`."""
        return cls.at(timeline, parse_lsn(lsn) // segment_size, segment_size)

    @staticmethod
    def timeline_of(name: str) -> int:
        """The timeline of a segment name (the first 8 hex digits)."""
        return int(name[:8], 16)

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    def number(self, segment_size: int) -> int:
        """Position in the WAL counted in segments, independent of the timeline."""
        return self.log * (_LOG_SPAN // segment_size) + self.seg


@dataclass(frozen=True)
class WalSettings:
    """Where the archive lives. The CLI takes it from the environment only (see above)."""

    backup_dir: Path
    bucket: str | None = None

    @property
    def archive_dir(self) -> Path:
        return self.backup_dir / WAL_DIRNAME

    @property
    def repository(self) -> Repository:
        """The archive folder and, with a bucket, s3://$S3_BUCKET/wal/."""
        return Repository(self.archive_dir, self.bucket, S3_PREFIX)

    @property
    def where(self) -> str:
        return self.repository.where("and")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WalSettings:
        env = os.environ if env is None else env
        directory = env.get("BACKUP_DIR")
        backup_dir = Path(directory).expanduser().absolute() if directory else BackupSettings().dir
        return cls(backup_dir, env.get("S3_BUCKET") or None)

    @classmethod
    def from_config(cls, config: Config) -> WalSettings:
        return cls(config.backups.dir, config.backups.s3_bucket)


# ---------------------------------------------------------------- files


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(checksum.CHUNK):
            yield chunk


def file_md5(path: Path) -> str:
    digest = checksum.md5_hasher()
    for chunk in _chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def _write_temp(chunks: Iterable[bytes], directory: Path, name: str) -> tuple[Path, str, int]:
    """Write `chunks` to a hidden temp file in `directory` (fsync'd); (path, md5, size)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    digest = checksum.md5_hasher()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


def _install(tmp: Path, final: Path) -> None:
    tmp.replace(final)
    files.fsync_dir(final.parent)


# ---------------------------------------------------------------- push


@dataclass(frozen=True)
class PushResult:
    name: str
    md5: str
    local: str  # "archived" or "already archived"
    s3: str | None  # "uploaded", "already in S3", or None without a bucket


def push(source: Path, settings: WalSettings) -> PushResult:
    """Archive `source` (a path PostgreSQL gives as %p) under its own name.

    Idempotent: the same content pushed again succeeds. Different content under a name
    already archived is refused (DrError): two clusters writing into one archive, or a
    damaged archive, must be looked at by a person, never overwritten. That holds for two
    pushes of one name at the same moment too: the copy is installed without replacing
    anything (os.link locally, a conditional PUT in S3), so the loser compares instead."""
    name = check_name(source.name)
    archive = settings.archive_dir
    try:
        ensure_private_dir(archive.parent)  # BACKUP_DIR, when the server is the first to write
        archive.mkdir(mode=ARCHIVE_DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise _archive_error(archive, exc) from None
    final = inside(archive, name)
    try:
        if final.exists():
            md5 = file_md5(source)
            local = _already_archived(md5, final)
        else:
            md5, local = _archive_locally(source, final)
    except OSError as exc:
        if exc.filename == str(source):
            raise DrError(f"cannot read {source}: {exc.strerror or exc}") from None
        raise _archive_error(Path(exc.filename or final), exc) from None
    repo = settings.repository
    remote = _push_s3(repo.s3, final, md5) if repo.has_s3 else None
    return PushResult(name, md5, local, remote)


def _archive_error(path: Path, exc: OSError) -> DrError:
    return DrError(
        f"cannot archive into {path}: {exc.strerror or exc}; the WAL archive must be writable "
        "by the database server's OS user (install -d -o postgres -m 0750 BACKUP_DIR/wal)"
    )


def _archive_locally(source: Path, final: Path) -> tuple[str, str]:
    """Copy `source` into the archive as `final`: (md5, "archived"), or (md5, "already
    archived") when another push installed identical bytes first. The sidecar goes in before
    the segment, so a segment under its final name always has one; both are installed with
    os.link, which fails when the name exists where a rename would replace it."""
    _remove_stale_temps(final)
    tmp, md5, _ = _write_temp(_chunks(source), final.parent, final.name)
    try:
        if file_md5(tmp) != md5:
            raise VerificationError(
                f"re-reading the copy of {source.name} in {final.parent} gave other bytes than "
                "were written: check that disk (dmesg); PostgreSQL will retry the segment"
            )
        tmp.chmod(FILE_MODE)
        wrote_sidecar = _claim_sidecar(final, md5)
        if not files.install_new(tmp, final):
            # Another push got there first: the same bytes, or refused.
            try:
                return md5, _already_archived(md5, final)
            except DrError:
                if wrote_sidecar:  # ours names bytes that are not the archived ones
                    checksum.sidecar_path(final).unlink(missing_ok=True)
                raise
        files.fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return md5, "archived"


def _remove_stale_temps(final: Path) -> None:
    """Remove the temp copies of `final` a killed push left. A young one may belong to a push
    still running (another server archiving the same name into this folder): it is left to
    finish and compare, instead of failing on a file removed under it."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
        except FileNotFoundError:
            continue


def _claim_sidecar(final: Path, md5: str) -> bool:
    """Put `final`'s sidecar in place for bytes with `md5` unless one is there; True when this
    push wrote it. One naming other bytes while `final` is not archived yet belongs to
    another push of a different file under the same name, half way: refused, never replaced."""
    if checksum.create_sidecar(final, md5, mode=FILE_MODE):
        return True
    sidecar = checksum.sidecar_path(final)
    try:
        recorded = checksum.read_sidecar(sidecar, final.name).md5
    except VerificationError:  # damaged: no push writes such a file, none can depend on it
        if final.exists():
            return False  # the segment's own check below decides (and repairs the sidecar)
        checksum.write_sidecar(final, md5, mode=FILE_MODE)
        return True
    if recorded == md5 or final.exists():
        return False  # ours from a killed attempt, or the archived segment decides
    raise DrError(
        f"{sidecar} records other content (md5 {recorded}) than the server's {final.name} "
        f"(md5 {md5}), whose copy is not archived yet: another server is archiving a different "
        f"{final.name} into {final.parent} right now, or stopped half way; refusing to "
        "overwrite it. Each cluster needs its own BACKUP_DIR"
    )


def _already_archived(md5: str, final: Path) -> str:
    """ "already archived" when `final` holds bytes with `md5` (its sidecar repaired when
    missing or wrong); DrError when it holds other bytes."""
    archived = file_md5(final)
    if archived != md5:
        raise DrError(
            f"{final} is already archived with different content (md5 {archived}, the server's "
            f"file has {md5}): refusing to overwrite it; is another cluster archiving into "
            f"{final.parent}? Each cluster needs its own BACKUP_DIR"
        )
    try:
        if checksum.read_sidecar(checksum.sidecar_path(final), final.name).md5 == md5:
            return "already archived"
    except VerificationError:
        pass
    # A push killed between sidecar and link (older versions: rename), or tampering.
    checksum.write_sidecar(final, md5, mode=FILE_MODE)
    return "already archived"


# ---------------------------------------------------------------- S3


def _head(store: S3Store, name: str) -> dict[str, Any] | None:
    """HEAD of wal/<name>; None when it does not exist."""
    import botocore.exceptions

    try:
        response: dict[str, Any] = store.client.head_object(
            Bucket=store.bucket, Key=store.prefix + name
        )
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("404", "NoSuchKey", "NotFound") or status == 404:
            store.check_bucket()  # a missing bucket also answers HEAD with a bare 404
            return None
        raise store.error(exc, name, "read") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise store.error(exc, name, "read") from None
    return response


def _object_md5(head: Mapping[str, Any]) -> str | None:
    """The MD5 we stored in the metadata, else a plain (single-part, unencrypted) ETag."""
    stored = str((head.get("Metadata") or {}).get("md5", "")).lower()
    if _MD5_RE.fullmatch(stored):
        return stored
    match = _PLAIN_ETAG.fullmatch(str(head.get("ETag", "")))
    return match.group(1) if match else None


def _get_chunks(store: S3Store, name: str) -> Iterator[bytes]:
    import botocore.exceptions

    try:
        body = store.client.get_object(Bucket=store.bucket, Key=store.prefix + name)["Body"]
        try:
            yield from body.iter_chunks(checksum.CHUNK)
        finally:
            body.close()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise store.error(exc, name, "download") from None


def _push_s3(store: S3Store, path: Path, md5: str) -> str:
    name = path.name
    head = _head(store, name)
    if head is not None:
        return _already_in_s3(store, name, head, md5)
    try:
        _put_new(store, path, md5)
    except _NameTaken:  # another server's push of this name landed between HEAD and PUT
        head = _head(store, name)
        if head is None:
            raise DrError(
                f"{store.url(name)} was being written by another push at the same moment; "
                "PostgreSQL will retry the segment"
            ) from None
        return _already_in_s3(store, name, head, md5)
    stored = _head(store, name)
    if stored is None or _object_md5(stored) != md5:
        raise VerificationError(
            f"{store.url(name)} does not hold what was uploaded (md5 "
            f"{_object_md5(stored) if stored else 'missing'}, expected {md5}); "
            "PostgreSQL will retry the segment"
        )
    return "uploaded"


def _already_in_s3(store: S3Store, name: str, head: Mapping[str, Any], md5: str) -> str:
    """ "already in S3" when wal/<name> holds bytes with `md5`; DrError when other bytes."""
    remote = _object_md5(head)
    if remote is None:  # uploaded by another tool (multipart): compare the bytes
        digest = checksum.md5_hasher()
        for chunk in _get_chunks(store, name):
            digest.update(chunk)
        remote = digest.hexdigest()
    if remote != md5:
        raise DrError(
            f"{store.url(name)} already exists with different content (md5 {remote}, "
            f"local {md5}): refusing to overwrite it; is another cluster archiving into "
            "the same bucket?"
        )
    return "already in S3"


class _NameTaken(Exception):
    """A conditional PUT found the key already there (HTTP 412, or 409 for a concurrent one)."""


def _put_new(store: S3Store, path: Path, md5: str) -> None:
    """PUT wal/<name> only if no object has that key (`If-None-Match: *`, which S3 checks
    atomically): the HEAD before it cannot stop two servers from both seeing no object."""
    import botocore.exceptions

    args: dict[str, Any] = {
        "Bucket": store.bucket,
        "Key": store.prefix + path.name,
        "ContentMD5": base64.b64encode(bytes.fromhex(md5)).decode(),
        "Metadata": {"md5": md5},
    }
    try:
        _put(store, path, {**args, "IfNoneMatch": "*"})
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            raise _NameTaken from None
        if code != "NotImplemented" and status != 501:
            raise store.error(exc, path.name, "upload to") from None
        # An S3-compatible store without conditional writes: a plain PUT after the HEAD
        # above, as before, rather than stopping archiving (pg_wal would fill the disk).
        try:
            _put(store, path, args)
        except botocore.exceptions.ClientError as again:
            raise store.error(again, path.name, "upload to") from None


def _put(store: S3Store, path: Path, args: dict[str, Any]) -> None:
    """One put_object of `path`; ClientError goes to the caller, the rest becomes DrError."""
    import botocore.exceptions

    try:
        with path.open("rb") as body:
            store.client.put_object(Body=body, **args)
    except botocore.exceptions.BotoCoreError as exc:
        raise store.error(exc, path.name, "upload to") from None
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    name: str
    source: str  # "local" or "s3"
    md5: str
    warning: str | None = None  # e.g. the local copy was damaged and S3's was used


def fetch(name: str, dest: Path, settings: WalSettings) -> FetchResult:
    """Copy archived `name` to `dest` (PostgreSQL's %p), verified against its MD5, atomically.

    WalMissing when neither the local archive nor S3 has it; VerificationError when a copy
    exists but does not match its checksum (and no good copy exists elsewhere)."""
    check_name(name)
    local = inside(settings.archive_dir, name)
    damaged: DrError | None = None
    if local.is_file():
        try:
            expected = checksum.read_sidecar(checksum.sidecar_path(local), name).md5
            _restore(_chunks(local), dest, expected, str(local))
            return FetchResult(name, "local", expected)
        except DrError as exc:
            damaged = exc
        except OSError as exc:
            damaged = DrError(f"cannot read {local}: {exc.strerror or exc}")
    repo = settings.repository
    if repo.has_s3:
        store = repo.s3
        head = _head(store, name)
        if head is not None:
            expected_remote = _object_md5(head)
            if expected_remote is None:
                raise VerificationError(
                    f"{store.url(name)} carries no MD5 (not uploaded by wal-push): "
                    "it cannot be verified"
                )
            _restore(_get_chunks(store, name), dest, expected_remote, store.url(name))
            warning = f"used the S3 copy: {damaged}" if damaged else None
            return FetchResult(name, "s3", expected_remote, warning)
    if damaged is not None:
        raise damaged
    raise WalMissing(f"{name} is not in the WAL archive ({settings.where})")


def _restore(chunks: Iterable[bytes], dest: Path, expected: str, source: str) -> None:
    try:
        tmp, md5, _ = _write_temp(chunks, dest.parent, dest.name)
    except OSError as exc:
        raise DrError(f"cannot write {dest}: {exc.strerror or exc}") from None
    try:
        if md5 != expected:
            raise VerificationError(
                f"{source} fails its checksum (md5 {md5}, expected {expected}): the archived "
                "segment is damaged; recovery cannot continue past it"
            )
        _install(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- listing and health


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    size: int
    time: datetime  # when it was archived: the file's mtime, or S3's LastModified
    local: bool
    s3: bool


def list_archive(settings: WalSettings, *, include_s3: bool = True) -> dict[str, ArchivedFile]:
    """Every WAL file name in the local archive and (with a bucket) in S3, merged."""
    files: dict[str, ArchivedFile] = {}
    try:
        with os.scandir(settings.archive_dir) as entries:
            for entry in entries:
                if not _NAME_RE.fullmatch(entry.name):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # pruned while we listed
                if entry.is_file():
                    at = datetime.fromtimestamp(stat.st_mtime, UTC)
                    files[entry.name] = ArchivedFile(entry.name, stat.st_size, at, True, False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise DrError(
            f"cannot read the WAL archive {settings.archive_dir}: {exc.strerror or exc}"
        ) from None
    repo = settings.repository
    if include_s3 and repo.has_s3:
        store = repo.s3
        for obj in store.list_objects(with_restore_state=False):
            name = store.name_of(obj.key)
            if not _NAME_RE.fullmatch(name):
                continue
            known = files.get(name)
            if known is not None:
                files[name] = ArchivedFile(name, known.size, known.time, True, True)
            else:
                files[name] = ArchivedFile(name, obj.size, obj.last_modified, False, True)
    return files


def segment_size(files: Iterable[ArchivedFile]) -> int:
    """Every segment file is exactly wal_segment_size bytes: the commonest size is it."""
    sizes = Counter(f.size for f in files if Segment.parse(f.name) and f.size > 0)
    return sizes.most_common(1)[0][0] if sizes else DEFAULT_SEGMENT_SIZE


def find_gaps(names: Iterable[str], segment_size: int, since: Segment | None = None) -> list[str]:
    """Segment names missing inside each timeline's archived run (from `since` on its timeline)."""
    numbers: dict[int, set[int]] = {}
    for name in names:
        segment = Segment.parse(name)
        if segment is not None:
            numbers.setdefault(segment.timeline, set()).add(segment.number(segment_size))
    missing: list[str] = []
    for timeline, present in sorted(numbers.items()):
        low = min(present)
        if since is not None and since.timeline == timeline:
            low = since.number(segment_size)
        missing += [
            Segment.at(timeline, n, segment_size).name
            for n in range(low, max(present) + 1)
            if n not in present
        ]
    return missing


@dataclass(frozen=True)
class ArchiveHealth:
    """What `check` reports about the WAL archive."""

    where: str
    segments: int
    newest: str | None
    newest_time: datetime | None
    missing: tuple[str, ...]  # gap segments (since the oldest base backup)
    not_in_s3: int
    s3_error: str | None = None

    def age_seconds(self, now: datetime) -> float | None:
        if self.newest_time is None:
            return None
        return (now - self.newest_time).total_seconds()

    def verdict(self, rpo_hours: float, now: datetime) -> tuple[str, str]:
        """(Nagios state name, one-line summary). No archive at all is reported, not alerted."""
        if self.s3_error is not None and self.segments == 0:
            return "WARNING", f"WAL archive unknown: {self.s3_error}"
        age = self.age_seconds(now)
        if self.newest is None or age is None:
            return "OK", (
                f"no WAL archive in {self.where}: point-in-time recovery is not set up "
                "(see docs/PITR.md)"
            )
        hours = age / 3600
        newest = f"newest WAL {self.newest} archived {hours:.1f} h ago"
        if self.missing:
            first = self.missing[0]
            return "CRITICAL", (
                f"WAL gap: {len(self.missing)} segment(s) missing from {self.where}, first "
                f"{first}: point-in-time recovery cannot pass it; take a new base backup "
                "(preskool-dr backup --kind base)"
            )
        if hours > 2 * rpo_hours:
            return "CRITICAL", (
                f"WAL archiving stalled: {newest} (> {2 * rpo_hours:g} h); check the server "
                "log for archive_command errors and pg_stat_archiver"
            )
        if hours > rpo_hours:
            return "WARNING", (
                f"WAL archive late: {newest} (> RPO {rpo_hours:g} h); check archive_command "
                "and archive_timeout"
            )
        if self.s3_error is not None:
            return "WARNING", f"{newest}, but S3 could not be checked: {self.s3_error}"
        if self.not_in_s3:
            return "WARNING", (
                f"{self.not_in_s3} archived WAL segment(s) are not in S3 yet; {newest}"
            )
        return "OK", f"{newest}; {self.segments} segments, no gaps"


def archive_health(
    settings: WalSettings, now: datetime, since: Segment | None = None
) -> ArchiveHealth:
    s3_error = None
    try:
        files = list_archive(settings)
    except DrError as exc:
        s3_error = str(exc)
        files = list_archive(settings, include_s3=False)
    segments = [f for f in files.values() if Segment.parse(f.name)]
    newest = max(segments, key=lambda f: f.time, default=None)
    # Timelines older than the base backup's are history no recovery from it needs.
    relevant = [
        f.name for f in segments if since is None or Segment.timeline_of(f.name) >= since.timeline
    ]
    gaps = find_gaps(relevant, segment_size(segments), since)
    late = [
        f
        for f in segments
        if settings.bucket and not f.s3 and (now - f.time).total_seconds() > S3_GRACE_SECONDS
    ]
    return ArchiveHealth(
        where=settings.where,
        segments=len(segments),
        newest=newest.name if newest else None,
        newest_time=newest.time if newest else None,
        missing=tuple(gaps),
        not_in_s3=0 if s3_error else len(late),
        s3_error=s3_error,
    )
