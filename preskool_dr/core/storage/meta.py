"""A backup's `.meta.json`: what `backup` records beside it (kind, time, size, MD5, row
counts), written atomically and read as untrusted input: a bucket or a folder may hand us
anything under that name."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.storage.layout import meta_path

META_MAX_BYTES = 1 << 20  # a .meta.json is a few KiB; a bigger one is not ours


@dataclass(frozen=True)
class BackupMeta:
    """`<name>.meta.json`: written by `backup`, uploaded beside the backup."""

    name: str
    kind: str
    created_at: datetime
    database: str
    size: int
    md5: str
    row_counts: dict[str, int] = field(default_factory=dict)
    pg_dump_version: str = ""
    # MD5 of the custom-format companion written with it (`backup --format custom`): the
    # only digest a companion is loaded against (its own sidecar can be replaced with it).
    # None: no companion, or a backup from a version that did not record it.
    companion_md5: str | None = None
    # pg_database_size of the database when it was backed up: what a restore of it needs on
    # the server (core/restore/server_space.py). None: a backup from an older version.
    db_size_bytes: int | None = None
    # encrypted with age (`.sql.gz.age`): `size` and `md5` are those of the encrypted bytes
    encrypted: bool = False

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"companion_md5": self.companion_md5} if self.companion_md5 else {}
        if self.db_size_bytes is not None:
            extra["db_size_bytes"] = self.db_size_bytes
        return {
            **extra,
            "name": self.name,
            "kind": self.kind,
            "created_at": iso_utc(self.created_at),
            "database": self.database,
            "size": self.size,
            "md5": self.md5,
            "row_counts": dict(self.row_counts),
            "pg_dump_version": self.pg_dump_version,
            "encrypted": self.encrypted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupMeta:
        """ValueError (or KeyError/TypeError) when `data` is not a meta record."""
        created = datetime.fromisoformat(str(data["created_at"]))
        counts = data.get("row_counts") or {}
        if not isinstance(counts, dict):
            raise TypeError("row_counts must be a mapping")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
            database=str(data["database"]),
            size=int(data["size"]),
            md5=str(data["md5"]).lower(),  # sidecars are compared in lower case too
            row_counts={str(k): int(v) for k, v in counts.items()},
            pg_dump_version=str(data.get("pg_dump_version") or ""),
            companion_md5=_md5_or_none(data.get("companion_md5")),
            db_size_bytes=_size_or_none(data.get("db_size_bytes")),
            encrypted=data.get("encrypted") is True,
        )


def _md5_or_none(value: Any) -> str | None:
    """A recorded digest, or None when there is none or it is not one (never trusted)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{32}", value):
        return value.lower()
    return None


def _size_or_none(value: Any) -> int | None:
    """A recorded byte count, or None when there is none (an older meta) or it is not one."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def iso_utc(at: datetime) -> str:
    """ISO-8601 in UTC with a `Z`, the form scripts and `list --json` rely on."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def write_meta(backup: Path, meta: BackupMeta) -> Path:
    """Atomic write; returns the path."""
    path = meta_path(backup)
    text = json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n"
    try:
        atomic_write(path, text.encode())
    except OSError as exc:
        raise DrError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def read_meta(backup: Path) -> BackupMeta | None:
    """None when absent, unreadable or not a meta record."""
    return read_meta_checked(backup)[0]


def read_meta_checked(backup: Path) -> tuple[BackupMeta | None, str | None]:
    """(meta, None); (None, None) when there is no meta file; (None, why) when it is bad."""
    try:
        data = meta_path(backup).read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {meta_path(backup).name}: {exc.strerror or exc}"
    return check_meta(data)


def load_untrusted_json(data: bytes) -> Any:
    """`json.loads` for a file a bucket or a folder handed us: ValueError (never
    RecursionError, OverflowError or a non-finite float) when it is not plain, sized JSON."""
    if len(data) > META_MAX_BYTES:
        raise ValueError(f"it is {len(data)} bytes, more than {META_MAX_BYTES} a meta file holds")
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"it holds the number {text[:40]}, out of range")
    return value


def check_meta(data: bytes | None) -> tuple[BackupMeta | None, str | None]:
    """Parse meta bytes: (meta, None), (None, None) for none, (None, why) for a bad one."""
    if data is None:
        return None, None
    try:
        parsed = load_untrusted_json(data)
        if not isinstance(parsed, dict):
            raise TypeError(f"it holds a JSON {type(parsed).__name__}, not an object")
        return BackupMeta.from_json(parsed), None
    except KeyError as exc:
        return None, f"field {_printable(str(exc))} is missing"
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        return None, _printable(str(exc) or type(exc).__name__)


def _printable(text: str, limit: int = 160) -> str:
    """Untrusted text for one terminal line: control characters escaped, length capped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
