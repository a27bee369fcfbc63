"""The S3 objects of each backup, grouped by backup name: the backup itself (or a folder's
members) and its attributes (sidecar, meta, companion)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from preskool_dr.core.base.errors import NotFoundError
from preskool_dr.core.base.paths import name_problem
from preskool_dr.core.storage.backup_names import (
    PART_SUFFIX,
    companion_owner,
    is_logical_name,
    parse_backup_name,
    split_attribute,
)
from preskool_dr.core.storage.layout import COMPANION_SUFFIX, META_SUFFIX, companion_name
from preskool_dr.core.storage.sidecar import SIDECAR_SUFFIX

if TYPE_CHECKING:
    from preskool_dr.core.storage.s3store import S3Object, S3Store


@dataclass
class S3Group:
    """The objects of one S3 backup: itself (or a folder's members) and its attributes."""

    main: S3Object | None = None
    members: list[S3Object] = field(default_factory=list)
    attributes: set[str] = field(default_factory=set)
    companion: S3Object | None = None  # a logical backup's custom-format companion
    bad: str | None = None  # a member whose key is not a safe path below the folder

    def add_member(self, obj: S3Object, relative: str) -> None:
        """A folder backup's member, `relative` to the folder; one whose name could land
        outside the folder once downloaded makes the whole backup bad."""
        self.members.append(obj)
        problem = name_problem(relative)
        if problem is None and relative.endswith(PART_SUFFIX):
            problem = (
                f"a name ending in {PART_SUFFIX} is where a download of another is resumed from"
            )
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


def group_s3(store: S3Store, objects: Iterable[S3Object]) -> dict[str, S3Group]:
    groups: dict[str, S3Group] = {}
    for obj in objects:
        first, _, rest = store.name_of(obj.key).partition("/")
        if rest:
            # A folder backup's member (e.g. base.tar.gz inside preskool-base-...).
            if parse_backup_name(first):
                groups.setdefault(first, S3Group()).add_member(obj, rest)
        elif parse_backup_name(first):
            groups.setdefault(first, S3Group()).main = obj
        elif owner := companion_owner(first):
            group = groups.setdefault(owner, S3Group())
            group.attributes.add(COMPANION_SUFFIX)
            group.companion = obj
        elif attribute := split_attribute(first):
            groups.setdefault(attribute[0], S3Group()).attributes.add(attribute[1])
    return {name: group for name, group in groups.items() if group.data_objects()}


def s3_group_for(store: S3Store, name: str) -> S3Group:
    """The objects behind one S3 backup name (a single object or a folder); NotFoundError."""
    try:
        main = store.head(name)
    except NotFoundError as missing:
        folder = store.folder(name)
        members = folder.list_objects()
        if not members:
            raise missing from None
        group = S3Group()
        for obj in members:
            group.add_member(obj, folder.name_of(obj.key))
        return group
    group = S3Group(main=main)
    if store.exists(name + SIDECAR_SUFFIX):
        group.attributes.add(SIDECAR_SUFFIX)
    if is_logical_name(name):
        with contextlib.suppress(NotFoundError):
            group.companion = store.head(companion_name(name))
            group.attributes.add(COMPANION_SUFFIX)
    return group
