"""Room on the database server for a restore, measured before anything is taken down.

What a restore needs is the database's size when it was backed up (`db_size_bytes` in the
backup's `.meta.json`); what the server has can only be measured from here when its data
directory is on this host: connected over a Unix socket or a loopback address, and the
directory the server reports (`data_directory`, readable by a superuser or a member of
pg_read_all_settings) exists here. Otherwise the check says "not measured" and why, and
the restore goes on: a check we cannot make must not stop a restore in an outage.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from preskool_dr.core.base import database
from preskool_dr.core.base.errors import DrError, NoSpaceError
from preskool_dr.core.base.settings import DatabaseSettings
from preskool_dr.core.base.space import free_bytes, shortfall, size_text, with_margin
from preskool_dr.core.storage.meta import BackupMeta


@dataclass(frozen=True)
class ServerSpace:
    """What the check found: `detail` is one sentence for the step's detail."""

    measured: bool
    detail: str


def _not_measured(why: str) -> ServerSpace:
    return ServerSpace(False, f"server space: not measured ({why})")


def check_server_space(
    db: DatabaseSettings,
    meta: BackupMeta | None,
    *,
    dropped: str | None = None,
    loading: str | None = None,
    incoming: tuple[Path, int] | None = None,
) -> ServerSpace:
    """Enough room ("server space: 1.2 GiB needed, 30.0 GiB free in DIR"), or "server
    space: not measured (why)"; NoSpaceError when the server's disk cannot take the
    restored database. `dropped` names a database the restore drops first, `loading` one
    this restore is loading already (a load started early): their sizes count as free.
    `incoming`: a folder and the bytes a download is still writing there, needed too when
    that folder is on the data directory's disk (a load that starts while it downloads)."""
    if meta is None or meta.db_size_bytes is None:
        return _not_measured(
            "the backup's .meta.json records no database size: a backup from an older version"
        )
    where = _local_data_directory(db, tuple(name for name in (dropped, loading) if name))
    if isinstance(where, str):
        return _not_measured(where)
    data_dir, sizes = where
    free = free_bytes(data_dir) + sum(sizes.values())
    restored = meta.db_size_bytes
    counts = [
        f"the {size_text(size)} {what}"
        for name, what in ((dropped, f"dropping {dropped} frees"), (loading, f"{loading} holds"))
        if name and (size := sizes.get(name))
    ]
    if incoming is not None and incoming[1] > 0 and _same_disk(incoming[0], data_dir):
        free = max(0, free - incoming[1])
        counts.append(f"the {size_text(incoming[1])} a download still writes there as taken")
    counting = f" (counting {' and '.join(counts)})" if counts else ""
    problem = shortfall(
        restored,
        free,
        f"the database server's data directory {data_dir}",
        f"free space on that disk or grow it{counting}; nothing was taken down",
    )
    if problem is not None:
        raise NoSpaceError(
            f"restoring {meta.name} ({size_text(restored)} when it was backed up) {problem}"
        )
    return ServerSpace(
        True,
        f"server space: {size_text(with_margin(restored))} needed, {size_text(free)} "
        f"free in {data_dir}{counting}",
    )


# Two folders whose disks report free space this close share one pool (see _same_disk)
POOLED_WITHIN = 256 << 20


def _same_disk(folder: Path, data_dir: Path) -> bool:
    """Whether bytes written in `folder` take room from `data_dir`. The same device, or
    storage pooled under several devices: btrfs subvolumes and ZFS datasets of one pool
    each have their own st_dev but report the pool's free space, so two disks that report
    the same free space (within what the running load may write between the two readings)
    count as one. Two separate disks that happen to agree only make the check stricter:
    the load then waits for step 4 at worst. A ZFS dataset with its own quota reports
    that quota and is missed."""
    try:
        if folder.stat().st_dev == data_dir.stat().st_dev:
            return True
        return abs(free_bytes(folder) - free_bytes(data_dir)) <= POOLED_WITHIN
    except OSError:
        return True  # unknown: count it, the load then waits for step 4 at worst


def _local_data_directory(
    db: DatabaseSettings, counted: tuple[str, ...]
) -> tuple[Path, dict[str, int]] | str:
    """(the server's data directory, the size of each `counted` database that exists) when
    the directory is on this host, else why it cannot be measured."""
    try:
        with database.connect(db, admin=True) as conn:
            row = conn.execute(
                "SELECT pg_catalog.current_setting('data_directory'), "
                "pg_catalog.host(pg_catalog.inet_server_addr())"
            ).fetchone()
            sizes = {
                name: database.database_size(conn, name)
                for name in counted
                if database.database_exists(conn, name)
            }
    except psycopg.errors.InsufficientPrivilege:
        return (
            f"{db.admin_user} may not read the server's data_directory (a superuser or a "
            "member of pg_read_all_settings may)"
        )
    except psycopg.Error as exc:
        return f"asking the server failed: {database.first_line(exc)}"
    except DrError as exc:
        return str(exc)
    assert row is not None
    directory, address = str(row[0]), row[1]
    if address is not None and not ipaddress.ip_address(address).is_loopback:
        return f"the server is at {address}, not on this host"
    path = Path(directory)
    if not path.is_absolute() or not path.is_dir():
        return f"its data directory {directory} is not on this host"
    return path, sizes
