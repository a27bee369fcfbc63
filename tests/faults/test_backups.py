"""Backups: a damaged backup never reaches the database.

Guarantee: `verify` exits 1 with the reason (truncated, corrupt, checksum mismatch, missing,
foreign or malformed sidecar, empty file, text that is not a pg_dump dump or a dump cut
short), and a headless restore of such a backup stops at step 4 before the application is
taken offline: production is untouched. A backup that passes the checks but whose SQL fails
half way stops the load at the first error, names the input line and statement, and leaves
the old database aside, from where `--rollback` puts it back.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.storage import checksum
from tests.support.backups import backup_sql, insert_before, rewrite_backup
from tests.support.checks import assert_no_partial_backups, assert_says, error_lines, the_error
from tests.support.runbook import write_runbook
from tests.support.site import Site


def truncated(path: Path) -> str:
    """truncated gzip (an interrupted copy)"""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "truncated"


def bit_flipped(path: Path) -> str:
    """one bit flipped, md5 sidecar recomputed to match"""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    rewrite_backup(path, bytes(data), compressed=True)
    return "Gzip integrity check failed: corrupt gzip data"


def md5_mismatch(path: Path) -> str:
    """md5 sidecar does not match the file"""
    checksum.sidecar_path(path).write_text(f"{'0' * 32}  {path.name}\n")
    return f"MD5 mismatch: expected {'0' * 32}"


def missing_sidecar(path: Path) -> str:
    """no .md5 sidecar"""
    checksum.sidecar_path(path).unlink()
    return "is missing: the backup cannot be verified"


def foreign_sidecar(path: Path) -> str:
    """the sidecar names another backup file"""
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    checksum.sidecar_path(path).write_text(f"{digest}  preskool-backup-20200101_000000.sql.gz\n")
    return "it belongs to another backup"


def malformed_sidecar(path: Path) -> str:
    """the sidecar is not `<md5>  <name>`"""
    checksum.sidecar_path(path).write_text("this is not a checksum\n")
    return "is malformed"


def zero_bytes(path: Path) -> str:
    """a zero-byte backup with an honest sidecar"""
    rewrite_backup(path, b"", compressed=True)
    return "empty file: not gzip data"


def not_sql(path: Path) -> str:
    """valid gzip with an honest md5, but not SQL (the wrong file compressed)"""
    rewrite_backup(path, b"\x89PNG\r\n\x1a\n" + os.urandom(4096) + b"\nnot sql at all\n")
    return "this is not a pg_dump backup"


def dump_cut_short(path: Path) -> str:
    """valid gzip of a dump cut off mid-COPY (a full disk at dump time, sealed anyway)"""
    sql = backup_sql(path)
    rewrite_backup(path, sql[: sql.index(b"COPY public.students") + 2000])
    assert gzip.decompress(path.read_bytes())  # the case really is valid gzip
    return "the dump was cut short"


DAMAGE: list[Callable[[Path], str]] = [
    truncated,
    bit_flipped,
    md5_mismatch,
    missing_sidecar,
    foreign_sidecar,
    malformed_sidecar,
    zero_bytes,
    not_sql,
    dump_cut_short,
]


# The fast tier keeps six kinds of damage; the other three run in `make test`.
FAST_DAMAGE = {
    "missing_sidecar",
    "foreign_sidecar",
    "malformed_sidecar",
    "zero_bytes",
    "not_sql",
    "dump_cut_short",
}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(d, id=d.__name__, marks=() if d.__name__ in FAST_DAMAGE else pytest.mark.slow)
        for d in DAMAGE
    ],
)
def test_damaged_backup_is_refused_before_downtime(
    site: Site, damage: Callable[[Path], str]
) -> None:
    """A damaged backup: verify exits 1 naming the damage; restore stops at step 4 with the
    app still up and production untouched."""
    backup = site.backup()
    site.change_data()
    before = site.checksum()
    cause = damage(backup)

    verify = site.cli("verify", backup.name)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    fails = error_lines(verify)
    assert any(cause in line for line in fails), fails
    assert_says(fails[-1], "Backup is NOT usable", "pick another with `preskool-dr list`")

    result = site.restore(backup.name)
    assert result.returncode == 1, result.stdout + result.stderr
    line = the_error(result)
    assert_says(line, "[FAIL]  Verify checksum failed:", cause, "choose another backup in step 2")
    assert "has not been touched" in result.stdout
    assert site.calls() == []  # the app was never taken offline
    assert site.checksum() == before
    state = site.the_run()
    assert state.step("verify").status is StepStatus.FAILED
    assert state.step("recreate_db").status is StepStatus.PENDING and state.aside_db is None
    assert_no_partial_backups(site.backup_dir, known_bad=(backup.name,))
    site.assert_no_leak(verify, result)


@pytest.mark.slow
def test_sql_error_half_way_names_the_line_and_rolls_back(site: Site) -> None:
    """SQL that fails half way: the error names input line N and the statement; the old
    database is aside and --rollback brings it back. (The serial stream names the line;
    the parallel loader, auto's choice for a plain file, names the session.)"""
    write_runbook(site.root, app=site.app, restore={"method": "serial"})
    backup = site.backup()
    site.change_data()
    before = site.checksum()
    bad = b"INSERT INTO no_such_table VALUES (1);\n"
    sql = insert_before(backup_sql(backup), b"COPY public.students", bad)
    line_no = sql[: sql.index(bad)].count(b"\n") + 1
    rewrite_backup(backup, sql)

    result = site.restore(backup.name)

    assert result.returncode == 1, result.stdout + result.stderr
    line = the_error(result)
    assert_says(
        line,
        f"restore stopped at input line {line_no:,} of {backup.name}",
        'relation "no_such_table" does not exist',
        "INSERT INTO no_such_table VALUES (1);",
        "run the restore again",
    )
    state = site.the_run()
    assert state.step("restore").status is StepStatus.FAILED
    assert state.aside_db and site.checksum(state.aside_db) == before
    rolled = site.cli("restore", "--rollback", state.run_id, "--confirm", site.db.name)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert site.checksum() == before
    assert not site.db.exists(state.aside_db)
    site.assert_no_leak(result, rolled)
