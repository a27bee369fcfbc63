"""What the files of one backup are called, locally and in S3: the backup (a file, or a
folder of files for a base backup), its md5sum sidecar, its meta, and the custom-format
companion a logical backup may have beside it (with its own sidecar)."""

from __future__ import annotations

import shutil
from pathlib import Path

from preskool_dr.core.storage.sidecar import sidecar_path

META_SUFFIX = ".meta.json"
COMPANION_SUFFIX = ".dump"  # `backup --format custom`: pg_dump -Fc beside the .sql.gz


def meta_path(backup: Path) -> Path:
    """`F.meta.json` beside `F`."""
    return backup.with_name(backup.name + META_SUFFIX)


def companion_name(name: str) -> str:
    """`preskool-backup-X.dump` for `preskool-backup-X.sql.gz` (`X.dump.age` for an
    encrypted `X.sql.gz.age`)."""
    if name.endswith(".sql.gz.age"):
        return name.removesuffix(".sql.gz.age") + COMPANION_SUFFIX + ".age"
    return name.removesuffix(".sql.gz") + COMPANION_SUFFIX


def companion_path(backup: Path) -> Path:
    """`preskool-backup-X.dump` (custom format, its own `.md5`) beside `...-X.sql.gz`."""
    return backup.with_name(companion_name(backup.name))


def with_attributes(backup: Path) -> tuple[Path, ...]:
    """The backup and every file that belongs to it, its meta last: deleted in this order,
    an interrupted deletion never leaves a backup whose kind can no longer be read."""
    companion = companion_path(backup)
    return (
        backup,
        sidecar_path(backup),
        companion,
        sidecar_path(companion),
        meta_path(backup),
    )


def remove_local(backup: Path) -> None:
    """Delete a backup in a folder (its file, or its folder of files) and every file that
    belongs to it, its meta last. What is already gone is no error."""
    if backup.is_dir():
        shutil.rmtree(backup, ignore_errors=True)
    for path in with_attributes(backup):
        if not path.is_dir():
            path.unlink(missing_ok=True)
