"""Locks: one restore per database on a server, no backup of a half load, no planted files.

Guarantee: while step 6 loads, the target database accepts no connection (the app role
gets "not currently accepting connections"; the load runs under a private name other roles
may not connect to), and after a failed or killed load it stays closed until a resumed
run's checks pass; then it opens with the privileges a fresh database has. `backup` of a
database that a restore is replacing refuses (exit 1) naming the run, its user, host and
pid, and writes no file; a second restore of the same database is refused the same way
before it runs anything, whatever spelling of the host (`localhost` for `127.0.0.1`) or
state folder it uses: both meet on a PostgreSQL advisory lock keyed by the database name.
A symlink planted at a lock or run-journal path is refused and its target left untouched,
and a state folder that group or others can write, or that another user owns, is refused
with the command that fixes it.
"""

from __future__ import annotations

import getpass
import json
import os
import pwd
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.lock import ServerLock, lock_path
from preskool_dr.core.restore.journal import Journal
from preskool_dr.core.storage import checksum
from tests.support.backups import (
    backup_sql,
    blocker,
    create_db,
    insert_before,
    rewrite_backup,
    wait_until_blocked,
)
from tests.support.checks import assert_says, the_error
from tests.support.child import Child
from tests.support.db import APP_ROLE
from tests.support.leaks import PASSWORD
from tests.support.site import Site

NOT_ACCEPTING = "is not currently accepting connections"


def app_role_connect(site: Site, dbname: str, user: str = APP_ROLE) -> psycopg.Connection:
    return psycopg.connect(
        site.db.cluster.conninfo(dbname, user=user), password=PASSWORD, autocommit=True
    )


def holder_says(run_id: str) -> tuple[str, ...]:
    """What a refusal names: the run, the user and host it runs as, and a pid."""
    return (f"by run {run_id}", f"user {getpass.getuser()} on host {socket.gethostname()}", "pid ")


def start_held_restore(site: Site) -> Child:
    """A headless restore whose load waits in step 6 (a blocker before the students' COPY)
    until a database named `<db>_go` exists."""
    backup = site.backup()
    release = f"{site.db.name}_go"
    rewrite_backup(
        backup, insert_before(backup_sql(backup), b"COPY public.students", blocker(release))
    )
    site.cleanups.append(lambda: site.db.exists(release) or create_db(site.db, release))
    child = site.start("restore", backup.name, "--confirm", site.db.name)
    child.wait_for_step("restore")
    wait_until_blocked(site.db, site.db.name)
    return child


def let_go(site: Site) -> None:
    if not site.db.exists(f"{site.db.name}_go"):
        create_db(site.db, f"{site.db.name}_go")


def assert_open_to_the_app(site: Site) -> None:
    with app_role_connect(site, site.db.name) as conn:
        assert conn.execute("SELECT count(*) FROM students").fetchone() != (0,)


@contextmanager
def held_restore(site: Site) -> Iterator[Child]:
    """`start_held_restore`; when the block ends the load goes on, the run must finish
    (exit 0) and the app role must get in."""
    child = start_held_restore(site)
    yield child
    let_go(site)
    result = child.finish()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_open_to_the_app(site)


@pytest.fixture
def reporter(site: Site) -> Iterator[str]:
    """Another non-superuser login role (a reporting tool), allowed what PUBLIC is."""
    role = f"reporter_{site.db.name}"
    with site.db.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PASSWORD)
            )
        )
    yield role
    with site.db.connect("postgres") as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def loading_db(site: Site) -> str:
    """The database step 6 loads into, as pg_stat_activity shows the load."""
    with site.db.connect("postgres") as conn:
        row = conn.execute(
            "SELECT datname FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
            "AND starts_with(datname, %s)",
            (site.db.name,),
        ).fetchone()
    assert row is not None
    return str(row[0])


# ---------------------------------------------------------------- while a restore loads


@pytest.mark.slow
def test_nobody_else_connects_while_step_6_loads(site: Site, reporter: str) -> None:
    """Held in step 6: the app role cannot connect to the target database, another role
    cannot connect to the database being loaded; after the run both can reach the target."""
    with held_restore(site):
        with pytest.raises(psycopg.OperationalError, match=NOT_ACCEPTING):
            app_role_connect(site, site.db.name)
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            app_role_connect(site, loading_db(site), user=reporter)
    app_role_connect(site, site.db.name, user=reporter).close()


@pytest.mark.slow
def test_backup_during_a_restore_refuses_and_writes_nothing(site: Site) -> None:
    """Held in step 6: `preskool-dr backup` exits 1 naming the restore's run, user, host
    and pid, and leaves BACKUP_DIR exactly as it was (no partial or "verified" backup)."""
    with held_restore(site):
        run_id = site.the_run().run_id
        before = sorted(p.name for p in site.backup_dir.iterdir())
        result = site.cli("backup", "--no-upload")
        assert result.returncode == 1, result.stdout + result.stderr
        assert_says(the_error(result), site.db.name, "is being restored", *holder_says(run_id))
        assert_says(the_error(result), "the backup was not taken")
        assert sorted(p.name for p in site.backup_dir.iterdir()) == before


@pytest.mark.parametrize("how", ["localhost", "another state folder"])
@pytest.mark.slow
def test_a_second_restore_of_the_database_is_refused(site: Site, tmp_path: Path, how: str) -> None:
    """Held in step 6 (run through DB_HOST=127.0.0.1): a second restore of the same
    database through DB_HOST=localhost, or from another user's state folder, is refused
    before it runs anything, naming the first run, its user, host and pid."""
    assert site.env()["DB_HOST"] == "127.0.0.1"
    other_state = tmp_path / "other-state"
    other_state.mkdir(mode=0o700)
    over = {"DB_HOST": "localhost"} if how == "localhost" else {}
    if how == "another state folder":
        over["PRESKOOL_DR_STATE_DIR"] = str(other_state)
    with held_restore(site):
        run_id = site.the_run().run_id
        second = site.cli("restore", "latest", "--confirm", site.db.name, env=site.env(**over))
        assert second.returncode == 1, second.stdout + second.stderr
        line = the_error(second)
        assert_says(line, site.db.name, "is being restored", *holder_says(run_id))
        assert_says(line, "nothing was changed", f"--resume {run_id}")
        assert site.calls() == ["stop"]  # only the first run's step 1
    assert len(Journal(site.state_dir).runs()) == 1
    assert Journal(other_state).runs() == []


@pytest.mark.slow
def test_a_killed_load_stays_closed_until_the_resumed_checks_pass(site: Site) -> None:
    """SIGKILL in step 6: the target accepts no connection (it does not show the half
    load), and it opens only when a resumed run's load has passed its checks."""
    child = start_held_restore(site)
    child.signal(signal.SIGKILL)
    child.finish()
    with pytest.raises(psycopg.OperationalError, match=NOT_ACCEPTING):
        app_role_connect(site, site.db.name)
    state = site.the_run()
    assert state.step("restore").status is StepStatus.RUNNING
    let_go(site)
    resumed = site.resume(state.run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_open_to_the_app(site)


# ---------------------------------------------------------------- planted files


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious data\n")
    return path


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_a_link_at_the_lock_path_is_refused_and_its_target_untouched(
    site: Site, tmp_path: Path, link: str
) -> None:
    """A symlink (or a hard link) planted at the run's lock path, to another file: the
    restore is refused before anything runs, naming the path; the other file is unchanged."""
    site.backup()
    before = site.checksum()
    target = victim(tmp_path)
    env = site.env()
    path = lock_path(site.state_dir, env["DB_HOST"], int(env["DB_PORT"]), site.db.name)
    path.parent.mkdir(parents=True, mode=0o700)
    site.state_dir.chmod(0o700)
    if link == "symlink":
        path.symlink_to(target)
        said = "is a symbolic link"
    else:
        os.link(target, path)
        said = "has 2 hard links"

    result = site.restore()

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), str(path), said, f"rm {path}")
    assert target.read_text() == "precious data\n"
    assert site.calls() == [] and site.checksum() == before


def test_a_symlink_at_the_backup_lock_is_refused_and_its_target_untouched(
    site: Site, tmp_path: Path
) -> None:
    """A symlink planted at BACKUP_DIR's `.preskool-backup.lock`: `backup` exits 1 naming
    it, writes no backup, and the file it points at is unchanged."""
    target = victim(tmp_path)
    path = site.backup_dir / ".preskool-backup.lock"
    path.symlink_to(target)

    result = site.cli("backup", "--no-upload")

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), str(path), "is a symbolic link")
    assert target.read_text() == "precious data\n"
    assert [p.name for p in site.backup_dir.iterdir()] == [path.name]


def test_a_restore_while_a_backup_runs_is_refused(site: Site) -> None:
    """A backup holds the target's server lock (shared) while it dumps: a restore of that
    database is refused before it runs anything, saying a backup is running and whose."""
    site.backup()
    before = site.checksum()
    backup_lock = ServerLock(
        site.config().database, site.db.name, run_id=None, operator="", shared=True
    )
    backup_lock.acquire()
    try:
        result = site.restore()
    finally:
        backup_lock.release()
    assert result.returncode == 1, result.stdout + result.stderr
    line = the_error(result)
    assert_says(line, site.db.name, "is being backed up", f"user {getpass.getuser()} on host")
    assert_says(line, f"pid {os.getpid()}", "nothing was changed")
    assert site.calls() == [] and site.checksum() == before


def test_a_symlink_at_a_journal_path_is_refused_and_its_target_untouched(
    site: Site, tmp_path: Path
) -> None:
    """A run journal replaced by a symlink to another file (holding a journal, so it would
    load): --resume is refused naming the link; the file it points at is unchanged."""
    backup = site.backup()
    checksum.sidecar_path(backup).unlink()  # the run stops at step 4: a resumable run
    failed = site.restore(backup.name)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    run_id = site.the_run().run_id
    journal = Journal(site.state_dir).path(run_id)
    target = tmp_path / "victim.json"
    target.write_bytes(journal.read_bytes())
    journal.unlink()
    journal.symlink_to(target)
    checksum.write_sidecar(backup, checksum.verify_file(backup, None).actual_md5)
    planted = target.read_bytes()

    result = site.resume(run_id)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), str(journal), "is a symbolic link", f"rm {journal}")
    assert target.read_bytes() == planted
    assert json.loads(planted)["run_id"] == run_id
    assert site.calls() == []


@pytest.mark.parametrize("problem", ["mode 0777", "owned by nobody"])
def test_an_unsafe_state_folder_is_refused(site: Site, problem: str) -> None:
    """A state folder that group/others can write (0777), or that another user owns, is
    refused before anything runs, with the reason and the chmod/chown that fixes it."""
    site.backup()
    before = site.checksum()
    state = site.state_dir
    state.mkdir(mode=0o700, exist_ok=True)
    if problem == "mode 0777":
        state.chmod(0o777)
        needles = ("can be written by group or others", "mode 0777", f"chmod 700 {state}")
    else:
        if os.geteuid() != 0:
            pytest.skip("handing a folder to another user needs root")
        nobody = pwd.getpwnam("nobody")
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        needles = ("belongs to nobody", f"chown {getpass.getuser()} {state}")

    result = site.restore()

    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(the_error(result), str(state), *needles)
    assert site.calls() == [] and site.checksum() == before
    assert not (state / "runs").exists()
