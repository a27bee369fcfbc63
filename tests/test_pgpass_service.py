"""Secrets for cron and systemd without PGPASSWORD: a pgpass file (~/.pgpass or PGPASSFILE)
with a different password per role, and a libpq service file (PGSERVICE), against the real
test cluster (scram-sha-256 over TCP) through the real CLI.

Guarantees: `backup` (pg_dump, a child) and `restore-test` (psycopg as the admin role, psql
as the app role) connect with passwords from a pgpass file only, the admin and app roles
each with their own line; a PGSERVICE section gives the password too; a section that names
where to connect (dbname, host...) is refused at its file:line before anything runs, since
libpq would let it win over the target preskool-dr hands psql and pg_dump.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from preskool_dr.demo.cluster import Cluster
from tests.support.cli import run_cli
from tests.support.db import Database
from tests.support.leaks import PASSWORD

ADMIN_PASSWORD = "admin-pw-MARKER-5d1e"  # not the app role's: one pgpass line per role


@pytest.fixture
def admin_role(pg_cluster: Cluster, database: Database) -> Iterator[str]:
    """An admin role (DB_ADMIN_USER) with its own password: may create databases owned by
    the app role and drop them. Dropped afterwards."""
    role = f"pgpass_admin_{uuid.uuid4().hex[:8]}"
    with database.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {} IN ROLE preskool").format(
                sql.Identifier(role), sql.Literal(ADMIN_PASSWORD)
            )
        )
    try:
        yield role
    finally:
        with database.connect("postgres") as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def without_passwords(dr_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    env["HOME"] = str(tmp_path / "home")  # no ~/.pgpass of the machine's
    env["PGPASSFILE"] = str(tmp_path / "no-such-pgpass")
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


@pytest.mark.parametrize("where", [pytest.param("PGPASSFILE", marks=pytest.mark.slow), "home"])
def test_backup_and_restore_test_with_a_pgpass_file_only(
    dr_env: dict[str, str], pg_cluster: Cluster, admin_role: str, tmp_path: Path, where: str
) -> None:
    env = without_passwords(dr_env, tmp_path) | {"DB_ADMIN_USER": admin_role}
    host, port = pg_cluster.host, pg_cluster.port
    pgpass_text = (
        f"{host}:{port}:*:{admin_role}:{ADMIN_PASSWORD}\n{host}:{port}:*:preskool:{PASSWORD}\n"
    )

    refused = run_cli("backup", env=env)  # no password anywhere: fails, says where to put one
    assert refused.returncode == 1
    assert "~/.pgpass" in refused.stderr + refused.stdout

    if where == "PGPASSFILE":
        passfile = tmp_path / "pgpass"
        env["PGPASSFILE"] = str(passfile)
    else:
        passfile = Path(env["HOME"]) / ".pgpass"
        del env["PGPASSFILE"]
    passfile.write_text(pgpass_text)
    passfile.chmod(0o600)

    checked = run_cli("config", "check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"passwords  {passfile} (mode 0600)" in checked.stdout

    backup = run_cli("backup", "--no-upload", env=env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    tested = run_cli("restore-test", "latest", env=env)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "restore test of" in tested.stdout and "passed" in tested.stdout
    for output in (backup.stdout, backup.stderr, tested.stdout, tested.stderr):
        assert PASSWORD not in output and ADMIN_PASSWORD not in output


def service_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "pg_service.conf"
    path.write_text(
        "# site services\n[other]\ndbname=elsewhere\n\n[preskool]\n" + "\n".join(lines) + "\n"
    )
    path.chmod(0o600)
    return path


def test_a_service_section_with_the_password_and_tls_settings_is_used(
    dr_env: dict[str, str], tmp_path: Path
) -> None:
    path = service_file(tmp_path, "sslmode=disable", f"password={PASSWORD}")
    env = without_passwords(dr_env, tmp_path) | {
        "PGSERVICEFILE": str(path),
        "PGSERVICE": "preskool",
    }
    checked = run_cli("config", "check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"the PGSERVICE section [preskool] in {path}" in checked.stdout
    backup = run_cli("backup", "--no-upload", env=env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert PASSWORD not in backup.stdout + backup.stderr + checked.stdout


def test_a_service_section_that_says_where_to_connect_is_refused_at_its_line(
    dr_env: dict[str, str], tmp_path: Path
) -> None:
    path = service_file(tmp_path, f"password={PASSWORD}", "dbname=postgres")
    env = without_passwords(dr_env, tmp_path) | {
        "PGSERVICEFILE": str(path),
        "PGSERVICE": "preskool",
    }
    expected = f"{path}:7: the PGSERVICE section [preskool] sets dbname"
    for args in (["config", "check"], ["backup", "--no-upload"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert expected in result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    assert not list(Path(dr_env["BACKUP_DIR"]).iterdir())  # nothing was dumped
