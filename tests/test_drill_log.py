"""The signed drill log, with real OpenSSH keys and `ssh-keygen -Y` checks, through the core
API and through `python -m preskool_dr drill-log ...` subprocesses."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from preskool_dr.core.base.errors import NotFoundError, UsageError
from preskool_dr.core.drill.append import (
    AppendResult,
    TornLogError,
    append_entry,
    countersign_entry,
    sign_entry,
)
from preskool_dr.core.drill.entry import ZERO_SHA256, canonical_bytes, read_log, sha256_hex
from preskool_dr.core.drill.export import MARKDOWN_HEADER, format_duration
from preskool_dr.core.drill.repair import repair_log
from preskool_dr.core.drill.signing import NAMESPACE, SigningKey, key_from_file, resolve_key, sign
from preskool_dr.core.drill.verify import verify_log
from tests.support.leaks import PASSWORD
from tests.support.runbook import REPO

PYTHON = str(REPO / ".venv" / "bin" / "python")
PASSPHRASE = "correct-horse-MARKER-91"


@dataclass
class Keys:
    alice: SigningKey
    bob: SigningKey
    mallory: SigningKey  # a real key that is not in allowed_signers
    locked: SigningKey  # passphrase-protected, principal "carol"
    allowed: Path  # allowed_signers: alice, bob, carol


def _keygen(path: Path, comment: str, passphrase: str = "") -> SigningKey:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return key_from_file(path)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Keys:
    # Signing must not depend on whatever agent or askpass the developer's shell has.
    for var in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "keys"
    folder.mkdir()
    alice = _keygen(folder / "alice", "alice")
    bob = _keygen(folder / "bob", "bob")
    mallory = _keygen(folder / "mallory", "mallory")
    locked = _keygen(folder / "carol", "carol", PASSPHRASE)
    allowed = folder / "allowed_signers"
    allowed.write_text(
        "".join(
            f'{name} namespaces="{NAMESPACE}" {(folder / f"{name}.pub").read_text()}'
            for name in ("alice", "bob", "carol")
        )
    )
    return Keys(alice, bob, mallory, locked, allowed)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def log(state: Path) -> Path:
    return state / "drill-log.jsonl"


def drill_fields(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "performed_by": "alice",
        "backup": "preskool-backup-20250314_020000.sql.gz",
        "backup_md5": "0123456789abcdef0123456789abcdef",
        "incident_declared_at": "2025-03-14T09:00:00Z",
        "app_accessible_at": "2025-03-14T10:12:30Z",
        "rto_seconds": 4350,
        "rpo_seconds": 25200,
        "result": "pass",
        "steps": [{"id": "identify", "status": "done"}, {"id": "restore", "status": "done"}],
        "target_db": "preskool_drill",
        "rto_target_seconds": 7200,
        "rto_met": True,
    }
    fields.update(over)
    return fields


def record(log: Path, key: SigningKey | None, signer: str = "alice", **over: Any) -> AppendResult:
    return append_entry(log, drill_fields(**over), signer=signer, key=key)


def lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines()


def write_lines(log: Path, new: list[bytes]) -> None:
    log.write_bytes(b"".join(line + b"\n" for line in new))


def first_problem(log: Path, keys: Keys) -> tuple[int, str]:
    problem = verify_log(log, keys.allowed).first_problem
    assert problem is not None
    return problem.line, problem.kind


def cli_env(state: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY", "WAYLAND_DISPLAY")
        and not k.startswith(("PRESKOOL_DR_", "DB_", "PG"))
    }
    env.update(
        PRESKOOL_DR_STATE_DIR=str(state),
        PRESKOOL_DR_RUNBOOK=str(REPO / "runbook.yaml"),
        PGPASSWORD=PASSWORD,
    )
    return env


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PYTHON, "-m", "preskool_dr", *args],
        env=cli_env(state),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert PASSWORD not in result.stdout + result.stderr
    return result


# ---------------------------------------------------------------- signing and the chain


def test_entry_signature_verifies_with_ssh_keygen_itself(keys: Keys, log: Path) -> None:
    result = record(log, keys.alice)
    assert result.signed and result.line == 1
    assert "signed by alice" in result.message
    (raw,) = lines(log)
    assert sha256_hex(raw) == result.sha256
    entry = json.loads(raw)
    for name in (
        "version", "date", "performed_by", "backup", "backup_md5", "incident_declared_at",
        "app_accessible_at", "rto_seconds", "rpo_seconds", "result", "steps",
        "prev_sha256", "signer", "signature",
    ):  # fmt: skip
        assert name in entry, name
    assert entry["type"] == "drill"
    assert entry["prev_sha256"] == ZERO_SHA256
    assert entry["signer"] == "alice"
    assert entry["signature"].startswith("-----BEGIN SSH SIGNATURE-----")

    # What anyone can do with only OpenSSH: canonical bytes + signature -> ssh-keygen.
    body = {k: v for k, v in entry.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.encode() == canonical_bytes(entry)
    message = log.parent / "canonical.json"
    message.write_bytes(canonical.encode())
    sigfile = log.parent / "entry.sig"
    sigfile.write_text(entry["signature"])
    argv = ["ssh-keygen", "-Y", "verify", "-f", str(keys.allowed), "-I", "alice", "-n", NAMESPACE]
    with message.open("rb") as stdin:
        good = subprocess.run([*argv, "-s", str(sigfile)], stdin=stdin, capture_output=True)
    assert good.returncode == 0, good.stderr
    assert b"Good" in good.stdout + good.stderr

    # The same signature over one changed byte of the entry is refused by ssh-keygen.
    message.write_bytes(canonical.replace('"rto_seconds":4350', '"rto_seconds":4351').encode())
    with message.open("rb") as stdin:
        bad = subprocess.run([*argv, "-s", str(sigfile)], stdin=stdin, capture_output=True)
    assert bad.returncode != 0


def test_each_line_names_the_hash_of_the_one_before(keys: Keys, log: Path) -> None:
    first = record(log, keys.alice)
    second = record(log, keys.bob, signer="bob", performed_by="bob")
    countersign_entry(log, "1", signer="bob", key=keys.bob)
    raws = lines(log)
    assert json.loads(raws[1])["prev_sha256"] == sha256_hex(raws[0]) == first.sha256
    assert json.loads(raws[2])["prev_sha256"] == sha256_hex(raws[1]) == second.sha256
    assert json.loads(raws[2])["entry_sha256"] == first.sha256
    report = verify_log(log, keys.allowed)
    assert report.ok, report.problems
    assert [(v.line, v.signed_by, v.countersigned_by) for v in report.drills] == [
        (1, "alice", [("bob", 3)]),
        (2, "bob", []),
    ]


def test_entry_fields_are_checked_and_made_plain_json(keys: Keys, log: Path) -> None:
    with pytest.raises(ValueError, match="backup_md5"):
        append_entry(log, {"performed_by": "alice"}, signer="alice", key=keys.alice)
    with pytest.raises(ValueError, match="signature"):
        record(log, keys.alice, signature="forged")
    assert not log.exists() or log.read_bytes() == b""
    result = record(log, keys.alice, incident_declared_at=datetime(2025, 3, 14, 9, 0, tzinfo=UTC))
    assert result.entry["incident_declared_at"] == "2025-03-14T09:00:00Z"
    assert verify_log(log, keys.allowed).ok


# ---------------------------------------------------------------- verify finds the first bad line


def _three(log: Path, keys: Keys) -> None:
    record(log, keys.alice)
    record(log, keys.alice, performed_by="alice", rto_seconds=5000)
    record(log, keys.bob, signer="bob", performed_by="bob")


def test_cli_verify_show_and_json_on_a_valid_log(keys: Keys, state: Path, log: Path) -> None:
    _three(log, keys)
    countersign_entry(log, "2", signer="bob", key=keys.bob)
    result = cli(state, "drill-log", "verify", "--allowed-signers", str(keys.allowed))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID" in result.stdout
    assert "signed by alice; countersigned by bob (line 4)" in result.stdout

    # A file next to the log is no trust root: signatures unchecked, not valid (exit 2).
    (state / "allowed_signers").write_text(keys.allowed.read_text())
    unchecked = cli(state, "drill-log", "verify", "--json")
    assert unchecked.returncode == 2
    data = json.loads(unchecked.stdout)
    assert data["valid"] is False and data["chain_ok"] is True
    assert data["signatures_checked"] is False and data["allowed_signers"] is None
    assert "no longer used on its own" in unchecked.stderr

    result = cli(state, "drill-log", "verify", "--json", "--allowed-signers", str(keys.allowed))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["first_problem"] is None
    assert data["drills"][1]["countersigned_by"] == [{"signer": "bob", "line": 4}]

    shown = cli(state, "drill-log", "show")
    assert shown.returncode == 0
    assert "3 drills in 4 lines" in shown.stdout
    assert "RTO 1 h 12 m   RPO 7 h 0 m" in shown.stdout
    assert "signed by alice; countersigned by bob" in shown.stdout
    sha = sha256_hex(lines(log)[1])
    assert f"#2  {sha[:12]}" in shown.stdout
    as_json = json.loads(cli(state, "drill-log", "show", "--json").stdout)
    assert [d["signed_by"] for d in as_json] == ["alice", "alice", "bob"]
    assert as_json[1]["sha256"] == sha


def _verify_fails_at(state: Path, keys: Keys, line: int, kind: str) -> str:
    result = cli(state, "drill-log", "verify", "--allowed-signers", str(keys.allowed))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"INVALID: first bad line {line} ({kind})" in result.stdout, result.stdout
    return result.stdout


def test_verify_names_a_changed_field(keys: Keys, state: Path, log: Path) -> None:
    _three(log, keys)
    raws = lines(log)
    entry = json.loads(raws[1])
    entry["rto_seconds"] = 60  # a better RTO than achieved
    raws[1] = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
    write_lines(log, raws)
    out = _verify_fails_at(state, keys, 2, "tampered")
    assert "changed after it was signed" in out


def test_verify_names_a_removed_line(keys: Keys, state: Path, log: Path) -> None:
    _three(log, keys)
    raws = lines(log)
    write_lines(log, [raws[0], raws[2]])
    assert "removed, inserted or reordered" in _verify_fails_at(state, keys, 2, "chain")


def test_verify_names_swapped_lines(keys: Keys, state: Path, log: Path) -> None:
    _three(log, keys)
    raws = lines(log)
    write_lines(log, [raws[0], raws[2], raws[1]])
    _verify_fails_at(state, keys, 2, "chain")


def test_verify_names_a_removed_first_line(keys: Keys, log: Path) -> None:
    _three(log, keys)
    write_lines(log, lines(log)[1:])
    assert first_problem(log, keys) == (1, "chain")


def test_verify_rejects_keys_not_allowed_for_the_signer(keys: Keys, state: Path, log: Path) -> None:
    record(log, keys.alice)
    record(log, keys.mallory, signer="mallory", performed_by="mallory")
    out = _verify_fails_at(state, keys, 2, "untrusted")
    assert "not in" in out and str(keys.allowed) in out

    # bob's genuine key cannot sign in alice's name.
    other = log.with_name("other.jsonl")
    record(other, keys.bob, signer="alice")
    report = verify_log(other, keys.allowed)
    assert report.first_problem is not None
    assert report.first_problem.kind == "untrusted"
    assert "bob" in report.first_problem.message and "'alice'" in report.first_problem.message


def test_verify_names_a_corrupt_middle_line(keys: Keys, log: Path) -> None:
    _three(log, keys)
    raws = lines(log)
    raws[1] = raws[1][:40]
    write_lines(log, raws)
    assert first_problem(log, keys) == (2, "corrupt")


def test_unsigned_entry_is_invalid_until_signed(keys: Keys, state: Path, log: Path) -> None:
    record(log, keys.alice)
    result = record(log, None, performed_by="alice")
    assert not result.signed and result.entry["signature"] is None
    assert result.entry["signer"] == "alice"
    assert f"drill-log sign 2 --drill-log {log}" in result.message
    out = _verify_fails_at(state, keys, 2, "unsigned")
    assert "UNSIGNED" in out
    shown = cli(state, "drill-log", "show")
    assert "UNSIGNED" in shown.stdout

    # sign by sha256 prefix: a new line, the old ones untouched.
    before = lines(log)
    sha = sha256_hex(before[1])
    signed = cli(state, "drill-log", "sign", sha[:10], "--sign-key", str(keys.alice.path))
    assert signed.returncode == 0, signed.stderr
    assert "signature by alice for line 2 recorded at line 3" in signed.stdout
    after = lines(log)
    assert after[:2] == before
    sign_line = json.loads(after[2])
    assert sign_line["type"] == "sign" and sign_line["entry_sha256"] == sha

    ok = cli(state, "drill-log", "verify", "--allowed-signers", str(keys.allowed))
    assert ok.returncode == 0, ok.stdout
    assert "signed by alice (line 3)" in ok.stdout

    again = cli(state, "drill-log", "sign", "2", "--sign-key", str(keys.alice.path))
    assert again.returncode == 2
    assert "already signed by alice on line 3" in again.stderr


def test_countersign_by_a_second_key_shows_both_signers(keys: Keys, state: Path, log: Path) -> None:
    record(log, keys.alice)
    result = cli(
        state, "drill-log", "countersign", "1", "--signer", "bob", "--sign-key", str(keys.bob.path)
    )
    assert result.returncode == 0, result.stderr
    assert "countersignature by bob for line 1 recorded at line 2" in result.stdout
    line = json.loads(lines(log)[1])
    assert line["type"] == "countersign"
    assert line["entry_sha256"] == sha256_hex(lines(log)[0])
    for name in ("date", "prev_sha256", "signer", "signature"):
        assert line[name]

    ok = cli(state, "drill-log", "verify", "--allowed-signers", str(keys.allowed))
    assert ok.returncode == 0, ok.stdout
    assert "signed by alice; countersigned by bob (line 2)" in ok.stdout

    twice = cli(state, "drill-log", "countersign", "1", "--signer", "bob", "--sign-key",
                str(keys.bob.path))  # fmt: skip
    assert twice.returncode == 2 and "already countersigned by bob" in twice.stderr
    not_drill = cli(state, "drill-log", "countersign", "2", "--signer", "alice", "--sign-key",
                    str(keys.alice.path))  # fmt: skip
    assert not_drill.returncode == 2 and "not a drill entry" in not_drill.stderr


def test_countersign_with_the_key_from_runbook_yaml(keys: Keys, state: Path, log: Path) -> None:
    record(log, keys.alice)
    runbook = state / "runbook.yaml"
    text = (REPO / "runbook.yaml").read_text()
    runbook.write_text(text.replace("drill:\n", f"drill:\n  sign_key: {keys.bob.path}\n", 1))
    result = cli(
        state, "--runbook", str(runbook), "drill-log", "countersign", "1", "--signer", "bob"
    )
    assert result.returncode == 0, result.stderr
    assert verify_log(log, keys.allowed).drills[0].countersigned_by == [("bob", 2)]


def test_entry_references(keys: Keys, log: Path) -> None:
    record(log, None)
    with pytest.raises(NotFoundError, match="no line 5"):
        sign_entry(log, "5", key=keys.alice)
    sha = sha256_hex(lines(log)[0])
    wrong = ("1" if sha[0] == "0" else "0") + sha[1:8]
    with pytest.raises(NotFoundError, match="sha256 starting with"):
        sign_entry(log, wrong, key=keys.alice)
    with pytest.raises(UsageError, match="neither a line number"):
        sign_entry(log, "abc", key=keys.alice)
    with pytest.raises(UsageError, match="no signing key"):
        sign_entry(log, "1", key=None)
    result = sign_entry(log, "#1", key=keys.alice)
    assert result.entry["entry_line"] == 1


# ---------------------------------------------------------------- export


def test_markdown_export_is_the_runbook_table(keys: Keys, state: Path, log: Path) -> None:
    record(log, keys.alice, date="2025-03-14T11:02:00Z", rto_seconds=4350, rpo_seconds=51779)
    record(
        log,
        keys.bob,
        signer="bob",
        date="2025-06-12T23:59:59+00:00",
        performed_by="bob | night shift",
        backup="preskool-backup-20250612_020000.sql.gz",
        rto_seconds=2525,
        rpo_seconds=7200,
        result="fail",
    )
    countersign_entry(log, "1", signer="bob", key=keys.bob)  # not a drill: no row
    result = cli(state, "drill-log", "export", "--format", "markdown")
    assert result.returncode == 0, result.stderr
    assert result.stdout == textwrap.dedent("""\
        | Date | Performed By | Backup Used | RTO Achieved | RPO Window | Result |
        |------|-------------|-------------|--------------|------------|--------|
        | 2025-03-14 | alice | preskool-backup-20250314_020000.sql.gz | 1 h 12 m | 14 h 22 m | pass |
        | 2025-06-12 | bob \\| night shift | preskool-backup-20250612_020000.sql.gz | 42 m | 2 h 0 m | fail |
        """)
    assert result.stdout.startswith(MARKDOWN_HEADER)


def test_format_duration() -> None:
    assert format_duration(4350) == "1 h 12 m"
    assert format_duration(51779) == "14 h 22 m"
    assert format_duration(7199.9) == "1 h 59 m"  # rounded down: never flatters an RTO
    assert format_duration(95000) == "26 h 23 m"
    assert format_duration(59) == "59 s"
    assert format_duration(None) == "n/a"


# ---------------------------------------------------------------- concurrency and crashes


def test_concurrent_appends_from_two_processes_keep_the_chain(keys: Keys, log: Path) -> None:
    script = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from preskool_dr.core.drill.append import append_entry
        from preskool_dr.core.drill.signing import SigningKey
        who = sys.argv[1]
        key = SigningKey(path=Path(sys.argv[2]))
        for i in range(20):
            fields = {{**{drill_fields()!r}, "performed_by": f"{{who}}-{{i}}"}}
            append_entry(Path({str(log)!r}), fields, signer=who, key=key)
        """)
    procs = [
        subprocess.Popen([PYTHON, "-c", script, name, str(key.path)], cwd=REPO)
        for name, key in (("alice", keys.alice), ("bob", keys.bob))
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    raws = lines(log)
    assert len(raws) == 40
    assert log.read_bytes().endswith(b"\n")
    report = verify_log(log, keys.allowed)
    assert report.ok, report.problems[:3]
    performers = {v.entry["performed_by"] for v in report.drills}
    assert performers == {f"{who}-{i}" for who in ("alice", "bob") for i in range(20)}


def test_torn_last_line_is_detected_refused_and_repaired(
    keys: Keys, state: Path, log: Path
) -> None:
    _three(log, keys)
    whole = log.read_bytes()
    with log.open("r+b") as handle:
        handle.truncate(len(whole) - 200)  # a crash in the middle of writing line 3
    fragment = lines(log)[2]

    assert first_problem(log, keys) == (3, "torn")
    out = _verify_fails_at(state, keys, 3, "torn")
    assert "repair" in out

    with pytest.raises(TornLogError, match=r"incomplete line 3 .*drill-log repair"):
        record(log, keys.alice)
    refused = cli(state, "drill-log", "countersign", "1", "--signer", "bob", "--sign-key",
                  str(keys.bob.path))  # fmt: skip
    assert refused.returncode == 1 and "drill-log repair" in refused.stderr
    assert log.read_bytes() == whole[: len(whole) - 200]  # nothing chained onto it

    assert "line 3 is torn" in cli(state, "drill-log", "show").stdout
    dry = cli(state, "drill-log", "repair")
    assert dry.returncode == 1 and "--yes" in dry.stdout
    done = cli(state, "drill-log", "repair", "--yes")
    assert done.returncode == 0, done.stderr
    (kept,) = state.glob("drill-log.jsonl.torn-*")
    assert kept.read_bytes() == fragment
    assert verify_log(log, keys.allowed).ok
    assert record(log, keys.alice).line == 3
    assert verify_log(log, keys.allowed).ok
    assert cli(state, "drill-log", "repair").stdout.endswith(
        "nothing to repair, the last line is complete\n"
    )


def test_a_whole_last_line_missing_its_newline_is_completed(keys: Keys, log: Path) -> None:
    _three(log, keys)
    whole = log.read_bytes()
    log.write_bytes(whole[:-1])
    assert first_problem(log, keys) == (3, "torn")
    repaired = repair_log(log)
    assert repaired is not None and repaired.moved_to is None
    assert log.read_bytes() == whole
    assert verify_log(log, keys.allowed).ok


# ---------------------------------------------------------------- keys


def test_passphrase_key_without_a_terminal_fails_clearly(
    keys: Keys, state: Path, log: Path
) -> None:
    result = record(log, keys.locked, signer="carol", performed_by="carol")
    assert not result.signed  # the drill is still recorded
    assert "passphrase" in result.message and "ssh-add" in result.message
    assert "drill-log sign 1" in result.message

    cmd = cli(state, "drill-log", "sign", "1", "--sign-key", str(keys.locked.path))
    assert cmd.returncode == 1
    assert "protected by a passphrase" in cmd.stderr and "ssh-add" in cmd.stderr
    assert len(lines(log)) == 1
    assert first_problem(log, keys) == (1, "unsigned")


def test_sign_on_a_terminal_asks_for_the_passphrase_without_echo(
    keys: Keys, state: Path, log: Path
) -> None:
    """`drill-log sign` on a terminal (a pty here) lets ssh-keygen ask, echo off."""
    record(log, None, signer="carol", performed_by="carol")
    wrong = "not-the-passphrase-MARKER"
    first = _sign_on_terminal(state, keys, wrong)
    assert first.returncode == 1, first.output
    assert b"wrong passphrase" in first.output
    assert len(lines(log)) == 1
    second = _sign_on_terminal(state, keys, PASSPHRASE)
    assert second.returncode == 0, second.output
    assert b"signature by carol for line 1" in second.output
    for typed, run in ((wrong, first), (PASSPHRASE, second)):
        assert b"passphrase" in run.output.lower()  # the prompt was shown...
        assert typed.encode() not in run.output  # ...and what was typed was not
    report = verify_log(log, keys.allowed)
    assert report.ok and report.drills[0].signed_by == "carol"


@dataclass
class _TerminalRun:
    returncode: int
    output: bytes


def _sign_on_terminal(state: Path, keys: Keys, passphrase: str) -> _TerminalRun:
    argv = ["drill-log", "sign", "1", "--sign-key", str(keys.locked.path)]
    script = textwrap.dedent(f"""\
        import os, sys
        os.close(os.open(os.ttyname(0), os.O_RDWR))  # the pty becomes our controlling tty
        from preskool_dr.cli.main import main
        sys.exit(main({argv!r}))
        """)
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [PYTHON, "-c", script],
        cwd=REPO,
        env=cli_env(state),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen = _read_until(master, b"passphrase")
        os.write(master, passphrase.encode() + b"\n")
        seen += _read_until(master, None)
        return _TerminalRun(proc.wait(timeout=60), seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


def _read_until(fd: int, marker: bytes | None) -> bytes:
    """Read a pty until `marker` appears (or, for None, until the other side closes)."""
    seen = b""
    while marker is None or marker not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            raise AssertionError(f"no {marker!r} from the terminal; got {seen!r}")
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: every writer has closed the pty
            break
        if not chunk:
            break
        seen += chunk
    return seen


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Keys) -> Iterator[str]:
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_agent_key_signs_when_no_key_file_is_given(
    keys: Keys, log: Path, agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_key(None, None) is None  # an agent with no keys offers nothing
    subprocess.run(["ssh-add", "-q", str(keys.alice.path)], check=True, stdin=subprocess.DEVNULL)
    key = resolve_key(None, None)
    assert key is not None and key.path is None
    assert "alice" in key.describe()
    assert record(log, key).signed
    report = verify_log(log, keys.allowed)
    assert report.ok and report.drills[0].signed_by == "alice"
    # An explicit file still wins over the agent.
    assert resolve_key(keys.bob.path, None) == keys.bob


def test_key_resolution_order(keys: Keys, tmp_path: Path) -> None:
    assert resolve_key(keys.alice.path, keys.bob.path) == keys.alice
    assert resolve_key(None, keys.bob.path) == keys.bob
    assert resolve_key(None, None) is None  # no agent in this environment
    with pytest.raises(UsageError, match="does not exist"):
        resolve_key(tmp_path / "nope", None)
    assert sign(b"x", keys.alice).startswith("-----BEGIN SSH SIGNATURE-----")


# ---------------------------------------------------------------- usage errors


def test_verify_without_allowed_signers_explains_how_to_make_one(
    keys: Keys, state: Path, log: Path
) -> None:
    record(log, keys.alice)
    result = cli(state, "drill-log", "verify")
    assert result.returncode == 2
    assert "allowed_signers" in result.stderr
    assert f'namespaces="{NAMESPACE}" ssh-ed25519' in result.stderr


def test_missing_log_is_not_found(state: Path, tmp_path: Path) -> None:
    result = cli(state, "drill-log", "show")
    assert result.returncode == 2
    assert "no drill log at" in result.stderr
    other = cli(state, "drill-log", "export", "--drill-log", str(tmp_path / "none.jsonl"))
    assert other.returncode == 2 and "none.jsonl" in other.stderr
    with pytest.raises(NotFoundError):
        read_log(tmp_path / "none.jsonl")
    signing = cli(state, "drill-log", "countersign", "1", "--signer", "bob", "--sign-key", __file__)
    assert signing.returncode == 2 and "no drill log at" in signing.stderr
    assert not (state / "drill-log.jsonl").exists()  # signing did not create an empty log


def test_empty_log_is_valid(keys: Keys, state: Path, log: Path) -> None:
    log.write_bytes(b"")
    result = cli(state, "drill-log", "verify", "--allowed-signers", str(keys.allowed))
    assert result.returncode == 0 and "0 drills" in result.stdout
    assert cli(state, "drill-log", "show").stdout.startswith("Drill log")
