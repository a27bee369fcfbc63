"""The backup catalog: local BACKUP_DIR + S3, merged by name, newest first.

Names: `preskool-backup-YYYYMMDD_HHMMSS.sql.gz` (logical; the kind daily/weekly/pre-deploy
is recorded in `<name>.meta.json`) and `preskool-base-YYYYMMDD_HHMMSS...` (kind base; a
file or a folder of files, each with its own sidecar). Only names that parse are records:
`.md5`, `.meta.json` and `.part` files are attributes of the record they belong to.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import Cancelled, DrError, NotFoundError, UsageError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.paths import UnsafeNameError, ensure_private_dir, inside, name_problem
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage.checksum import (
    SIDECAR_SUFFIX,
    backup_members,
    sidecar_path,
    verify_file,
)
from preskool_dr.core.storage.layout import (
    COMPANION_SUFFIX,
    META_SUFFIX,
    companion_name,
    companion_path,
    meta_path,
    remove_local,
)
from preskool_dr.core.storage.meta import (
    BackupMeta,
    check_meta,
    iso_utc,
    read_meta,
    read_meta_checked,
)
from preskool_dr.core.storage.meta import load_untrusted_json as load_untrusted_json
from preskool_dr.core.storage.meta import write_meta as write_meta
from preskool_dr.core.storage.repository import Repository
from preskool_dr.core.storage.s3store import (
    ARCHIVED_CLASSES,
    HEAD_THREADS,
    S3Object,
    S3Store,
    store_for_url,
)

KINDS = ("daily", "weekly", "pre-deploy", "base")
SOURCES = ("local", "s3", "all")
PART_SUFFIX = ".part"
ATTRIBUTE_SUFFIXES = (SIDECAR_SUFFIX, META_SUFFIX, PART_SUFFIX)
LOGICAL_PREFIX = "preskool-backup-"
BASE_PREFIX = "preskool-base-"
_TIME_FORMAT = "%Y%m%d_%H%M%S"
# Used with fullmatch only: `$` would also match before a trailing newline.
_LOGICAL_RE = re.compile(r"preskool-backup-(\d{8}_\d{6})\.sql\.gz")
_BASE_RE = re.compile(r"preskool-base-(\d{8}_\d{6})(?:\.tar|\.tar\.gz)?")
# A name dated more than this past the clock is never `latest`: a host whose clock is wrong,
# or a name planted in the bucket (20991231_...) to be picked by every restore-test.
CLOCK_SKEW = timedelta(minutes=5)


def _companion_owner(name: str) -> str | None:
    """`preskool-backup-X.dump` -> `preskool-backup-X.sql.gz`, the backup it belongs to."""
    if not name.endswith(COMPANION_SUFFIX):
        return None
    owner = name.removesuffix(COMPANION_SUFFIX) + ".sql.gz"
    return owner if is_logical_name(owner) else None


def backup_name(kind: str, at: datetime) -> str:
    """`preskool-backup-YYYYMMDD_HHMMSS.sql.gz` (UTC) or `preskool-base-...` for kind base."""
    if kind not in KINDS:
        raise ValueError(f"unknown backup kind {kind!r} (one of {', '.join(KINDS)})")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    stamp = at.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{BASE_PREFIX}{stamp}" if kind == "base" else f"{LOGICAL_PREFIX}{stamp}.sql.gz"


def parse_backup_name(name: str) -> datetime | None:
    """The UTC time in a backup name, or None when `name` is not a backup name."""
    match = _LOGICAL_RE.fullmatch(name) or _BASE_RE.fullmatch(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_logical_name(name: str) -> bool:
    return _LOGICAL_RE.fullmatch(name) is not None and parse_backup_name(name) is not None


@dataclass(frozen=True)
class BackupRecord:
    name: str
    kind: str  # daily | weekly | pre-deploy | base | unknown
    time: datetime  # UTC, from the name
    size: int | None
    local_path: Path | None
    s3_url: str | None
    storage_class: str | None  # of the S3 copy
    restore_state: str | None  # of an archived S3 copy
    has_md5: bool
    meta: BackupMeta | None = None
    has_part: bool = False  # an interrupted download (`.part`) sits in BACKUP_DIR
    has_custom: bool = False  # a custom-format companion (`.dump`) sits beside it
    bad: str | None = None  # why its S3 objects are refused (never downloaded)
    meta_error: str | None = None  # why its .meta.json could not be used

    @property
    def locations(self) -> list[str]:
        places = []
        if self.local_path is not None:
            places.append("local")
        if self.s3_url is not None:
            places.append("s3")
        return places

    @property
    def archived(self) -> bool:
        return self.storage_class in ARCHIVED_CLASSES

    @property
    def future(self) -> bool:
        """Dated (by its name) beyond CLOCK_SKEW from now: not to be trusted as the newest."""
        return self.time > datetime.now(UTC) + CLOCK_SKEW

    @property
    def needs_restore(self) -> bool:
        """Only in S3 and archived (GLACIER/DEEP_ARCHIVE) without a completed restore."""
        return self.local_path is None and self.archived and self.restore_state != "available"

    def to_json(self) -> dict[str, Any]:
        """The `list --json` record: name, kind, time (ISO-8601 UTC), size, locations,
        storage_class, has_md5, restore_state, local_path, s3_url, future (dated past the
        clock: `latest` skips it)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "time": iso_utc(self.time),
            "size": self.size,
            "locations": self.locations,
            "storage_class": self.storage_class,
            "has_md5": self.has_md5,
            "restore_state": self.restore_state,
            "needs_restore": self.needs_restore,
            "local_path": str(self.local_path) if self.local_path is not None else None,
            "s3_url": self.s3_url,
            "md5": self.meta.md5 if self.meta is not None else None,
            "has_part": self.has_part,
            "has_custom": self.has_custom,
            "bad": self.bad,
            "meta_error": self.meta_error,
            "future": self.future,
        }


def _kind(name: str, meta: BackupMeta | None) -> str:
    if meta is not None and meta.kind in KINDS:
        return meta.kind
    return "base" if name.startswith(BASE_PREFIX) else "unknown"


def _split_attribute(name: str) -> tuple[str, str] | None:
    """`F.md5` -> (F, ".md5") when F is a backup name."""
    for suffix in ATTRIBUTE_SUFFIXES:
        if name.endswith(suffix) and parse_backup_name(name[: -len(suffix)]):
            return name[: -len(suffix)], suffix
    return None


# ---------------------------------------------------------------- local


def _local_record(path: Path) -> BackupRecord:
    """A record for a backup file or folder that exists (any name: explicit paths count)."""
    name = path.name
    meta, meta_error = read_meta_checked(path)
    members = backup_members(path)
    try:
        size = sum(m.stat().st_size for m in members)
        at = parse_backup_name(name) or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror or exc}") from None
    return BackupRecord(
        name=name,
        kind=_kind(name, meta),
        time=at,
        size=size,
        local_path=path,
        s3_url=None,
        storage_class=None,
        restore_state=None,
        has_md5=bool(members) and all(sidecar_path(m).is_file() for m in members),
        meta=meta,
        has_custom=name.endswith(".sql.gz") and companion_path(path).is_file(),
        meta_error=meta_error,
    )


def _scan_local(directory: Path) -> tuple[dict[str, BackupRecord], set[str]]:
    """Records in BACKUP_DIR, and the names that have a `.part` (interrupted download)."""
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise NotFoundError(
            f"backup directory {directory} does not exist; set BACKUP_DIR (or backups.dir in "
            "runbook.yaml) to where the backups are, or create it"
        ) from None
    except OSError as exc:
        raise DrError(
            f"cannot read backup directory {directory}: {exc.strerror or exc}; run as the "
            "backup user or fix its permissions"
        ) from None
    records: dict[str, BackupRecord] = {}
    parts: set[str] = set()
    for entry in entries:
        if parse_backup_name(entry):
            records[entry] = _local_record(directory / entry)
        elif (attribute := _split_attribute(entry)) and attribute[1] == PART_SUFFIX:
            parts.add(attribute[0])
    return records, parts


# ---------------------------------------------------------------- S3


@dataclass
class _S3Group:
    """The objects of one S3 backup: itself (or a folder's members) and its attributes."""

    main: S3Object | None = None
    members: list[S3Object] = field(default_factory=list)
    attributes: set[str] = field(default_factory=set)
    bad: str | None = None  # a member whose key is not a safe path below the folder

    def add_member(self, obj: S3Object, relative: str) -> None:
        """A folder backup's member, `relative` to the folder; one whose name could land
        outside the folder once downloaded makes the whole backup bad."""
        self.members.append(obj)
        problem = name_problem(relative)
        if problem is not None and self.bad is None:
            self.bad = (
                f"its S3 object {obj.key!r} cannot be saved inside the backup's folder: {problem}"
            )

    def data_objects(self) -> list[S3Object]:
        if self.main is not None:
            return [self.main]
        return [m for m in self.members if not m.key.endswith((SIDECAR_SUFFIX, META_SUFFIX))]

    def folder_has_md5(self) -> bool:
        keys = {m.key for m in self.members}
        data = self.data_objects()
        return bool(data) and all(m.key + SIDECAR_SUFFIX in keys for m in data)


def _group_s3(store: S3Store, objects: Iterable[S3Object]) -> dict[str, _S3Group]:
    groups: dict[str, _S3Group] = {}
    for obj in objects:
        first, _, rest = store.name_of(obj.key).partition("/")
        if rest:
            # A folder backup's member (e.g. base.tar.gz inside preskool-base-...).
            if parse_backup_name(first):
                groups.setdefault(first, _S3Group()).add_member(obj, rest)
        elif parse_backup_name(first):
            groups.setdefault(first, _S3Group()).main = obj
        elif owner := _companion_owner(first):
            groups.setdefault(owner, _S3Group()).attributes.add(COMPANION_SUFFIX)
        elif attribute := _split_attribute(first):
            groups.setdefault(attribute[0], _S3Group()).attributes.add(attribute[1])
    return {name: group for name, group in groups.items() if group.data_objects()}


def _s3_record(
    store: S3Store,
    name: str,
    group: _S3Group,
    meta: BackupMeta | None,
    meta_error: str | None = None,
) -> BackupRecord:
    data = group.data_objects()
    archived = [o for o in data if o.storage_class in ARCHIVED_CLASSES]
    # A folder is only as available as its least-restored member.
    state_source = next((o for o in archived if o.needs_restore), archived[0] if archived else None)
    at = parse_backup_name(name) or max(o.last_modified for o in data)
    return BackupRecord(
        name=name,
        kind=_kind(name, meta),
        time=at,
        size=sum(o.size for o in data),
        local_path=None,
        s3_url=store.url(name),
        storage_class=(state_source or data[0]).storage_class,
        restore_state=state_source.restore_state if state_source else None,
        has_md5=SIDECAR_SUFFIX in group.attributes
        if group.main is not None
        else group.folder_has_md5(),
        meta=meta,
        has_custom=COMPANION_SUFFIX in group.attributes,
        # A folder's members are what gets downloaded; beside a single object they are not.
        bad=group.bad if group.main is None else None,
        meta_error=meta_error,
    )


def _fetch_metas(
    store: S3Store, names: list[str]
) -> dict[str, tuple[BackupMeta | None, str | None]]:
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=HEAD_THREADS) as pool:
        blobs = pool.map(lambda n: store.get_bytes(n + META_SUFFIX), names)
        return {name: check_meta(blob) for name, blob in zip(names, blobs, strict=True)}


def _scan_s3(store: S3Store, skip_meta: set[str]) -> dict[str, BackupRecord]:
    groups = _group_s3(store, store.list_objects())
    # The kind lives in the meta object; fetch only the ones that exist and are not local.
    wanted = sorted(
        n for n, g in groups.items() if META_SUFFIX in g.attributes and n not in skip_meta
    )
    metas = _fetch_metas(store, wanted)
    return {
        name: _s3_record(store, name, group, *metas.get(name, (None, None)))
        for name, group in groups.items()
    }


def _merge(local: BackupRecord | None, remote: BackupRecord | None) -> BackupRecord:
    if local is None:
        assert remote is not None
        return remote
    if remote is None:
        return local
    meta = local.meta or remote.meta
    return replace(
        local,
        kind=_kind(local.name, meta),
        s3_url=remote.s3_url,
        storage_class=remote.storage_class,
        restore_state=remote.restore_state,
        has_md5=local.has_md5 or remote.has_md5,
        meta=meta,
        has_custom=local.has_custom or remote.has_custom,
        meta_error=None if meta is not None else local.meta_error or remote.meta_error,
    )


def list_backups(
    config: Config, source: str = "all", warnings: list[str] | None = None
) -> list[BackupRecord]:
    """source: local | s3 | all. Newest first. No bucket configured: S3 is skipped.

    With `warnings` given and source "all", a failing side (an unreachable bucket, a missing
    BACKUP_DIR while a bucket is configured) is reported there and the other side still listed:
    in an outage the operator needs whatever can be found."""
    if source not in SOURCES:
        raise UsageError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    repo = Repository.from_config(config)
    store = repo.s3 if repo.has_s3 or source == "s3" else None  # s3 without one: UsageError
    tolerant = source == "all" and warnings is not None
    local: dict[str, BackupRecord] = {}
    parts: set[str] = set()
    if source in ("local", "all"):
        try:
            local, parts = _scan_local(config.backups.dir)
        except NotFoundError as exc:
            # A fresh DR host has no BACKUP_DIR yet; its backups are in the bucket.
            if source == "local" or store is None:
                raise
            if warnings is not None:
                warnings.append(str(exc))
        except DrError as exc:
            if not tolerant or store is None:
                raise
            assert warnings is not None
            warnings.append(str(exc))
    remote: dict[str, BackupRecord] = {}
    if store is not None and source in ("s3", "all"):
        try:
            remote = _scan_s3(store, skip_meta={n for n, r in local.items() if r.meta})
        except DrError as exc:
            if not tolerant:
                raise
            assert warnings is not None
            warnings.append(str(exc))
    records = [
        replace(_merge(local.get(name), remote.get(name)), has_part=name in parts)
        for name in local.keys() | remote.keys()
    ]
    return sorted(records, key=lambda r: (r.time, r.name), reverse=True)


# ---------------------------------------------------------------- resolve and fetch


def _s3_group_for(store: S3Store, name: str) -> _S3Group:
    """The objects behind one S3 backup name (a single object or a folder); NotFoundError."""
    try:
        main = store.head(name)
    except NotFoundError as missing:
        folder = store.folder(name)
        members = folder.list_objects()
        if not members:
            raise missing from None
        group = _S3Group()
        for obj in members:
            group.add_member(obj, folder.name_of(obj.key))
        return group
    group = _S3Group(main=main)
    if store.exists(name + SIDECAR_SUFFIX):
        group.attributes.add(SIDECAR_SUFFIX)
    if is_logical_name(name) and store.exists(companion_name(name)):
        group.attributes.add(COMPANION_SUFFIX)
    return group


def _s3_lookup(config: Config, store: S3Store, name: str) -> BackupRecord:
    group = _s3_group_for(store, name)
    meta, meta_error = check_meta(store.get_bytes(name + META_SUFFIX))
    record = _s3_record(store, name, group, meta, meta_error)
    return replace(record, has_part=(config.backups.dir / (name + PART_SUFFIX)).exists())


def resolve_backup(config: Config, spec: str) -> BackupRecord:
    """BACKUP argument: a path, a name in BACKUP_DIR, s3://bucket/key, or `latest`.
    NotFoundError (exit 2) when it does not exist."""
    spec = spec.strip()
    if not spec:
        raise UsageError("BACKUP is empty: give a path, a name in BACKUP_DIR, s3://... or latest")
    repo = Repository.from_config(config)
    where = repo.where("or")
    if spec == "latest":
        warnings: list[str] = []
        logical = [
            r
            for r in list_backups(config, "all", warnings)
            if is_logical_name(r.name) and r.bad is None
        ]
        future = [r.name for r in logical if r.future]
        logical = [r for r in logical if not r.future]
        if future:
            warnings.append(
                f"{len(future)} backup(s) dated in the future skipped ({future[0]}): check the "
                "clock of the host that made them, or who wrote them"
            )
        if not logical:
            reasons = f" ({'; '.join(warnings)})" if warnings else ""
            raise NotFoundError(
                f"no logical backup found in {where}{reasons}; run `preskool-dr backup` or "
                "check BACKUP_DIR/S3_BUCKET"
            )
        return logical[0]
    if spec.startswith("s3://"):
        try:
            store, name = store_for_url(spec.rstrip("/"))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return _s3_lookup(config, store, name)
    if "/" in spec or spec.startswith(("~", ".")):
        path = Path(spec).expanduser()
        if not path.exists():
            raise NotFoundError(f"{spec}: no such backup file; run `preskool-dr list`")
        return _local_record(path.resolve())
    in_dir = config.backups.dir / spec
    if in_dir.exists():
        return _local_record(in_dir)
    if repo.has_s3:
        try:
            return _s3_lookup(config, repo.s3, spec)
        except NotFoundError:
            pass
    if Path(spec).exists():
        return _local_record(Path(spec).resolve())
    raise NotFoundError(f"backup {spec!r} not found in {where}; run `preskool-dr list`")


def request_restore(record: BackupRecord, days: int = 7) -> str:
    """Ask S3 to restore an archived backup (and any archived sidecar/meta beside it);
    returns the operator's line about the backup itself."""
    if record.s3_url is None:
        raise UsageError(f"{record.name} is not in S3: no restore needed")
    store, name = store_for_url(record.s3_url)
    group = _s3_group_for(store, name)
    if group.main is not None:
        message = store.request_restore(name, days)
    else:
        folder = store.folder(name)
        messages = [folder.request_restore(folder.name_of(o.key), days) for o in group.members]
        message = messages[0]
    for suffix in (SIDECAR_SUFFIX, META_SUFFIX):
        try:
            if store.head(name + suffix).storage_class in ARCHIVED_CLASSES:
                store.request_restore(name + suffix, days)
        except NotFoundError:
            continue
    return message


def ensure_dir(directory: Path) -> None:
    """mkdir -p with mode 0700 for every folder made (backups hold the whole database), with
    the fix in the error when BACKUP_DIR cannot be created."""
    try:
        ensure_private_dir(directory)
    except OSError as exc:
        raise DrError(
            f"cannot create {directory}: {exc.strerror or exc}; set BACKUP_DIR to a writable folder"
        ) from None


def _save_small(store: S3Store, name: str, dest: Path) -> None:
    data = store.get_bytes(name)
    if data is not None:
        try:
            atomic_write(dest, data)
        except OSError as exc:
            raise DrError(f"cannot write {dest}: {exc.strerror or exc}") from None


def fetch_backup(
    config: Config,
    record: BackupRecord,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "download",
    cancel: threading.Event | None = None,
    with_companion: bool = False,
) -> Path:
    """Make the backup, its sidecar and meta local in BACKUP_DIR (download when only in S3,
    resumable); returns the local path. ArchivedError when a Glacier restore is needed.
    `with_companion` also fetches a logical backup's custom-format companion (`.dump` and
    its `.md5`) when S3 has one; a companion that cannot be fetched is reported and left
    out (the plain backup restores without it), never a failure of the fetch."""
    if record.local_path is not None:
        return record.local_path
    if record.s3_url is None:
        raise NotFoundError(f"{record.name} has no local copy and no S3 copy")
    store, name = store_for_url(record.s3_url)
    group = _s3_group_for(store, name)
    if group.bad is not None and group.main is None:
        raise UnsafeNameError(
            f"{record.s3_url} is refused: {group.bad}; nothing was downloaded. Someone with "
            "write access to the bucket may have put it there: check the bucket, and use "
            "another backup (`preskool-dr list`)"
        )
    for obj in group.data_objects():
        if obj.needs_restore:
            raise store.archived_error(store.name_of(obj.key), obj)
    directory = config.backups.dir
    dest = inside(directory, name)  # every local path made from a remote name: see paths
    ensure_dir(directory)
    if group.main is not None:
        _save_small(store, name + SIDECAR_SUFFIX, sidecar_path(dest))
        _save_small(store, name + META_SUFFIX, meta_path(dest))
        store.download(name, dest, on_event=on_event, step_id=step_id, cancel=cancel)
        if with_companion and COMPANION_SUFFIX in group.attributes:
            _fetch_companion(store, dest, on_event, step_id, cancel)
        return dest
    folder = store.folder(name)
    for obj in group.members:
        member = folder.name_of(obj.key)
        target = inside(dest, member)
        ensure_dir(target.parent)
        folder.download(member, target, on_event=on_event, step_id=step_id, cancel=cancel)
    _save_small(store, name + META_SUFFIX, meta_path(dest))
    return dest


def _fetch_companion(
    store: S3Store,
    dest: Path,
    on_event: EventSink,
    step_id: str,
    cancel: threading.Event | None,
) -> None:
    """Download the companion of `dest` beside it (resumable like the backup) when the
    backup's meta records its MD5, and keep it only when it has that MD5 (its own sidecar
    comes from the same bucket and proves nothing); otherwise say so and leave no
    companion under its final name."""
    companion = inside(dest.parent, companion_name(dest.name))
    meta = read_meta(dest)
    expected = meta.companion_md5 if meta is not None else None
    if expected is None:
        on_event(
            Notice(
                "warn",
                f"custom-format companion {companion.name} not downloaded: {dest.name} "
                "records no MD5 for it in its .meta.json (a backup from an older version); "
                "the plain backup will be restored",
                step_id,
            )
        )
        return
    try:
        _save_small(store, companion.name + SIDECAR_SUFFIX, sidecar_path(companion))
        store.download(companion.name, companion, on_event=on_event, step_id=step_id, cancel=cancel)
        actual = verify_file(companion, expected, check_gzip=False, cancel=cancel).actual_md5
        if actual != expected:
            raise DrError(f"its MD5 {actual} is not the {expected} recorded in {dest.name}'s meta")
    except Cancelled:
        raise
    except DrError as exc:  # archived, gone, a broken transfer: the plain backup still restores
        for path in (companion, sidecar_path(companion)):
            path.unlink(missing_ok=True)
        on_event(
            Notice(
                "warn",
                f"custom-format companion {companion.name} not downloaded ({exc}); "
                "the plain backup will be restored",
                step_id,
            )
        )


def discard_download(dest: Path) -> None:
    """Remove what `fetch_backup` put in BACKUP_DIR for `dest`: the file (or folder), its
    sidecar, meta and companion. For a downloaded copy that failed verification: under its
    final name the next run would take it for a good local backup and never fetch the S3
    original again; moved back to `.part` it would be resumed as complete and renamed
    straight back. Removed, the next fetch starts from byte 0. The S3 objects stay."""
    remove_local(dest)
