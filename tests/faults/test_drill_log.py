"""Drill log: appends from two processes at once, a process killed while appending, a write
cut short by a full disk.

Guarantee: appends hold an exclusive lock on the log and write each line with one write on
an O_APPEND descriptor, so concurrent appends from several processes keep the hash chain
and every signature valid. A process killed while appending leaves either no line or a
whole one. A write cut short (disk full) is reported at once; the torn last line is
detected by `verify`, further appends refuse to chain onto it, and `repair` sets it aside,
after which the chain is valid again: the log is never silently broken.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from preskool_dr.core.drill.append import append_entry
from preskool_dr.core.drill.entry import read_log
from preskool_dr.core.drill.signing import NAMESPACE, SigningKey, key_from_file
from preskool_dr.core.drill.verify import verify_log
from tests.support.checks import assert_says, the_error
from tests.support.cli import cli_argv, run
from tests.support.runbook import REPO
from tests.support.signing import DRILL_FIELDS

APPENDER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from preskool_dr.core.drill.append import append_entry
    from preskool_dr.core.drill.signing import SigningKey
    log, who, key, count, go = sys.argv[1:6]
    while not Path(go).exists():  # both processes start appending together
        time.sleep(0.001)
    for i in range(int(count)):
        fields = {**DRILL_FIELDS, "performed_by": f"{who}-{i}"}
        append_entry(Path(log), fields, signer=who, key=SigningKey(path=Path(key)))
    """).replace("**DRILL_FIELDS", f"**{DRILL_FIELDS!r}")


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, SigningKey]:
    for var in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "keys"
    folder.mkdir()
    found = {}
    lines = []
    for name in ("alice", "bob"):
        path = folder / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        found[name] = key_from_file(path)
        lines.append(f'{name} namespaces="{NAMESPACE}" {(folder / f"{name}.pub").read_text()}')
    (folder / "allowed_signers").write_text("".join(lines))
    return found


def allowed(keys: dict[str, SigningKey]) -> Path:
    path = keys["alice"].path
    assert path is not None
    return path.parent / "allowed_signers"


def verify_cli(log: Path, keys: dict[str, SigningKey]) -> subprocess.CompletedProcess[str]:
    return run(cli_argv("drill-log", "verify", "--drill-log", str(log), "--allowed-signers",
                        str(allowed(keys))))  # fmt: skip


def appender(log: Path, who: str, key: SigningKey, count: int, go: Path) -> subprocess.Popen[bytes]:
    # TMPDIR: a SIGKILL mid-signature leaves ssh-keygen's scratch folder behind; let it be
    # the test's, not the machine's /tmp.
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(log), who, str(key.path), str(count), str(go)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(log.parent.parent)},
    )


def test_concurrent_appends_from_two_processes_keep_the_chain(
    base_env: dict[str, str], tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    """Two processes append 15 signed entries each, started at the same instant: 30 lines,
    the chain and every signature valid (checked by `drill-log verify`, i.e. ssh-keygen)."""
    log = tmp_path / "state" / "drill-log.jsonl"
    go = tmp_path / "go"
    procs = [appender(log, who, keys[who], 15, go) for who in ("alice", "bob")]
    go.touch()
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    records = read_log(log)
    assert len(records) == 30 and all(r.complete for r in records)
    assert {r.get("performed_by") for r in records} == {
        f"{who}-{i}" for who in ("alice", "bob") for i in range(15)
    }
    result = verify_cli(log, keys)
    assert result.returncode == 0, result.stdout + result.stderr


def test_killed_while_appending_leaves_whole_lines(
    base_env: dict[str, str], tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    """SIGKILL while a process appends in a loop: every line in the log is whole and
    chained; the next append goes on from there and the log verifies."""
    log = tmp_path / "state" / "drill-log.jsonl"
    go = tmp_path / "go"
    go.touch()
    proc = appender(log, "alice", keys["alice"], 500, go)
    try:
        while not log.exists() or log.read_bytes().count(b"\n") < 10:
            assert proc.poll() is None, "the appender ended early"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    report = verify_log(log, allowed(keys))
    assert report.ok, report.problems[:3]
    append_entry(log, DRILL_FIELDS, signer="bob", key=keys["bob"])
    result = verify_cli(log, keys)
    assert result.returncode == 0, result.stdout + result.stderr


def test_write_cut_short_is_detected_refused_and_repaired(
    base_env: dict[str, str], tmp_path: Path, keys: dict[str, SigningKey]
) -> None:
    """A countersignature whose write is cut short (the file may not grow: a full disk):
    one line says so and how to repair; verify names the torn line; appends refuse to chain
    onto it; `repair --yes` sets it aside and the log verifies again."""
    log = tmp_path / "state" / "drill-log.jsonl"
    for _ in range(2):
        append_entry(log, DRILL_FIELDS, signer="alice", key=keys["alice"])
    whole = log.read_bytes()
    limit = len(whole) + 100

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def countersign(entry: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        argv = cli_argv("drill-log", "countersign", entry, "--signer", "bob", "--sign-key",
                        str(keys["bob"].path), "--drill-log", str(log))  # fmt: skip
        return run(argv, **kwargs)

    cut = countersign("1", preexec_fn=full_disk)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert_says(the_error(cut), "only 100 of", "disk full?", "drill-log repair")
    assert log.stat().st_size == limit

    checked = verify_cli(log, keys)
    assert checked.returncode == 1
    assert "line 3" in checked.stdout + checked.stderr and "torn" in checked.stdout + checked.stderr
    refused = countersign("2")
    assert refused.returncode == 1
    assert_says(the_error(refused), "incomplete line 3", "drill-log repair")
    assert log.stat().st_size == limit  # nothing chained onto the torn line

    repaired = run(cli_argv("drill-log", "repair", "--yes", "--drill-log", str(log)))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert log.read_bytes() == whole
    assert len(list(log.parent.glob("drill-log.jsonl.torn-*"))) == 1
    again = countersign("1")
    assert again.returncode == 0, again.stdout + again.stderr
    final = verify_cli(log, keys)
    assert final.returncode == 0, final.stdout + final.stderr
