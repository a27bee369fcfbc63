"""`preskool-dr` runs with captured output: as a real child process (what an operator
starts; signals, exit codes and leftovers are real) or in-process (`main(argv)` with
the given environment), for tests that check what a command prints and decides, not how
a process ends."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from preskool_dr.cli.main import main
from preskool_dr.demo.sandbox import environment

HANG_GUARD = 180.0  # seconds: only ever reached when a case is broken, never a measurement


def cli_argv(*args: str, runbook: Path | None = None) -> list[str]:
    head = [sys.executable, "-m", "preskool_dr"]
    return head + (["--runbook", str(runbook)] if runbook else []) + list(args)


def run(
    argv: list[str], env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """`argv` as a child process in `env` (default: the test's environment)."""
    return subprocess.run(
        argv,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD + 60,
        check=False,
        **kwargs,
    )


def run_cli(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m preskool_dr ARGS` as a real child process, in the test's environment."""
    return run(cli_argv(*args), env, **kwargs)


def call_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`preskool-dr ARGS` in this process: `main(argv)` with stdout and stderr captured and
    os.environ set to `env` for the call. Same exit code and output as the child process
    (argparse's usage errors exit 2 there too); no interpreter start-up per call."""
    out, err = io.StringIO(), io.StringIO()
    with (
        environment(dict(os.environ) if env is None else dict(env)),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(["preskool-dr", *args], code, out.getvalue(), err.getvalue())


def without_dac_override() -> list[str]:
    """argv prefix under which file permissions apply to this user, as to any operator.

    Root ignores permission bits through CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH; setpriv drops
    both from the child (it stays uid 0, so it can still run the venv's interpreter)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def run_cli_as(
    uid: int, gid: int, groups: list[int], *args: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """`python -m preskool_dr ARGS` as another OS user: see run_python_as."""
    return run_python_as(uid, gid, groups, "-m", "preskool_dr", *args, env=env)


def run_python_as(
    uid: int, gid: int, groups: list[int], *args: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` as another OS user (root only; skips otherwise), run from `/` by the
    system's Python 3.11+ on this checkout and the venv's packages: the venv's own
    interpreter may live where that user cannot reach (under /root). `groups` are the
    supplementary groups (a monitoring user in `preskool-dr`, or none)."""
    import sysconfig

    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    setpriv = shutil.which("setpriv")
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
    if setpriv is None or python is None:
        pytest.skip("needs setpriv and a system python3 to run as another user")
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if version.stdout.strip() != "True":
        pytest.skip(f"{python} is older than Python 3.11")
    checkout = Path(__file__).resolve().parents[2]
    packages = sysconfig.get_paths()["purelib"]
    user = [f"--reuid={uid}", f"--regid={gid}"]
    user.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    return run(
        [setpriv, *user, "--", python, *args],
        {**env, "PYTHONPATH": f"{checkout}:{packages}", "HOME": "/nonexistent"},
        cwd="/",
    )
