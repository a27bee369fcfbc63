"""`--log-format json`: the long-running commands log one JSON object per line on stderr
(journald, log shippers), through the same printing path as their text lines."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import datetime, timedelta
from typing import Any

import pytest

from preskool_dr.cli.output import JSON_PROGRESS_INTERVAL, JsonLog
from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.events import Progress, StepChanged, StepStatus
from tests.support.cli import run_cli
from tests.support.leaks import PASSWORD, assert_no_secrets
from tests.support.site import Site

REQUIRED_KEYS = {"time", "event", "step", "level", "message"}
# the order the headless restore runs them: the backup is checked before the app goes down
RUN_ORDER = [
    "identify",
    "download",
    "verify",
    "app_offline",
    "recreate_db",
    "restore",
    "migrate",
    "app_online",
    "health",
]


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Every stderr line is one JSON object with the common keys; stdout stays empty."""
    assert result.stdout == "", result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records, "no log lines"
    for record in records:
        assert record.keys() >= REQUIRED_KEYS, record
        assert datetime.fromisoformat(record["time"]).utcoffset() == timedelta(0)
        assert record["time"].endswith("Z")
    assert_no_secrets(result.stderr)
    return records


def test_restore_logs_every_step_transition_as_json(site: Site) -> None:
    run_backup(site.config(), "daily", upload=False)
    result = run_cli(
        "--runbook",
        str(site.runbook),
        "restore",
        "latest",
        "--confirm",
        site.db.name,
        "--log-format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    records = json_lines(result)
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps if r["status"] == "running"] == RUN_ORDER
    assert [r["step"] for r in steps if r["status"] == "done"] == RUN_ORDER
    assert all(r["level"] == "ok" for r in steps if r["status"] == "done")
    assert {r["number"] for r in steps} == set(range(1, 10))
    progress = [r for r in records if r["event"] == "progress"]
    assert progress and all(isinstance(r["done"], int) for r in progress)
    (run,) = [r for r in records if r["event"] == "run"]  # after step 2 chose the backup
    (outcome,) = [r for r in records if r["event"] == "result"]
    assert outcome["result"] == "done" and outcome["run_id"] == run["run_id"]
    assert isinstance(outcome["rto_seconds"], float)


def test_backup_and_verify_log_json_and_the_error_too(dr_env: dict[str, str]) -> None:
    backup = run_cli("backup", "--no-upload", "--log-format", "json")
    assert backup.returncode == 0, backup.stderr
    records = json_lines(backup)  # no banner: stdout is empty
    assert {"BACKUP", "OK"} <= {r.get("tag") for r in records}
    assert all(r["event"] == "message" for r in records if "tag" in r)
    assert any(r["level"] == "ok" for r in records)

    verify = run_cli("verify", "latest", "--log-format", "json")
    assert verify.returncode == 0, verify.stderr
    assert json_lines(verify)[-1]["message"].startswith("Backup verified: ")

    missing = run_cli("verify", "no-such-backup.sql.gz", "--log-format", "json")
    assert missing.returncode == 2
    (error,) = json_lines(missing)
    assert error["event"] == "error" and error["level"] == "error"
    assert "no-such-backup.sql.gz" in error["message"]

    text = run_cli("verify", "latest")  # the default stays the seed's tagged lines
    assert text.stdout.startswith("[VERIFY]") and text.stderr == ""


def test_help_says_where_the_json_goes(base_env: dict[str, str]) -> None:
    for command in ("backup", "restore", "verify", "restore-test", "pitr"):
        result = run_cli(command, "--help")
        assert "--log-format {text,json}" in result.stdout, command
        assert "stderr" in " ".join(result.stdout.split()), command


def test_progress_is_thinned_and_secrets_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    stream = io.StringIO()
    log = JsonLog(stream)
    for done in range(0, 100, 10):  # a burst, well inside one interval: first and last kept
        log.event(Progress("restore", "load", done, 90, rate=1.0))
    log.event(StepChanged("restore", 6, "Restore", StepStatus.FAILED, f"password {PASSWORD}"))
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert JSON_PROGRESS_INTERVAL > 1
    assert [r["done"] for r in records if r["event"] == "progress"] == [0, 90]
    assert records[0]["total"] == 90 and records[0]["unit"] == "bytes"
    failed = records[-1]
    assert failed["level"] == "error" and failed["status"] == "failed"
    assert PASSWORD not in stream.getvalue() and "********" in failed["detail"]
