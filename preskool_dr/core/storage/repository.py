"""Where backups live: a local folder and, when a bucket is configured, a prefix in S3.

The one place that decides "local, S3 or both": whether a bucket is set, whether a kind
goes to S3 and in which storage class, how a backup is put there (its small files in
STANDARD before the data they describe), read back, and deleted once it expires on each
side. Logical and base backups, the WAL archive (its own folder and prefix) and the
catalog use it; S3Store stays the low-level client. S3Store (and so boto3) is imported
only when a bucket is used: `wal-push` without one starts without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from preskool_dr.core.base.errors import DrError, NotFoundError, UsageError
from preskool_dr.core.base.events import EventSink, Notice, ignore_events, utcnow
from preskool_dr.core.base.settings import Config, Retention
from preskool_dr.core.storage.checksum import backup_members, sidecar_path
from preskool_dr.core.storage.layout import (
    companion_path,
    meta_path,
    remove_local,
    with_attributes,
)

if TYPE_CHECKING:
    from preskool_dr.core.storage.s3store import ObjectLock, S3Store


class Dated(Protocol):
    """What retention reads of a listed backup (a catalog record is one)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def time(self) -> datetime: ...


@dataclass(frozen=True)
class Kept:
    """A backup retention would delete from S3 but Object Lock still protects."""

    name: str
    mode: str
    until: datetime


@dataclass(frozen=True)
class Upload:
    """One file to put: `name` below the prefix; data goes in the kind's storage class with
    progress, the small files beside it in STANDARD without."""

    path: Path
    name: str
    data: bool = False


class Repository:
    """A folder and an optional bucket + prefix, with the retention policy of each kind."""

    def __init__(
        self,
        directory: Path,
        bucket: str | None = None,
        prefix: str = "preskool-backups/",
        retention: Mapping[str, Retention] | None = None,
        object_lock_mode: str | None = None,
    ) -> None:
        self.directory = directory
        self.bucket = bucket or None
        self.prefix = prefix
        self.retention = dict(retention or {})
        self.object_lock_mode = object_lock_mode  # GOVERNANCE | COMPLIANCE on every upload
        self._s3: S3Store | None = None

    @classmethod
    def from_config(cls, config: Config) -> Repository:
        backups = config.backups
        lock = backups.object_lock.mode if backups.object_lock is not None else None
        return cls(backups.dir, backups.s3_bucket, backups.s3_prefix, backups.retention, lock)

    # ------------------------------------------------------------ where

    @property
    def has_s3(self) -> bool:
        return self.bucket is not None

    @property
    def s3(self) -> S3Store:
        """The client for the bucket; UsageError when none is configured."""
        if self.bucket is None:
            raise UsageError("no S3 bucket configured: set S3_BUCKET (or backups.s3_bucket)")
        if self._s3 is None:
            from preskool_dr.core.storage.s3store import S3Store  # boto3 only when used

            self._s3 = S3Store(self.bucket, self.prefix)
        return self._s3

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def where(self, joiner: str) -> str:
        """The folder, and (after `joiner`: "and", "or") the bucket when one is set."""
        return str(self.directory) + (f" {joiner} {self.url('')}" if self.has_s3 else "")

    # ------------------------------------------------------------ policy

    def keeps_in_s3(self, kind: str) -> bool:
        """Whether backups of `kind` go to S3 (when a bucket is configured).

        A kind listed under backups.retention without `s3_days` is local-only (the seed keeps
        pre-deployment dumps "Local"); kinds not listed there are uploaded and kept.
        """
        policy = self.retention.get(kind)
        return policy is None or policy.s3_days is not None

    def storage_class(self, kind: str) -> str:
        return self.retention.get(kind, Retention()).storage_class

    def retention_days(self, kind: str, side: str) -> int | None:
        """How long backups of `kind` are kept on `side`; None: kept for ever (or no S3)."""
        policy = self.retention.get(kind)
        if policy is None or (side == "s3" and not self.has_s3):
            return None
        return policy.local_days if side == "local" else policy.s3_days

    def uploads(
        self, kind: str, *, upload: bool, local_only: str, on_event: EventSink, step_id: str
    ) -> bool:
        """Whether a new backup of `kind` goes to S3. When it does not although a bucket is
        set, a notice says why: `--no-upload`, or `local_only` for a local-only kind."""
        if not self.has_s3:
            return False
        if not upload:
            on_event(Notice("info", "S3 upload skipped (--no-upload)", step_id))
            return False
        if not self.keeps_in_s3(kind):
            on_event(Notice("info", f"S3 upload skipped: {local_only}", step_id))
            return False
        return True

    def lock_for(self, kind: str, now: datetime) -> ObjectLock | None:
        """The Object Lock an upload of `kind` at `now` carries: the configured mode, until
        `now` + the kind's `s3_days`. None without object_lock, or for a kind kept for ever
        (no `s3_days`: there is no date to lock it until)."""
        days = self.retention_days(kind, "s3")
        if self.object_lock_mode is None or days is None:
            return None
        from preskool_dr.core.storage.s3store import ObjectLock

        return ObjectLock(self.object_lock_mode, now + timedelta(days=days))

    # ------------------------------------------------------------ put and get

    def put(self, backup: Path, kind: str, *, on_event: EventSink, step_id: str) -> tuple[str, ...]:
        """Upload a verified local backup (a file, or a base backup's folder) and its files
        in the order `_uploads` gives; returns their URLs. DrError saying that the local
        backup is kept when anything fails."""
        folder = backup.is_dir()
        shown = self.url(f"{backup.name}/" if folder else backup.name)
        storage_class = self.storage_class(kind)
        lock = self.lock_for(kind, utcnow())
        locked = f", Object Lock {lock.mode} until {_iso(lock.until)}" if lock else ""
        on_event(Notice("info", f"Uploading to {shown} ({storage_class}{locked})...", step_id))
        if self.object_lock_mode is not None and lock is None:
            on_event(
                Notice(
                    "warn",
                    f"{kind} backups have no backups.retention.{kind}.s3_days: uploaded "
                    "without Object Lock (there is no date to lock them until)",
                    step_id,
                )
            )
        files = _uploads(backup)
        try:
            for item in files:
                self.s3.upload(
                    item.path,
                    item.name,
                    storage_class=storage_class if item.data else "STANDARD",
                    on_event=on_event if item.data else ignore_events,
                    step_id=step_id,
                    lock=lock,
                )
        except DrError as exc:
            # The store's message already says what to fix; the operator also needs to know
            # that the verified local copy survives.
            what = "local base backup" if folder else "local backup"
            hint = (
                "; backups.object_lock needs a bucket created with Object Lock enabled"
                if lock is not None and "objectlock" in str(exc).lower()
                else ""
            )
            raise DrError(
                f"S3 upload failed: {exc} (the {what} {backup.name} is kept){hint}"
            ) from None
        extras = "+ .meta.json" if folder else "+ .md5, .meta.json"
        if any(item.path == companion_path(backup) for item in files):
            extras += f", {companion_path(backup).name} + .md5"
        on_event(Notice("ok", f"Uploaded to S3: {shown} ({extras})", step_id))
        return tuple(self.url(item.name) for item in files)

    def get_bytes(self, name: str) -> bytes | None:
        """A small object (a sidecar, a meta) from S3; None when it is not there."""
        return self.s3.get_bytes(name)

    # ------------------------------------------------------------ retain

    def s3_lock(self, name: str, now: datetime) -> Kept | None:
        """The Object Lock that still protects backup `name` in S3 at `now` (its file, or
        any member of its folder), or None. Deleting a locked object in a versioned bucket
        would only hide it behind a delete marker: retention never tries."""
        try:
            heads = [self.s3.head(name)]
        except NotFoundError:  # a folder (base backup), or gone already
            folder = self.s3.folder(name)
            heads = [
                folder.head(folder.name_of(obj.key))
                for obj in folder.list_objects(with_restore_state=False)
            ]
        for head in heads:
            if head.locked_at(now) and head.lock_mode and head.lock_until:
                return Kept(name, head.lock_mode, head.lock_until)
        return None

    def remove(self, name: str, side: str) -> None:
        """Delete backup `name` on `side`: its file or folder first, its meta last, so an
        interrupted deletion never leaves a backup whose kind can no longer be read."""
        if side == "local":
            remove_local(self.directory / name)
            return
        self.s3.delete(name)  # deleting a key that is not there is not an error
        folder = self.s3.folder(name)
        for obj in folder.list_objects(with_restore_state=False):
            folder.delete(folder.name_of(obj.key))
        for path in with_attributes(Path(name))[1:]:  # sidecar, companion, ..., meta last
            self.s3.delete(path.name)

    def retain(
        self,
        kind: str,
        side: str,
        *,
        keep: str,
        now: datetime,
        listing: Callable[[str], Iterable[Dated]],
        on_event: EventSink = ignore_events,
        step_id: str = "backup",
    ) -> int:
        """Delete the backups of `kind` on `side` older than their retention there; returns
        how many. `listing(side)` lists what is there; only backups whose meta names `kind`
        go (one of unknown kind never does), and never `keep`. In S3 a backup still under
        Object Lock is kept, and a notice says until when."""
        days = self.retention_days(kind, side)
        if days is None:
            return 0
        cutoff = now - timedelta(days=days)
        expired = [
            r for r in listing(side) if r.kind == kind and r.name != keep and r.time < cutoff
        ]
        deleted = 0
        for record in expired:
            if side == "s3" and (kept := self.s3_lock(record.name, max(now, utcnow()))):
                on_event(
                    Notice(
                        "info",
                        f"Kept {self.url(kept.name)}: Object Lock {kept.mode} until "
                        f"{_iso(kept.until)} (retention deletes it after that)",
                        step_id,
                    )
                )
                continue
            self.remove(record.name, side)
            deleted += 1
        return deleted


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at.utcoffset() is not None else at.isoformat()


def _uploads(backup: Path) -> list[Upload]:
    """What `put` uploads, in order. A sidecar goes before the data it describes, and always
    in STANDARD: once the data is in S3 its checksum can be read without a Glacier restore.
    A logical backup's meta goes first too (its kind can be read at once); a base backup's
    meta goes last: in S3 a folder without its meta is an unfinished upload, which `pitr`
    does not use."""
    if backup.is_dir():
        files = []
        for member in backup_members(backup):
            sidecar = sidecar_path(member)
            files.append(Upload(sidecar, f"{backup.name}/{sidecar.name}"))
            files.append(Upload(member, f"{backup.name}/{member.name}", data=True))
        return [*files, Upload(meta_path(backup), meta_path(backup).name)]
    small = [sidecar_path(backup), meta_path(backup)]
    data = [backup]
    companion = companion_path(backup)
    if companion.is_file():
        small.append(sidecar_path(companion))
        data.append(companion)
    return [Upload(p, p.name) for p in small] + [Upload(p, p.name, data=True) for p in data]
