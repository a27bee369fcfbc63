"""A private, throwaway PostgreSQL cluster: used by the test suite and by `preskool-dr demo`.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` OS user
and lives in directories made with mkdtemp and chowned to it. Connections use TCP on
127.0.0.1 with scram passwords (so wrong-password cases are real); the socket dir is
private to the cluster.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from preskool_dr.core.base.errors import DrError
from preskool_dr.core.base.pgbin import find_pg_bin
from preskool_dr.core.base.ports import free_port

SUPERUSER = "postgres"


@dataclass
class Cluster:
    """A running private cluster. `stop()` is idempotent; `remove()` also deletes its files."""

    root: Path
    data_dir: Path
    socket_dir: Path
    port: int
    password: str
    run_as: str | None

    host = "127.0.0.1"

    @property
    def env(self) -> dict[str, str]:
        """libpq variables for the superuser (PGPASSWORD only ever through the environment)."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": SUPERUSER,
            "PGPASSWORD": self.password,
            "PGDATABASE": "postgres",
        }

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        # make_conninfo quotes: a database name with a space or a quote still connects
        return make_conninfo(host=self.host, port=self.port, dbname=dbname, user=user)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_as(
            self.run_as,
            [find_pg_bin("pg_ctl"), "-D", str(self.data_dir), *args],
            check=check,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-w", "-t", "60", "-l", str(self.root / "server.log"), "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self.pg_ctl("-w", "-m", mode, "stop", check=False)

    def is_running(self) -> bool:
        return self.pg_ctl("status", check=False).returncode == 0

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as(user: str | None, argv: list[str], *, check: bool) -> subprocess.CompletedProcess[str]:
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise DrError(f"{Path(argv[0]).name} failed: {(result.stderr or result.stdout).strip()}")
    return result


def create_cluster(parent: Path | None = None, password: str = "sandbox-secret") -> Cluster:
    """initdb + start a new cluster on a free port. The caller must `remove()` it."""
    run_as = SUPERUSER if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="preskool-pg-", dir=parent))
    data_dir, socket_dir = root / "data", root / "sock"
    socket_dir.mkdir()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if run_as:
        entry = pwd.getpwnam(run_as)
        for path in (root, socket_dir, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        # a parent made by a test may be private to root: the server user must reach root
        os.chmod(root, 0o755)
    _run_as(
        run_as,
        [
            find_pg_bin("initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        check=True,
    )
    pwfile.unlink()
    cluster = Cluster(root, data_dir, socket_dir, free_port(), password, run_as)
    try:
        cluster.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster
