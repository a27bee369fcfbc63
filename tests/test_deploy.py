"""Deploying on a database host, as the README's "Deploying on the database host" says: the
built wheel in a fresh virtualenv, every command run from `/` (no checkout anywhere on the
path), in an environment with nothing of this test run's settings."""

from __future__ import annotations

import os
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from preskool_dr import __version__
from tests.support.wheel import build_wheel, fresh_venv_with


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_root_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist")
        assert "preskool_dr/data/runbook.yaml" in archive.namelist()
    assert any(r.replace(" ", "").startswith("shtab<2,>=1.7") for r in requires), requires

    bin_dir = fresh_venv_with(wheel, tmp_path / "venv")
    program = bin_dir / "preskool-dr"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }

    def operator(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(program), *args],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import preskool_dr; print(preskool_dr.__file__)"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout  # the wheel's copy

    version = operator("--version")
    assert (version.returncode, version.stdout) == (0, f"preskool-dr {__version__}\n")

    site = tmp_path / "site"
    runbook = site / "etc" / "runbook.yaml"
    made = operator(
        "init", "--path", str(runbook),
        "--backup-dir", str(site / "backups"), "--state-dir", str(site / "state"),
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert runbook.is_file() and (site / "etc" / "preskool-dr.env").is_file()

    checked = operator("--runbook", str(runbook), "config", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "result     valid" in checked.stdout
    assert "state_dir  " in checked.stdout and str(site / "state") in checked.stdout

    cron = operator(
        "--runbook", str(runbook), "schedule", "print", "cron",
        "--env-file", str(site / "etc" / "preskool-dr.env"),
    )  # fmt: skip
    assert cron.returncode == 0, cron.stderr
    lines = cron.stdout.splitlines()
    assert "CRON_TZ=UTC" in lines
    for when, job in (("0 2 * * *", "backup"), ("0 1 * * 0", "backup --kind weekly"),
                      ("0 3 * * 0", "restore-test")):  # fmt: skip
        (line,) = [ln for ln in lines if ln.startswith(f"{when} ") and f" {job} " in ln + " "
                   and (job != "backup" or "--kind" not in ln)]  # fmt: skip
        assert f"{program.resolve()} --runbook {runbook} {job}" in line, line

    completion = operator("--print-completion", "bash")
    assert completion.returncode == 0 and "_shtab_preskool_dr" in completion.stdout
