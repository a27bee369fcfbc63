"""`preskool-dr check`: Nagios states and exit codes, --json, --prometheus, restore-test
results. Backups are fabricated with chosen names (the catalog reads their time from it)."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.base.events import utcnow
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.restore.test_record import (
    read_restore_test_result,
    record_restore_test_result,
)
from tests.support.backups import fabricate
from tests.support.checks import check_line, restore_test_passed
from tests.support.cli import call_cli
from tests.support.db import Database
from tests.support.leaks import AWS_SECRET
from tests.support.runbook import REPO

MIB = 1024 * 1024
CHECKS = ["backup_age", "backup_size", "s3_replication", "restore_test"]


@pytest.fixture
def check_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """BACKUP_DIR, state dir and the shipped runbook; no database, no S3. Returns BACKUP_DIR."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "PG", "DB_", "PRESKOOL_DR_")) or var == "S3_BUCKET":
            monkeypatch.delenv(var, raising=False)
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)  # a world-readable BACKUP_DIR is a WARNING of its own
    monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
    monkeypatch.setenv("PRESKOOL_DR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(REPO / "runbook.yaml"))
    restore_test_passed(tmp_path / "state")  # the cases below are about the backups
    return backup_dir


def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = call_cli("check", *args, env=env)
    assert result.stderr == ""
    assert AWS_SECRET not in result.stdout
    return result.returncode, result.stdout.splitlines()


# ---------------------------------------------------------------- states and exit codes


def test_fresh_backup_is_ok_and_unset_things_are_reported_not_alerts(check_env: Path) -> None:
    fabricate(check_env, hours=40)
    newest = fabricate(check_env, hours=2)
    code, lines = check()
    assert code == 0
    assert lines[0].startswith(f"PRESKOOL_DR OK - latest backup {newest.name} (daily) is 2.0 h old")
    assert re.search(
        r" \| backup_age=7\d{3}s;90000;93600;0 backup_size=2097152B;1048576:;;0$", lines[0]
    )
    assert len(lines) == 5
    assert check_line(lines, "backup_size") == "OK       backup_size: latest backup is 2.0M"
    assert check_line(lines, "s3_replication") == "OK       s3_replication: S3 not configured"
    assert check_line(lines, "restore_test").startswith(
        "OK       restore_test: restore test passed"
    )


def test_a_restore_test_never_recorded_is_a_warning(check_env: Path, tmp_path: Path) -> None:
    """No record in the state folder: nobody knows the backups restore (or the test runs as
    a user whose state this one does not see): WARNING, saying where it looked."""
    fabricate(check_env, hours=2)
    record = tmp_path / "state" / "restore-test" / "last.json"
    record.unlink()
    code, lines = check()
    assert code == 1
    assert lines[0].startswith("PRESKOOL_DR WARNING - Restore test never run: no record in")
    assert check_line(lines, "restore_test") == (
        f"WARNING  restore_test: Restore test never run: no record in {record} (run "
        "`preskool-dr restore-test`; if it runs as another user, give both the same "
        "state_dir in runbook.yaml)"
    )


@pytest.mark.parametrize(
    ("hours", "size", "exit_code", "phrases"),
    [
        (25.5, 2 * MIB, 1, ["WARNING - Backup late: latest backup", "is 25.5 h old (> 25 h)"]),
        (2, 100 * 1024, 1, ["WARNING - Backup small: ", "is 100.0K (< 1.0M)"]),
        (27, 2 * MIB, 2, ["CRITICAL - Backup missing: no new backup for 27.0 h (> 26 h)"]),
        # Both alerts, the critical one first.
        (30, 10, 2, ["CRITICAL - Backup missing: no new backup for 30.0 h", "; Backup small: "]),
    ],
)
def test_age_and_size_thresholds(
    check_env: Path, hours: float, size: int, exit_code: int, phrases: list[str]
) -> None:
    fabricate(check_env, hours=hours, size=size)
    code, lines = check()
    assert code == exit_code
    assert lines[0].startswith("PRESKOOL_DR ")
    for phrase in phrases:
        assert phrase in lines[0]


def test_no_backup_at_all_is_critical(check_env: Path) -> None:
    (check_env / "notes.txt").write_text("not a backup")
    code, lines = check()
    assert code == 2
    assert lines[0] == f"PRESKOOL_DR CRITICAL - Backup missing: no backup in {check_env}"
    (check_env / "notes.txt").unlink()
    check_env.rmdir()  # never created: still "no backup", not a broken check
    code, lines = check()
    assert code == 2 and "Backup missing" in lines[0]


def test_unreadable_backup_dir_is_unknown(check_env: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, lines = check(env=os.environ | {"BACKUP_DIR": str(not_a_dir)})
    assert code == 3
    assert lines[0].startswith(f"PRESKOOL_DR UNKNOWN - cannot read backup directory {not_a_dir}")
    if os.geteuid() != 0:  # root reads a mode-000 folder anyway
        check_env.chmod(0)
        try:
            code, lines = check()
        finally:
            check_env.chmod(0o700)
        assert code == 3 and "Permission denied" in lines[0]


def test_bad_config_is_unknown(check_env: Path, tmp_path: Path) -> None:
    runbook = tmp_path / "runbook.yaml"
    runbook.write_text("version: 1\nthresholds:\n  backup_warn_age_hours: soon\n")
    code, lines = check(env=os.environ | {"PRESKOOL_DR_RUNBOOK": str(runbook)})
    assert code == 3
    assert lines[0].startswith(f"PRESKOOL_DR UNKNOWN - {runbook}:3: ")
    code, lines = check("--json", env=os.environ | {"DB_PORT": "not-a-port"})
    assert code == 3
    data = json.loads("\n".join(lines))
    assert data["status"] == "UNKNOWN" and data["exit_code"] == 3
    assert "DB_PORT" in data["checks"][0]["summary"]
    # --runbook before the subcommand, pointing nowhere.
    result = call_cli("--runbook", str(tmp_path / "missing.yaml"), "check")
    assert result.returncode == 3 and "runbook file not found" in result.stdout


def test_thresholds_come_from_the_runbook(check_env: Path, tmp_path: Path) -> None:
    text = (REPO / "runbook.yaml").read_text()
    runbook = tmp_path / "runbook.yaml"
    runbook.write_text(text.replace("backup_warn_age_hours: 25", "backup_warn_age_hours: 1"))
    fabricate(check_env, hours=2)
    code, lines = check(env=os.environ | {"PRESKOOL_DR_RUNBOOK": str(runbook)})
    assert code == 1 and "is 2.0 h old (> 1 h)" in lines[0]


# ---------------------------------------------------------------- --json and --prometheus


def test_json_output(check_env: Path) -> None:
    newest = fabricate(check_env, hours=2, size=512 * 1024)
    code, lines = check("--json")
    assert code == 1
    data = json.loads("\n".join(lines))
    assert data["status"] == "WARNING" and data["exit_code"] == 1
    assert [c["name"] for c in data["checks"]] == CHECKS
    by_name = {c["name"]: c for c in data["checks"]}
    assert set(by_name["backup_age"]) == {"name", "status", "summary", "value"}
    assert by_name["backup_age"]["status"] == "OK"
    assert 7200 <= by_name["backup_age"]["value"] < 7500
    assert newest.name in by_name["backup_age"]["summary"]
    assert by_name["backup_size"] == {
        "name": "backup_size",
        "status": "WARNING",
        "summary": f"Backup small: {newest.name} is 512.0K (< 1.0M)",
        "value": 512 * 1024,
    }
    assert by_name["s3_replication"]["value"] is None


PROM_LINE = re.compile(r'^(preskool_dr_[a-z0-9_]+)(\{check="[a-z0-9_]+"\})? (-?[0-9.e+]+)$')


def parse_prometheus(text: str) -> dict[str, float]:
    """Values by `name{labels}`, asserting every sample has HELP and TYPE gauge before it."""
    assert text.endswith("\n")
    values: dict[str, float] = {}
    described: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            described.add(line.split()[2])
        elif line.startswith("# TYPE "):
            assert line.split()[3] == "gauge"
        else:
            match = PROM_LINE.match(line)
            assert match, line
            assert match.group(1) in described
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def test_prometheus_textfile(check_env: Path, tmp_path: Path) -> None:
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    target = textfile_dir / "preskool_dr.prom"
    target.write_text("stale content from an old run\n")
    newest = fabricate(check_env, hours=25.5)
    record_restore_test_result(
        Path(os.environ["PRESKOOL_DR_STATE_DIR"]), ok=True, backup=newest.name, detail="18 tables"
    )
    code, lines = check("--prometheus", str(target))
    assert code == 1 and lines[0].startswith("PRESKOOL_DR WARNING - Backup late")
    values = parse_prometheus(target.read_text())
    assert values["preskool_dr_status"] == 1
    assert values['preskool_dr_check_status{check="backup_age"}'] == 1
    assert values['preskool_dr_check_status{check="backup_size"}'] == 0
    assert values['preskool_dr_check_status{check="restore_test"}'] == 0
    assert 25.5 * 3600 <= values["preskool_dr_latest_backup_age_seconds"] < 25.6 * 3600
    assert values["preskool_dr_latest_backup_bytes"] == 2 * MIB
    assert values["preskool_dr_restore_test_ok"] == 1
    assert "preskool_dr_restore_test_timestamp_seconds" in values
    assert "preskool_dr_s3_replicated" not in values  # no bucket: unknown, so absent
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(textfile_dir) == ["preskool_dr.prom"]  # no temp file left behind


def test_prometheus_when_the_check_cannot_run(check_env: Path, tmp_path: Path) -> None:
    target = tmp_path / "preskool_dr.prom"
    code, _ = check("--prometheus", str(target), env=os.environ | {"DB_PORT": "x"})
    assert code == 3
    values = parse_prometheus(target.read_text())
    assert values["preskool_dr_status"] == 3  # a stale OK file would hide the breakage
    code, lines = check("--prometheus", str(tmp_path / "missing" / "x.prom"))
    assert code == 3
    assert "UNKNOWN  prometheus_file: cannot write" in "\n".join(lines)


# ---------------------------------------------------------------- restore-test results


@pytest.mark.parametrize(
    ("ok", "days_ago", "exit_code", "summary"),
    [
        (True, 1, 0, "restore test passed 1.0 d ago on {name}"),
        (False, 1, 1, "Restore test failed 1.0 d ago on {name}: table fees missing"),
        (True, 9, 1, "Restore test stale: last passed 9.0 d ago on {name} (> 8 d)"),
        (False, 9, 1, "Restore test failed 9.0 d ago on {name}: table fees missing"),
    ],
)
def test_restore_test_results(
    check_env: Path, ok: bool, days_ago: float, exit_code: int, summary: str
) -> None:
    newest = fabricate(check_env, hours=1)
    state = Path(os.environ["PRESKOOL_DR_STATE_DIR"])
    path = record_restore_test_result(
        state,
        ok=ok,
        backup=newest.name,
        detail="all good" if ok else "table fees missing",
        finished_at=utcnow() - timedelta(days=days_ago),
        extra={"duration_seconds": 12.5, "ok": "extra cannot override"},
    )
    assert path == state / "restore-test" / "last.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data["ok"] is ok and data["backup"] == newest.name
    assert data["duration_seconds"] == 12.5
    assert data["finished_at"].endswith("Z")
    recorded = read_restore_test_result(state)
    assert recorded is not None and recorded.ok is ok
    code, lines = check()
    assert code == exit_code
    line = check_line(lines, "restore_test")
    assert line.endswith(summary.format(name=newest.name)), line


def test_unreadable_restore_test_result_is_a_warning(check_env: Path) -> None:
    fabricate(check_env, hours=1)
    state = Path(os.environ["PRESKOOL_DR_STATE_DIR"])
    (state / "restore-test").mkdir(parents=True, exist_ok=True)
    (state / "restore-test" / "last.json").write_text('{"ok": "yes"')
    code, lines = check()
    assert code == 1
    assert "Restore test unknown: restore-test result" in check_line(lines, "restore_test")


# ---------------------------------------------------------------- S3 replication


def test_s3_replication(s3: str, database: Database) -> None:
    restore_test_passed()
    backup_dir = Path(os.environ["BACKUP_DIR"])
    older = fabricate(backup_dir, hours=30)
    newest = fabricate(backup_dir, hours=2)
    client = boto3.client("s3")
    client.upload_file(str(older), s3, f"preskool-backups/{older.name}")
    code, lines = check()
    assert code == 1
    assert lines[0].startswith(
        f"PRESKOOL_DR WARNING - S3 upload failed: s3://{s3}/preskool-backups/"
    )
    assert newest.name in lines[0]

    client.upload_file(str(newest), s3, f"preskool-backups/{newest.name}")
    # A newer pre-deploy backup stays local by design: not an S3 alert.
    fabricate(backup_dir, hours=1, kind="pre-deploy")
    code, lines = check("--json")
    assert code == 0
    replication = json.loads("\n".join(lines))["checks"][2]
    assert replication == {
        "name": "s3_replication",
        "status": "OK",
        "summary": f"{newest.name} is in s3://{s3}/preskool-backups/ (STANDARD)",
        "value": True,
    }


def test_unreachable_s3_is_a_warning_with_the_reason(s3: str, database: Database) -> None:
    fabricate(Path(os.environ["BACKUP_DIR"]), hours=2)
    env = os.environ | {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_MAX_ATTEMPTS": "1",
    }
    code, lines = check(env=env)
    assert code == 1
    assert lines[0].startswith("PRESKOOL_DR WARNING - S3 check failed: ")
    assert "cannot reach the S3 endpoint" in lines[0]
