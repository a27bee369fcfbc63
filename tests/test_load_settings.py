"""The load's own session settings (restore.maintenance_work_mem): every loader's sessions
get them through PGOPTIONS, after the operator's own; null leaves the server's setting.
Each case restores for real and reads the setting inside the load."""

from __future__ import annotations

import pytest

from preskool_dr.core.base import database
from preskool_dr.core.base.settings import DatabaseSettings
from preskool_dr.core.restore.loaders.parallel.sessions import connect_env
from tests.support.backups import backup_sql, insert_before, rewrite_backup
from tests.support.db import Database, libpq
from tests.support.leaks import PASSWORD
from tests.support.runbook import write_runbook
from tests.support.site import Site

# pre-data SQL that keeps what the loading session saw, as a table the restore keeps
PROBE = (
    b"CREATE TABLE public.load_setting AS "
    b"SELECT pg_catalog.current_setting('maintenance_work_mem') AS value;\n\n"
)


def test_load_env_puts_ours_after_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseSettings()
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=0")
    env = database.load_env(db, "x", "1GB")
    assert env["PGOPTIONS"] == "-c statement_timeout=0 -c maintenance_work_mem=1GB"
    assert env["PGDATABASE"] == "x"
    assert database.load_env(db, "x", None)["PGOPTIONS"] == "-c statement_timeout=0"
    monkeypatch.delenv("PGOPTIONS")
    assert "PGOPTIONS" not in database.load_env(db, "x", None)
    with pytest.raises(ValueError):
        database.load_env(db, "x", "1GB -c fsync=off")


def test_copy_sessions_connect_with_the_load_options(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parallel loader's psycopg sessions (COPY parts) honour the load's PGOPTIONS, not
    only the psql children."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    env = {**libpq(database), "PGOPTIONS": "-c maintenance_work_mem=300MB"}
    with connect_env(env, "preskool-dr-test") as conn:
        row = conn.execute("SHOW maintenance_work_mem").fetchone()
    assert row == ("300MB",)


@pytest.mark.parametrize(
    ("method", "setting", "seen"),
    [
        ("serial", "512MB", "512MB"),
        ("parallel", "300MB", "300MB"),
        pytest.param("serial", None, "64MB", marks=pytest.mark.slow),
    ],
)
def test_the_load_runs_with_the_setting(
    site: Site, method: str, setting: str | None, seen: str
) -> None:
    write_runbook(
        site.root,
        app=site.app,
        restore={"method": method, "jobs": 2, "maintenance_work_mem": setting},
    )
    made = site.cli("backup", "--no-upload")
    assert made.returncode == 0, made.stdout + made.stderr
    (backup,) = site.backup_dir.glob("*.sql.gz")
    text = backup_sql(backup)
    rewrite_backup(backup, insert_before(text, b"--\n-- Name: ", PROBE))
    # named after the site's database: the fixture drops it with the site's copies
    target = Database(site.db.cluster, f"{site.db.name}_settings")
    done = site.cli("restore", "latest", "--confirm", target.name, "--target-db", target.name)
    assert done.returncode == 0, done.stdout + done.stderr
    with target.connect() as conn:
        assert conn.execute("SELECT value FROM public.load_setting").fetchone() == (seen,)
