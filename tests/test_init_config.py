"""`preskool-dr init`, `preskool-dr config check` and the demo without its extra, through the
real CLI in child processes. No PostgreSQL needed.

Guarantees: init writes the commented runbook, a 0600 environment file with every secret
commented out and the folders with safe modes, refuses to replace a runbook without --force
(exit 2, nothing written) and never replaces the environment file; config check exits 0 with
every setting's value and source (file line, environment, default), secrets masked, and 2
with `file:line`; the shipped template is the package's own file.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.runbook_file import shipped_runbook_path
from preskool_dr.core.base.site_init import default_layout
from tests.support.cli import run_cli
from tests.support.runbook import REPO
from tests.support.wheel import build_wheel

SECRET = "s3cret-MARKER-91c2"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def init(tmp_path: Path, *extra: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    runbook = tmp_path / "etc" / "runbook.yaml"
    result = run_cli(
        "init",
        "--path",
        str(runbook),
        "--backup-dir",
        str(tmp_path / "site-backups"),
        "--state-dir",
        str(tmp_path / "site-state"),
        *extra,
    )
    return runbook, result


def line_of(path: Path, start: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith(start):
            return number
    raise AssertionError(f"no line starting {start!r} in {path}")


def test_the_template_ships_in_the_package_and_the_repo_root_points_at_it() -> None:
    template = shipped_runbook_path()
    assert template.parent.name == "data" and template.parent.parent.name == "preskool_dr"
    assert (REPO / "runbook.yaml").resolve() == template.resolve()  # one copy of the text
    assert load_config(template, env={}).database.name == "preskool_db"


def test_init_writes_runbook_env_file_and_folders_with_safe_modes(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    runbook, result = init(tmp_path)
    assert result.returncode == 0, result.stderr
    env_file = runbook.parent / "preskool-dr.env"
    assert mode(runbook) & 0o022 == 0  # the trust check would refuse a writable one
    assert mode(env_file) == 0o600
    system = os.geteuid() == 0
    assert mode(tmp_path / "site-backups") == (0o750 if system else 0o700)
    # a system install: root's, group preskool-dr (created when missing), set-group-ID
    assert mode(tmp_path / "site-state") == (0o2750 if system else 0o700)
    if system:
        assert grp.getgrgid((tmp_path / "site-state").stat().st_gid).gr_name == "preskool-dr"
    text = runbook.read_text()
    assert text.startswith("# Written by `preskool-dr init`")
    assert f"  dir: {tmp_path / 'site-backups'}" in text
    assert f"\nstate_dir: {tmp_path / 'site-state'}     # PRESKOOL_DR_STATE_DIR\n" in text
    config = load_config(runbook, env={})
    assert config.backups.dir == tmp_path / "site-backups"
    assert config.state_dir == tmp_path / "site-state"  # the runbook names it, for everyone
    env_text = env_file.read_text()
    assert f"PRESKOOL_DR_RUNBOOK={runbook}" in env_text
    assert "\n#PRESKOOL_DR_STATE_DIR=\n" in env_text  # one place: the runbook
    for secret in ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "PGPASSFILE", "PGSERVICE"):
        assert f"#{secret}=" in env_text  # offered, commented out
    for written in (runbook, env_file, tmp_path / "site-backups", tmp_path / "site-state"):
        assert str(written) in result.stdout
    assert "config check" in result.stdout and "Next:" in result.stdout


def test_init_refuses_to_overwrite_and_force_keeps_the_old_runbook_and_the_env_file(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    runbook, first = init(tmp_path)
    assert first.returncode == 0, first.stderr
    env_file = runbook.parent / "preskool-dr.env"
    runbook.write_text(runbook.read_text() + "# my edit\n")
    env_file.write_text(f"PGPASSWORD={SECRET}\n")

    _, refused = init(tmp_path)
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert runbook.read_text().endswith("# my edit\n")  # nothing written

    _, forced = init(tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "# my edit" not in runbook.read_text()
    assert runbook.with_name("runbook.yaml.bak").read_text().endswith("# my edit\n")
    assert env_file.read_text() == f"PGPASSWORD={SECRET}\n"  # secrets are never replaced
    assert SECRET not in forced.stdout + forced.stderr


def test_default_places_for_a_user_and_for_root(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "data")}
    user = default_layout(system=False, env=env)
    assert user.runbook == tmp_path / "cfg" / "preskool-dr" / "runbook.yaml"
    assert user.env_file == tmp_path / "cfg" / "preskool-dr" / "preskool-dr.env"
    assert user.backup_dir == tmp_path / "data" / "preskool-dr" / "backups"
    assert user.dir_mode == 0o700
    system = default_layout(system=True, env={})
    assert system.runbook == Path("/etc/preskool-dr/runbook.yaml")
    assert system.backup_dir == Path("/var/backups/preskool")
    assert system.state_dir == Path("/var/lib/preskool-dr")
    assert system.dir_mode == 0o750
    # BACKUP_DIR / PRESKOOL_DR_STATE_DIR win, as everywhere else
    named = default_layout(
        system=True, env={"BACKUP_DIR": "/srv/b", "PRESKOOL_DR_STATE_DIR": "/srv/s"}
    )
    assert (named.backup_dir, named.state_dir) == (Path("/srv/b"), Path("/srv/s"))


def test_config_check_shows_values_and_sources_with_secrets_masked(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    runbook, made = init(tmp_path)
    assert made.returncode == 0, made.stderr
    text = runbook.read_text().replace(
        "health_url: http://localhost:8000/api/v1/health",
        f"health_url: http://ops:{SECRET}@localhost:8000/api/v1/health",
    )
    runbook.write_text(text)
    env = os.environ | {
        "DB_PORT": "6543",
        "PGPASSWORD": SECRET,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ACCESS_KEY_ID": "AKIA-MARKER",
    }
    result = run_cli("--runbook", str(runbook), "config", "check", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert SECRET not in out + result.stderr
    assert "result     valid" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    host_line = line_of(runbook, "  host:")
    assert rows["database.host"].split()[1:] == ["localhost", "file", "line", str(host_line)]
    assert rows["database.port"].split()[1:] == ["6543", "environment", "DB_PORT"]
    assert rows["app.health_wait_seconds"].split()[1:] == ["120.0", "default"]
    assert "ops:********@localhost" in rows["app.health_url"]
    assert "******** (set)" in rows["PGPASSWORD"]
    assert "******** (set)" in rows["AWS_SECRET_ACCESS_KEY"]
    assert "AKIA-MARKER" not in out

    as_json = run_cli("--runbook", str(runbook), "config", "check", "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["valid"] is True and data["runbook"] == str(runbook)
    settings = {s["key"]: s for s in data["settings"]}
    assert settings["database.port"] == {
        "key": "database.port",
        "value": "6543",
        "source": "environment",
        "detail": "DB_PORT",
    }
    assert settings["database.name"]["source"] == "file"
    assert settings["backups.s3_bucket"]["source"] == "default"
    assert data["password_source"].startswith("PGPASSWORD")
    assert SECRET not in as_json.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_config_check_invalid_is_exit_2_with_file_and_line(
    base_env: dict[str, str], tmp_path: Path, as_json: bool
) -> None:
    runbook, made = init(tmp_path)
    assert made.returncode == 0, made.stderr
    runbook.write_text(runbook.read_text().replace("  port: 5432", "  port: 70000"))
    bad_line = line_of(runbook, "  port: 70000")
    args = ["--runbook", str(runbook), "config", "check"] + (["--json"] if as_json else [])
    result = run_cli(*args)
    assert result.returncode == 2
    assert f"{runbook}:{bad_line}: database.port must be from 1 to 65535" in result.stderr
    assert "Traceback" not in result.stderr
    if as_json:
        data = json.loads(result.stdout)
        assert data["valid"] is False and data["error"].startswith(f"{runbook}:{bad_line}:")


def test_config_check_warns_about_a_pgpass_file_libpq_would_ignore(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:preskool:{SECRET}\n")
    passfile.chmod(0o644)
    env = os.environ | {"PGPASSFILE": str(passfile)}
    result = run_cli("config", "check", env=env)
    assert result.returncode == 0, result.stderr
    assert f"libpq ignores {passfile}" in result.stdout and f"chmod 600 {passfile}" in result.stdout
    passfile.chmod(0o600)
    fixed = run_cli("config", "check", env=env)
    assert f"passwords  {passfile} (mode 0600)" in fixed.stdout
    assert "WARNING" not in fixed.stdout
    assert SECRET not in result.stdout + fixed.stdout


def test_help_of_init_and_config_check_has_examples() -> None:
    for args in (["init", "--help"], ["config", "check", "--help"]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert "examples:" in result.stdout and "Exit status" in result.stdout
    listing = run_cli("--help").stdout
    assert "init" in listing and "config" in listing


def test_demo_without_its_extra_says_how_to_get_it(tmp_path: Path) -> None:
    """A plain install has no moto: shadow it with an empty package, as if it were absent."""
    (tmp_path / "moto").mkdir()
    (tmp_path / "moto" / "__init__.py").write_text("")
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    result = run_cli("demo", env=env, cwd=str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "needs the [demo] extra" in result.stderr and "missing: moto" in result.stderr
    assert "pipx install" in result.stderr and "pip install 'preskool-dr[demo]'" in result.stderr


@pytest.mark.slow
def test_the_built_wheel_carries_the_template_and_init_works_from_it(tmp_path: Path) -> None:
    """The wheel, installed on its own (no checkout on the path) and run from `/`, writes a
    runbook from the template inside it, and config check accepts that runbook."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("preskool_dr/data/runbook.yaml")
    assert packaged == shipped_runbook_path().read_bytes()

    site = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESKOOL_DR_", "DB_"))}
    env |= {"PYTHONPATH": str(site), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    where = python("-c", "import preskool_dr; print(preskool_dr.__file__)")
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    runbook = tmp_path / "etc" / "runbook.yaml"
    made = python(
        "-m", "preskool_dr", "init", "--path", str(runbook),
        "--backup-dir", str(tmp_path / "b"), "--state-dir", str(tmp_path / "s"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    checked = python("-m", "preskool_dr", "--runbook", str(runbook), "config", "check")
    assert checked.returncode == 0, checked.stderr
    assert "result     valid" in checked.stdout


def test_config_check_says_when_this_shell_differs_from_the_env_file(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """An .env (as an older init wrote it) names the state folder the jobs use; a shell
    without it sees another."""
    runbook, made = init(tmp_path)
    assert made.returncode == 0, made.stderr
    env_file = runbook.parent / "preskool-dr.env"
    with env_file.open("a") as text:
        text.write(f"PRESKOOL_DR_STATE_DIR={tmp_path / 'site-state'}\n")
    shell = run_cli("--runbook", str(runbook), "config", "check")  # state dir from base_env
    assert f"{env_file} sets PRESKOOL_DR_STATE_DIR={tmp_path / 'site-state'}" in shell.stdout
    loaded = os.environ | {
        "PRESKOOL_DR_STATE_DIR": str(tmp_path / "site-state"),
        "PRESKOOL_DR_RUNBOOK": str(runbook),
    }
    jobs = run_cli("config", "check", env=loaded)
    assert jobs.returncode == 0, jobs.stderr
    assert f"{env_file} sets" not in jobs.stdout
    assert "found by PRESKOOL_DR_RUNBOOK" in jobs.stdout
