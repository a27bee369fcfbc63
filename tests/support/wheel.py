"""The wheel as `pip wheel .` builds it from a clean copy of the checkout, and a fresh
virtualenv to install it in (no network: its dependencies come from this test run's own
environment)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support.runbook import REPO


def build_wheel(work: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (pip builds in the source folder, and
    the checkout's build/ may hold stale files); the .whl's path."""
    wheels, source = work / "wheels", work / "source"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "bench"),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("preskool_dr-*.whl")
    return wheel


def fresh_venv_with(wheel: Path, venv: Path) -> Path:
    """A new virtualenv with `wheel` installed by its own pip (`--no-deps`, no network); the
    dependencies (textual, psycopg, boto3, apprise, shtab...) are reached through a .pth
    line naming this environment's site-packages, after the venv's own, so preskool_dr is
    the wheel's copy and never this checkout. Returns the venv's bin/ folder."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    installed = subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    purelib = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "zz_test_dependencies.pth").write_text(here + "\n")
    return bin_dir
