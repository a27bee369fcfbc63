"""The backup catalog: local BACKUP_DIR + S3, merged by name into BackupRecords, newest
first; and the BACKUP argument (a path, a name, s3://... or `latest`) resolved to one.
Backup names are in backup_names; downloads in fetch.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preskool_dr.core.base.errors import DrError, NotFoundError, UsageError
from preskool_dr.core.base.settings import Config
from preskool_dr.core.storage.backup_names import (
    BASE_PREFIX,
    KINDS,
    PART_SUFFIX,
    is_logical_name,
    parse_backup_name,
    split_attribute,
)
from preskool_dr.core.storage.checksum import SIDECAR_SUFFIX, backup_members, sidecar_path
from preskool_dr.core.storage.layout import COMPANION_SUFFIX, META_SUFFIX, companion_path
from preskool_dr.core.storage.meta import BackupMeta, check_meta, iso_utc, read_meta_checked
from preskool_dr.core.storage.repository import Repository
from preskool_dr.core.storage.s3_classes import ARCHIVED_CLASSES, HEAD_THREADS
from preskool_dr.core.storage.s3_groups import S3Group, group_s3, s3_group_for

if TYPE_CHECKING:  # boto3 loads only when S3 is listed (`check`, `list --source local`)
    from preskool_dr.core.storage.s3store import S3Store

SOURCES = ("local", "s3", "all")
# A name dated more than this past the clock is never `latest`: a host whose clock is wrong,
# or a name planted in the bucket (20991231_...) to be picked by every restore-test.
CLOCK_SKEW = timedelta(minutes=5)


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
    # S3 Object Lock of the S3 copy (read only when backups.object_lock is configured)
    lock_mode: str | None = None
    lock_until: datetime | None = None

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
            "lock_mode": self.lock_mode,
            "lock_until": iso_utc(self.lock_until) if self.lock_until is not None else None,
            "locked": self.lock_until is not None and self.lock_until > datetime.now(UTC),
        }


def _kind(name: str, meta: BackupMeta | None) -> str:
    if meta is not None and meta.kind in KINDS:
        return meta.kind
    return "base" if name.startswith(BASE_PREFIX) else "unknown"


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
        has_custom=is_logical_name(name) and companion_path(path).is_file(),
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
        elif (attribute := split_attribute(entry)) and attribute[1] == PART_SUFFIX:
            parts.add(attribute[0])
    return records, parts


# ---------------------------------------------------------------- S3


def _s3_record(
    store: S3Store,
    name: str,
    group: S3Group,
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


def _locks(store: S3Store, groups: dict[str, S3Group]) -> dict[str, tuple[str, datetime]]:
    """The Object Lock of each backup's data (a listing does not carry it: one HEAD each)."""
    names = [n for n, g in groups.items() if g.main is not None]
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=HEAD_THREADS) as pool:
        heads = pool.map(store.head, names)
        return {
            name: (head.lock_mode, head.lock_until)
            for name, head in zip(names, heads, strict=True)
            if head.lock_mode is not None and head.lock_until is not None
        }


def _scan_s3(
    store: S3Store, skip_meta: set[str], *, with_locks: bool = False
) -> dict[str, BackupRecord]:
    groups = group_s3(store, store.list_objects())
    # The kind lives in the meta object; fetch only the ones that exist and are not local.
    wanted = sorted(
        n for n, g in groups.items() if META_SUFFIX in g.attributes and n not in skip_meta
    )
    metas = _fetch_metas(store, wanted)
    locks = _locks(store, groups) if with_locks else {}
    records = {}
    for name, group in groups.items():
        record = _s3_record(store, name, group, *metas.get(name, (None, None)))
        if name in locks:
            record = replace(record, lock_mode=locks[name][0], lock_until=locks[name][1])
        records[name] = record
    return records


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
        lock_mode=remote.lock_mode,
        lock_until=remote.lock_until,
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
            remote = _scan_s3(
                store,
                skip_meta={n for n, r in local.items() if r.meta},
                with_locks=config.backups.object_lock is not None,
            )
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


# ---------------------------------------------------------------- resolve


def _s3_lookup(config: Config, store: S3Store, name: str) -> BackupRecord:
    group = s3_group_for(store, name)
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
            from preskool_dr.core.storage.s3store import store_for_url

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
        with contextlib.suppress(NotFoundError):
            return _s3_lookup(config, repo.s3, spec)
    # a bare name is never looked up in the current folder (anyone's /tmp, say): a file
    # there is named as a path (./NAME), on purpose
    hint = f" (for the file in this folder, say ./{spec})" if Path(spec).exists() else ""
    raise NotFoundError(f"backup {spec!r} not found in {where}{hint}; run `preskool-dr list`")
