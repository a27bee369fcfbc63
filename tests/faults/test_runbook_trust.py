"""Where the runbook comes from and who may write it; targets and hosts that are never accepted.

Guarantee: runbook.yaml is read only from `--runbook`, `PRESKOOL_DR_RUNBOOK`,
`$XDG_CONFIG_HOME/preskool-dr/runbook.yaml` (default ~/.config) or
`/etc/preskool-dr/runbook.yaml`, in that order, never from the current directory: a
runbook.yaml planted in the folder the operator runs from is not read and its app commands
never run; with none found, exit 2 says every place that was looked at. A runbook writable by
group or others, or owned by a user other than root and the one running preskool-dr, is
refused (exit 2) with the reason and the fix, before any of it is used. PostgreSQL's own
databases (`postgres`, `template0`, `template1`) are never a restore, drill or restore-test
target (exit 2, before anything runs). A DB_HOST (or database.host) that is not a host name,
an IP address or an absolute socket folder (a URI, `user@host`, `key=value` settings, spaces)
is refused (exit 2, naming DB_HOST without repeating its value) before it can reach a lock
name, a run journal or the drill log.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tests.support.checks import assert_says, the_error
from tests.support.cli import cli_argv, run
from tests.support.runbook import REPO, write_runbook
from tests.support.site import Site

SYSTEM_RUNBOOK = Path("/etc/preskool-dr/runbook.yaml")


def no_runbook_env(site: Site, tmp_path: Path) -> dict[str, str]:
    """The site's environment with no runbook named anywhere: no PRESKOOL_DR_RUNBOOK and an
    empty XDG_CONFIG_HOME (this machine's own ~/.config is not the test's business)."""
    if SYSTEM_RUNBOOK.exists():
        pytest.skip(f"{SYSTEM_RUNBOOK} exists on this machine: it would be found")
    env = site.env(XDG_CONFIG_HOME=str(tmp_path / "xdg-empty"))
    env.pop("PRESKOOL_DR_RUNBOOK", None)
    return env


def test_a_runbook_in_the_current_directory_is_never_read(site: Site, tmp_path: Path) -> None:
    """The operator runs `restore` from a folder where someone left a runbook.yaml whose
    app.stop touches a marker file, with no runbook configured: the planted runbook is not
    read, the marker never appears, and the error lists where preskool-dr looked."""
    site.backup()
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "planted-app-stop-ran"
    write_runbook(planted, app={"stop": ["touch", str(marker)], "cwd": str(planted)})
    env = no_runbook_env(site, tmp_path)
    result = run(cli_argv("restore", "latest", "--confirm", site.db.name), env, cwd=planted)
    assert not marker.exists(), "the planted runbook's app.stop ran"
    assert result.returncode == 2, result.stdout + result.stderr
    error = the_error(result)
    assert_says(
        error,
        "no runbook.yaml found",
        "PRESKOOL_DR_RUNBOOK",
        str(tmp_path / "xdg-empty" / "preskool-dr" / "runbook.yaml"),
        str(SYSTEM_RUNBOOK),
        "current directory is never searched",
    )
    assert site.calls() == []
    assert not (site.state_dir / "runs").exists() or not any((site.state_dir / "runs").iterdir())


def test_the_search_order_after_the_environment(site: Site, tmp_path: Path) -> None:
    """With no --runbook and no PRESKOOL_DR_RUNBOOK, `$XDG_CONFIG_HOME/preskool-dr/
    runbook.yaml` is read (a broken one is reported at its own path); PRESKOOL_DR_RUNBOOK
    wins over it, and --runbook wins over both."""
    env = no_runbook_env(site, tmp_path)
    xdg = tmp_path / "xdg-empty" / "preskool-dr"
    xdg.mkdir(parents=True)
    (xdg / "runbook.yaml").write_text("version: 7\n")
    result = run(cli_argv("list"), env)
    assert result.returncode == 2
    assert_says(the_error(result), f"{xdg / 'runbook.yaml'}:1:", "version 7")
    broken = tmp_path / "named.yaml"
    broken.write_text("version: 8\n")
    result = run(cli_argv("list"), {**env, "PRESKOOL_DR_RUNBOOK": str(broken)})
    assert_says(the_error(result), f"{broken}:1:", "version 8")
    result = run(
        cli_argv("list", runbook=site.runbook), {**env, "PRESKOOL_DR_RUNBOOK": str(broken)}
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_group_writable_runbook_is_refused(site: Site) -> None:
    """runbook.yaml mode 0664 (its group may write it): refused, exit 2, with the mode and
    the chmod that fixes it; 0644 is accepted again."""
    site.runbook.chmod(0o664)
    result = site.cli("list")
    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(the_error(result), str(site.runbook), "writable by its group", "chmod go-w")
    site.runbook.chmod(0o646)
    assert_says(the_error(site.cli("list")), "writable by others")
    site.runbook.chmod(0o644)
    assert site.cli("list").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_runbook_owned_by_another_user_is_refused(site: Site) -> None:
    """runbook.yaml owned by `nobody` while root runs preskool-dr: refused, exit 2, naming the
    owner and the chown that fixes it; its app commands never run."""
    site.backup()
    nobody = pwd.getpwnam("nobody")
    os.chown(site.runbook, nobody.pw_uid, nobody.pw_gid)
    result = site.restore()
    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(the_error(result), str(site.runbook), "owned by nobody", "chown")
    assert site.calls() == []


@pytest.mark.parametrize(
    ("args", "runbook_sections"),
    [
        (("restore", "latest", "--target-db", "postgres", "--confirm", "postgres"), {}),
        (
            ("restore", "latest", "--drill", "--confirm", "template1"),
            {"drill": {"target_db": "template1"}},
        ),
        (("restore-test", "latest"), {"restore_test": {"database": "template0"}}),
    ],
    ids=["restore-postgres", "drill-template1", "restore-test-template0"],
)
def test_postgresql_own_databases_are_never_a_target(
    site: Site, args: tuple[str, ...], runbook_sections: dict
) -> None:
    """A target of `postgres`, `template1` or `template0` (by --target-db, drill.target_db or
    restore_test.database): exit 2 saying these are PostgreSQL's own databases, before a
    backup is even looked for; no journal, the app untouched, `postgres` still open."""
    write_runbook(site.root, app=site.app, **runbook_sections)
    result = site.cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(the_error(result), "PostgreSQL's own databases")
    assert site.calls() == []
    assert not (site.state_dir / "runs").exists() or not any((site.state_dir / "runs").iterdir())
    with site.db.connect("postgres") as conn:
        row = conn.execute(
            "SELECT bool_and(datallowconn) FROM pg_database WHERE datname IN "
            "('postgres', 'template1')"
        ).fetchone()
        assert row == (True,)


HOSTILE_HOSTS = [
    "postgresql://u:p4ss-SECRET@db.example.com/preskool_db",
    "db.example.com password=p4ss-SECRET",
    "p4ss-SECRET@db.example.com",
    "host=db.example.com",
    "db example com",
    "/var/run/postgresql password=p4ss-SECRET",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_db_host_holding_a_uri_or_credentials_is_refused(site: Site, host: str) -> None:
    """DB_HOST holds a URI, user@host, key=value settings or spaces: `restore` stops at once
    with exit 2 naming DB_HOST (and not repeating its value); no lock, journal or drill log
    is written, so the text never reaches a file."""
    site.backup()
    result = site.cli(
        "restore", "latest", "--drill", "--confirm", "preskool_drill", env=site.env(DB_HOST=host)
    )
    assert result.returncode == 2, result.stdout + result.stderr
    error = the_error(result)
    assert_says(error, "DB_HOST")
    assert "SECRET" not in result.stdout + result.stderr
    written = (
        [p for p in site.state_dir.rglob("*") if p.is_file()] if site.state_dir.exists() else []
    )
    assert written == []


def test_a_runbook_host_holding_a_uri_is_refused(site: Site) -> None:
    """database.host in runbook.yaml holds a URI (and DB_HOST is not set): exit 2 at the
    runbook's line, saying the password belongs in PGPASSWORD or ~/.pgpass."""
    write_runbook(site.root, app=site.app, database={"host": "postgresql://u:pw@h/db"})
    env = site.env()
    env.pop("DB_HOST", None)
    result = site.cli("list", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(the_error(result), f"{site.runbook}:", "database.host", "PGPASSWORD")


def test_ordinary_runbooks_and_hosts_are_accepted(site: Site) -> None:
    """The guards refuse nothing ordinary: the repo's runbook (0644), DB_HOST as a name, an
    IPv4 or IPv6 address, or the cluster's socket folder."""
    assert (REPO / "runbook.yaml").stat().st_mode & 0o022 == 0
    for host in (
        "localhost",
        "db-1.example.com",
        "127.0.0.1",
        "::1",
        str(site.db.cluster.socket_dir),
    ):
        result = site.cli("list", env=site.env(DB_HOST=host))
        assert result.returncode == 0, result.stdout + result.stderr
