"""`preskool-dr restore --report RUN_ID`: the postmortem's timeline, from the journal of a
real nine-step restore against the test cluster (and, for the wording of what a real run
rarely shows, from a journal made by hand)."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.settings import Thresholds
from preskool_dr.core.base.steps import StepId
from preskool_dr.core.restore.journal import BackupChoice, Journal, RunState, StepRecord
from preskool_dr.core.restore.report import build_report, to_markdown, write_markdown
from preskool_dr.core.storage import checksum
from tests.support.cli import run_cli
from tests.support.leaks import assert_no_secrets
from tests.support.site import Site

CONTRACT_STEP_KEYS = {"id", "title", "started_at", "finished_at", "result"}


def is_utc_iso(text: object) -> bool:
    return (
        isinstance(text, str)
        and text.endswith("Z")
        and datetime.fromisoformat(text).utcoffset() == timedelta(0)
    )


def test_report_of_a_real_restore(site: Site) -> None:
    config = site.config()
    backup = run_backup(config, "daily", upload=False).path
    md5 = checksum.read_sidecar(checksum.sidecar_path(backup)).md5
    restore = run_cli(
        "--runbook", str(site.runbook), "restore", "latest", "--confirm", site.db.name
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    (state,) = Journal(config.state_dir).runs()

    as_json = run_cli(
        "--runbook", str(site.runbook), "restore", "--report", state.run_id, "--format", "json"
    )
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["run_id"] == state.run_id
    assert report["backup"] == backup.name and report["backup_md5"] == md5
    assert isinstance(report["rto_seconds"], float) and report["rto_seconds"] > 0
    assert isinstance(report["rpo_seconds"], float) and report["rpo_seconds"] >= 0
    assert report["rto_target_seconds"] == config.thresholds.rto_minutes * 60
    assert report["rto_met"] is True and report["rpo_met"] is True
    assert report["result"] == "done" and report["drill"] is False
    assert report["aside_db"] == state.aside_db and report["aside_state"] == "renamed"
    assert [step["id"] for step in report["steps"]] == list(StepId)
    for step in report["steps"]:
        assert step.keys() >= CONTRACT_STEP_KEYS
        assert isinstance(step["title"], str) and step["title"]
        assert is_utc_iso(step["started_at"]) and is_utc_iso(step["finished_at"])
        assert step["started_at"] <= step["finished_at"]
        assert step["result"] == "done"
        assert step["performed_by"] == state.operator

    markdown = run_cli("--runbook", str(site.runbook), "restore", "--report", state.run_id)
    assert markdown.returncode == 0, markdown.stderr
    text = markdown.stdout
    assert f"# Restore run {state.run_id}: done" in text
    assert backup.name in text and md5 in text
    assert "- RTO: 0:" in text and "(met)" in text
    assert "- Drill: no" in text
    assert text.count("| done |") == 9
    assert_no_secrets(as_json.stdout, text)

    # what the TUI writes when a run finishes: the same markdown, private
    path = write_markdown(config.state_dir, state, config.thresholds)
    assert path == config.state_dir / "reports" / f"{state.run_id}.md"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == text


def test_unknown_run_id_is_exit_2_naming_the_journal_folder(base_env: dict[str, str]) -> None:
    result = run_cli("restore", "--report", "20260101-000000-dead")
    assert result.returncode == 2
    assert str(Path(base_env["PRESKOOL_DR_STATE_DIR"]) / "runs") in result.stderr
    assert "Traceback" not in result.stderr
    alone = run_cli("restore", "latest", "--confirm", "preskool_db", "--format", "json")
    assert alone.returncode == 2 and "--format goes with --report" in alone.stderr


def hand_made_run() -> RunState:
    """A drill that failed at step 6, with the drill-log entry written."""
    declared = datetime(2026, 2, 20, 4, 0, tzinfo=UTC)
    steps = [
        StepRecord(
            id=step_id,
            number=number,
            title=f"Step {step_id}",
            status=StepStatus.DONE,
            detail=f"{step_id} ok",
            started_at=declared + timedelta(minutes=number),
            finished_at=declared + timedelta(minutes=number, seconds=30),
        )
        if number < 6
        else StepRecord(id=step_id, number=number, title=f"Step {step_id}")
        for number, step_id in enumerate(StepId, start=1)
    ]
    steps[5] = replace(
        steps[5],
        status=StepStatus.FAILED,
        detail="psql failed at line 12 | ERROR: boom",
        started_at=declared + timedelta(minutes=6),
        finished_at=declared + timedelta(hours=3),
        output=["one", "two", "ERROR: boom"],
    )
    return RunState(
        run_id="20260220-040000-beef",
        mode="drill",
        operator="alice",
        tool_host="ops1",
        db_host="db1",
        db_port=5432,
        target_db="preskool_drill",
        recreate_mode="drop",
        incident_declared_at=declared,
        created_at=declared,
        steps=steps,
        backup=BackupChoice(
            spec="latest",
            name="preskool-backup-20260219_020000.sql.gz",
            time=declared - timedelta(hours=26),
            md5="0" * 32,
        ),
        result="failed",
        finished_at=declared + timedelta(hours=3),
        drill_log_entry="a" * 64,
        drill_log_line=4,
        drill_log_path="/var/lib/preskool-dr/drill-log.jsonl",
    )


def test_markdown_of_a_failed_drill_names_what_went_wrong() -> None:
    report = build_report(hand_made_run(), Thresholds())
    assert report.rto_met is False and report.rpo_met is False
    assert report.rto_seconds == 3 * 3600 and report.rpo_seconds == 26 * 3600
    text = to_markdown(report)
    assert text.startswith("# Drill run 20260220-040000-beef: failed\n")
    assert "- RTO: 3:00:00 and the app is not back, against a target of 2:00:00 (MISSED)" in text
    assert "- RPO: 26:00:00 of data at most against a target of 24:00:00 (MISSED)" in text
    assert (
        "- Drill log: entry aaaaaaaaaaaaaaaa… (/var/lib/preskool-dr/drill-log.jsonl, line 4)"
        in text
    )
    assert "- Old database: not kept aside" in text
    # a | in a summary does not split the table's row
    assert "| failed | psql failed at line 12 \\| ERROR: boom |" in text
    assert "### Step 6 output (last lines)\n\n```\none\ntwo\nERROR: boom\n```" in text
    assert "| 2026-02-20 04:01:00 | 2026-02-20 04:01:30 | 0:00:30 | alice | done |" in text
    assert "| 9 | Step health |  |  |  | alice | pending |  |" in text
