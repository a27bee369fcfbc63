"""Hostile backups: no psql meta-command from a backup ever runs.

Guarantee: a backup whose text holds a psql meta-command (`\\! cmd`, `\\o FILE`,
`\\copy ... to FILE`, `\\connect otherdb`, `\\set`, `\\i FILE`, a stray `\\unrestrict`)
outside COPY data, sealed with pg_dump's banners and an honest `.md5`, fails `verify`
(exit 1) naming the line and the command; a headless `restore` stops at step 4 before the
application is taken offline, and `restore-test` fails the same way. The serial and the
parallel loaders refuse it on their own before psql reads the line, and run psql under a
`\\restrict` key the backup cannot know, so a command hidden mid-line is refused by psql
itself: no file is written, no command runs, no table appears in another database. A real
pg_dump backup (with its own `\\restrict`/`\\unrestrict` pair) still verifies and restores.
psql and pg_dump get only the libpq variables, never the AWS keys. `latest` never picks a
backup dated in the future; `list` warns about it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from preskool_dr.core.restore.loaders.parallel import parallel_restore
from preskool_dr.core.restore.loaders.stream import RestoreError, stream_restore
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.dumptext import MetaCommandError
from tests.support.backups import pg_dump_shaped
from tests.support.checks import assert_says, error_lines, the_error
from tests.support.leaks import AWS_SECRET, PASSWORD
from tests.support.site import Site

HOSTILE_NAME = "preskool-backup-20260101_000000.sql.gz"
MARKER_TABLE = "hostile_marker"


@dataclass(frozen=True)
class Hostile:
    """One meta-command: the line(s) it adds, how the refusal names it, and how to tell
    whether it ran."""

    id: str
    lines: Callable[[Path], bytes]  # the folder for its files -> the lines
    command: str
    ran: Callable[[Path, Site], bool]


def _file_made(folder: Path, site: Site) -> bool:
    return (folder / "made").exists()


def _table_in_postgres(folder: Path, site: Site) -> bool:
    with psycopg.connect(site.db.cluster.conninfo(), password=PASSWORD) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f"public.{MARKER_TABLE}",)).fetchone()
    return row is not None and row[0] is not None


def _table_in_target(folder: Path, site: Site) -> bool:
    with site.db.connect() as conn:
        row = conn.execute("SELECT to_regclass('public.included_marker')").fetchone()
    return row is not None and row[0] is not None


def _included(folder: Path) -> bytes:
    script = folder / "included.sql"
    script.write_text("CREATE TABLE public.included_marker (a int);\n")
    return f"\\i {script}\n".encode()


HOSTILE = [
    Hostile("shell", lambda f: f"\\! touch {f / 'made'}\n".encode(), "\\!", _file_made),
    Hostile("output", lambda f: f"\\o {f / 'made'}\nSELECT 1;\n".encode(), "\\o", _file_made),
    Hostile(
        "copy_to_file",
        lambda f: f"\\copy (select 1) to '{f / 'made'}'\n".encode(),
        "\\copy",
        _file_made,
    ),
    Hostile(
        "connect",
        lambda f: f"\\connect postgres\nCREATE TABLE public.{MARKER_TABLE} (a int);\n".encode(),
        "\\connect",
        _table_in_postgres,
    ),
    Hostile("set", lambda f: b"\\set ON_ERROR_STOP off\n", "\\set", lambda f, s: False),
    Hostile("include", _included, "\\i", _table_in_target),
    Hostile(
        "unrestrict_mid_line",
        lambda f: f"SELECT 1; \\unrestrict `touch {f / 'made'}`\n".encode(),
        "\\unrestrict",
        _file_made,
    ),
]


def hostile_backup(folder: Path, files: Path, case: Hostile) -> tuple[Path, int]:
    """A gzip in `folder` with pg_dump's banners and an honest .md5, holding the case's lines
    (their files in `files`); returns the backup and the line number of the command."""
    files.mkdir(mode=0o777, exist_ok=True)
    files.chmod(0o777)  # the server's OS user may be asked to write here too
    head = b"CREATE TABLE public.harmless (a int);\nINSERT INTO public.harmless VALUES (1);\n"
    text = pg_dump_shaped(head + case.lines(files) + b"SELECT 2;\n")
    line = text[: text.index(case.lines(files))].count(b"\n") + 1
    path = folder / HOSTILE_NAME
    path.write_bytes(gzip.compress(text))
    checksum.write_sidecar(path, hashlib.md5(path.read_bytes()).hexdigest())
    return path, line


# The fast tier (`make check`) keeps two meta-commands, a shell escape and a file write;
# `make test` runs them all.
HOSTILE_PARAMS = [
    pytest.param(c, id=c.id, marks=() if c.id in ("shell", "copy_to_file") else pytest.mark.slow)
    for c in HOSTILE
]


@pytest.fixture(autouse=True)
def _no_marker_table(site: Site) -> None:
    with psycopg.connect(site.db.cluster.conninfo(), password=PASSWORD, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS public.{MARKER_TABLE}")


@pytest.mark.parametrize("case", HOSTILE_PARAMS)
def test_meta_command_is_refused_by_verify_restore_and_restore_test(
    site: Site, tmp_path: Path, case: Hostile
) -> None:
    """A sealed backup with a meta-command: verify exits 1 naming line and command, restore
    stops at step 4 with the app up and production untouched, restore-test fails; the
    command never runs."""
    before = site.checksum()
    files = tmp_path / "files"
    backup, line = hostile_backup(site.backup_dir, files, case)
    named = f"line {line}: psql meta-command {case.command}"
    if case.id == "unrestrict_mid_line":
        named = f"line {line}: psql meta-command \\unrestrict is not allowed"

    verify = site.cli("verify", backup.name)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert any(named in e for e in error_lines(verify)), verify.stdout + verify.stderr

    result = site.restore(backup.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), "[FAIL]  Verify checksum failed:", named)
    assert site.calls() == []  # the app was never taken offline
    assert site.checksum() == before

    tested = site.cli("restore-test", backup.name)
    assert tested.returncode == 1, tested.stdout + tested.stderr
    assert named in tested.stdout + tested.stderr
    assert not case.ran(files, site)
    site.assert_no_leak(verify, result, tested)


def _superuser_env(site: Site) -> dict[str, str]:
    """Where a loader called on its own loads: the test database as the superuser, who
    could `\\connect postgres` and create tables there."""
    return {**site.db.cluster.env, "PGDATABASE": site.db.name}


LOADERS: dict[str, Callable[[Path, dict[str, str]], object]] = {
    "serial": lambda path, env: stream_restore(path, env),
    "parallel": lambda path, env: parallel_restore(path, env, jobs=2),
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("case", HOSTILE_PARAMS)
def test_loaders_refuse_meta_commands_on_their_own(
    site: Site, tmp_path: Path, case: Hostile, loader: str
) -> None:
    """The serial and the parallel loader, called without verify, refuse the command before
    psql reads it (naming the line), and it never runs."""
    backup, line = hostile_backup(tmp_path, tmp_path / "files", case)
    with pytest.raises(MetaCommandError) as refused:
        LOADERS[loader](backup, _superuser_env(site))
    assert refused.value.finding.line == line
    assert refused.value.finding.command == case.command
    assert not case.ran(tmp_path / "files", site)


@pytest.mark.parametrize("loader", LOADERS)
def test_psql_refuses_a_command_hidden_mid_line(site: Site, tmp_path: Path, loader: str) -> None:
    """`SELECT 1; \\! touch FILE` is not at a line start, so the line scan does not see it:
    psql, started under the loader's own \\restrict key, refuses it and the load fails."""
    case = Hostile(
        "mid_line_shell",
        lambda f: f"SELECT 1; \\! touch {f / 'made'}\n".encode(),
        "\\!",
        _file_made,
    )
    backup, _ = hostile_backup(tmp_path, tmp_path / "files", case)
    with pytest.raises(RestoreError, match="backslash commands are restricted"):
        LOADERS[loader](backup, _superuser_env(site))
    assert not case.ran(tmp_path / "files", site)


@pytest.mark.slow
def test_real_pg_dump_backup_with_its_restrict_pair_still_restores(site: Site) -> None:
    """pg_dump's own \\restrict/\\unrestrict lines are accepted: the backup verifies, and
    the restore brings the data back."""
    backup = site.backup()
    text = gzip.decompress(backup.read_bytes())
    assert text.count(b"\n\\restrict ") == 1 and text.count(b"\n\\unrestrict ") == 1
    before = site.checksum()
    site.change_data()
    verify = site.cli("verify", backup.name)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    result = site.restore(backup.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert site.checksum() == before


def _env_logging_wrappers(folder: Path) -> Path:
    """psql and pg_dump first on PATH: each writes its environment to a file, then runs the
    real program."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for program in ("psql", "pg_dump"):
        real = shutil.which(program)
        assert real is not None
        wrapper = bin_dir / program
        wrapper.write_text(f'#!/bin/sh\nenv > "{folder}/{program}.env.$$"\nexec {real} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def test_psql_and_pg_dump_never_see_the_aws_keys(site: Site, tmp_path: Path) -> None:
    """A real backup and restore-test: every psql and pg_dump child had the libpq variables
    and none of AWS_* (or other secrets) in its environment."""
    logs = tmp_path / "envs"
    logs.mkdir()
    bin_dir = _env_logging_wrappers(logs)
    env = site.env(
        PATH=f"{bin_dir}:{site.env()['PATH']}",
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_ACCESS_KEY_ID="AKIA-MARKER",
        SOME_APP_TOKEN="app-token-MARKER",
    )
    made = site.cli("backup", "--no-upload", env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    tested = site.cli("restore-test", "latest", env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    seen: dict[str, list[set[str]]] = {}
    for path in logs.glob("*.env.*"):
        names = {line.split("=", 1)[0] for line in path.read_text().splitlines() if "=" in line}
        seen.setdefault(path.name.split(".")[0], []).append(names)
        assert not any(n.startswith("AWS_") for n in names), (path.name, sorted(names))
        assert "SOME_APP_TOKEN" not in names, path.name
    assert set(seen) == {"psql", "pg_dump"}, seen
    for program, envs in seen.items():  # the ones that connected had what libpq needs
        assert any({"PGHOST", "PGPORT", "PGUSER", "PGDATABASE"} <= n for n in envs), program


def test_latest_skips_a_backup_dated_in_the_future(site: Site) -> None:
    """A backup named 2099-12-31 beside a real one: `latest` picks the real one, `list`
    warns about the future one and `list --json` marks it."""
    backup = site.backup()
    future = backup.with_name("preskool-backup-20991231_235959.sql.gz")
    shutil.copyfile(backup, future)
    checksum.write_sidecar(future, hashlib.md5(future.read_bytes()).hexdigest())

    verify = site.cli("verify", "latest")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert backup.name in verify.stdout and future.name not in verify.stdout

    listed = site.cli("list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"warning: {future.name} is dated in the future" in listed.stderr
    as_json = site.cli("list", "--json")
    records = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert records[future.name]["future"] is True
    assert records[backup.name]["future"] is False
