"""Backup names: `preskool-backup-YYYYMMDD_HHMMSS.sql.gz` (logical; the kind daily/weekly/
pre-deploy is recorded in `<name>.meta.json`) and `preskool-base-YYYYMMDD_HHMMSS...` (kind
base; a file or a folder of files, each with its own sidecar). Only names that parse are
backups: `.md5`, `.meta.json` and `.part` files are attributes of the backup they belong to.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from preskool_dr.core.base.age import AGE_SUFFIX
from preskool_dr.core.storage.layout import COMPANION_SUFFIX, META_SUFFIX
from preskool_dr.core.storage.sidecar import SIDECAR_SUFFIX

KINDS = ("daily", "weekly", "pre-deploy", "base")
PART_SUFFIX = ".part"
ATTRIBUTE_SUFFIXES = (SIDECAR_SUFFIX, META_SUFFIX, PART_SUFFIX)
LOGICAL_PREFIX = "preskool-backup-"
BASE_PREFIX = "preskool-base-"
_TIME_FORMAT = "%Y%m%d_%H%M%S"
# Used with fullmatch only: `$` would also match before a trailing newline.
# `.sql.gz.age`: the same, encrypted with age (core/base/age.py)
_LOGICAL_RE = re.compile(r"preskool-backup-(\d{8}_\d{6})\.sql\.gz(?:\.age)?")
_BASE_RE = re.compile(r"preskool-base-(\d{8}_\d{6})(?:\.tar|\.tar\.gz)?")


def backup_name(kind: str, at: datetime, *, encrypted: bool = False) -> str:
    """`preskool-backup-YYYYMMDD_HHMMSS.sql.gz` (UTC; `.sql.gz.age` when `encrypted`) or
    `preskool-base-...` for kind base."""
    if kind not in KINDS:
        raise ValueError(f"unknown backup kind {kind!r} (one of {', '.join(KINDS)})")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    stamp = at.astimezone(UTC).strftime(_TIME_FORMAT)
    if kind == "base":
        return f"{BASE_PREFIX}{stamp}"
    return f"{LOGICAL_PREFIX}{stamp}.sql.gz" + (AGE_SUFFIX if encrypted else "")


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


def companion_owner(name: str) -> str | None:
    """`preskool-backup-X.dump` -> `preskool-backup-X.sql.gz`, the backup it belongs to
    (`X.dump.age` -> `X.sql.gz.age`)."""
    age = name.endswith(COMPANION_SUFFIX + AGE_SUFFIX)
    if age:
        name = name.removesuffix(AGE_SUFFIX)
    if not name.endswith(COMPANION_SUFFIX):
        return None
    owner = name.removesuffix(COMPANION_SUFFIX) + ".sql.gz" + (AGE_SUFFIX if age else "")
    return owner if is_logical_name(owner) else None


def split_attribute(name: str) -> tuple[str, str] | None:
    """`F.md5` -> (F, ".md5") when F is a backup name."""
    for suffix in ATTRIBUTE_SUFFIXES:
        if name.endswith(suffix) and parse_backup_name(name[: -len(suffix)]):
            return name[: -len(suffix)], suffix
    return None
