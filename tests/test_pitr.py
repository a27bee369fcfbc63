"""Point-in-time recovery end to end on a real cluster whose archive_command is the
product's `wal-push`: rows inserted at known times, a base backup taken with
`backup --kind base`, more rows, a target between batches, then `pitr` into a new data
directory and exactly the rows before the target. Plus: a WAL gap and a damaged segment
fail clearly, targets outside the range and unsafe directories are refused before
anything starts, and the base backup's S3 copy, retention and WAL pruning."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from preskool_dr.cli.main import main
from preskool_dr.core.backup import base_info
from preskool_dr.core.backup.wal.names import Segment, parse_lsn
from preskool_dr.core.backup.wal.push import push
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import Cancelled
from preskool_dr.core.base.events import Event, Progress, StepChanged, StepStatus
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.drill.entry import DRILL_FIELDS, sha256_hex
from preskool_dr.core.pitr.journal import journal_path
from preskool_dr.core.pitr.request import PitrRequest, parse_target
from preskool_dr.core.pitr.run import PitrRun
from preskool_dr.core.pitr.server import stop_command
from preskool_dr.core.pitr.steps import STEPS
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.fetch import fetch_backup
from preskool_dr.core.storage.layout import meta_path
from preskool_dr.core.storage.meta import iso_utc
from tests.support.age_keys import make_key
from tests.support.cli import run_cli
from tests.support.leaks import assert_no_secrets
from tests.support.notify import Receiver, webhook_receiver
from tests.support.pitr import (
    ROWS,
    Scenario,
    copy_backups,
    drill_runbook,
    new_data_dir,
    scenario_env,
    sql,
    stop_server,
)
from tests.support.signing import assert_openssh_verifies, make_signing_key

# Every case here recovers a cluster (or needs the scenario built): the slow tier.
# xdist_group: every module using the session's PITR scenario runs on one worker, which
# builds it once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pitr")]

# ---------------------------------------------------------------- helpers for a recovery


def pitr_args(
    scenario: Scenario, target: datetime, data_dir: Path, port: int | None, python: str | None
) -> list[str]:
    return [
        "pitr",
        "--target-time",
        target.isoformat(),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port or free_port()),
        "--confirm",
        str(data_dir),
        "--server-python",
        python or scenario.python,
    ]


def run_pitr(
    scenario: Scenario,
    state: Path,
    target: datetime,
    data_dir: Path,
    *extra: str,
    port: int | None = None,
    backup_dir: Path | None = None,
    python: str | None = None,
    runbook: Path | None = None,
    notify: Receiver | None = None,
) -> subprocess.CompletedProcess[str]:
    env = scenario_env(scenario, state, backup_dir)
    if runbook is not None:
        env["PRESKOOL_DR_RUNBOOK"] = str(runbook)
    if notify is not None:
        env["PRESKOOL_DR_NOTIFY_URLS"] = notify.url()
    args = pitr_args(scenario, target, data_dir, port, python)
    return run_cli(*args, *extra, env=env)


# ---------------------------------------------------------------- the base backup


def test_base_backup_is_listed_verified_and_describes_its_wal_range(
    scenario: Scenario, tmp_path: Path
) -> None:
    output = scenario.base_output
    assert "[OK]    Base backup created:" in output and "Checksums written and verified" in output
    assert "WAL archiving is off" not in output
    folder = scenario.backup_dir / scenario.base_name
    assert sorted(p.name for p in folder.iterdir()) == [
        "backup_manifest",
        "backup_manifest.md5",
        "base.tar.gz",
        "base.tar.gz.md5",
        "pg_wal.tar.gz",
        "pg_wal.tar.gz.md5",
    ]
    sidecars = sorted(p.name for p in folder.glob("*.md5"))
    assert subprocess.run(["md5sum", "--check", *sidecars], cwd=folder).returncode == 0
    meta = json.loads(meta_path(folder).read_text())
    assert meta["kind"] == "base" and meta["md5"] == meta["base"]["members"]["base.tar.gz"]
    info = base_info.local_info(folder)
    assert info is not None and info.archive_mode == "on" and info.timeline == 1
    assert info.start_time < info.end_time < scenario.target
    assert parse_lsn(info.start_lsn) <= parse_lsn(info.end_lsn)

    env = scenario_env(scenario, tmp_path / "state")
    listed = json.loads(run_cli("list", "--json", env=env).stdout)
    (record,) = [r for r in listed if r["name"] == scenario.base_name]
    assert record["kind"] == "base" and record["has_md5"] and record["locations"] == ["local"]
    verify = run_cli("verify", scenario.base_name, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_check_reports_the_wal_archive(scenario: Scenario, tmp_path: Path) -> None:
    result = run_cli("check", "--json", env=scenario_env(scenario, tmp_path / "state"))
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    archive = checks["wal_archive"]
    assert archive["status"] == "OK", archive
    assert "no gaps" in archive["summary"] and archive["value"] < 3600


# ---------------------------------------------------------------- recovery


def test_pitr_recovers_exactly_the_rows_before_the_target(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    env = scenario_env(scenario, tmp_path / "state")
    ranges = json.loads(run_cli("pitr", "--ranges", "--json", env=env).stdout)
    (shown,) = ranges
    assert shown["base_backup"] == scenario.base_name and shown["gap"] is None
    assert parse_target(shown["start"]) <= scenario.target < parse_target(shown["end"])
    assert shown["last_segment"] == scenario.batch3_segment

    data_dir = new_data_dir(scenario, new_dirs)
    port = free_port()
    with webhook_receiver() as receiver:
        result = run_pitr(
            scenario, tmp_path / "state", scenario.target, data_dir, port=port, notify=receiver
        )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # notified: the run started, then reached the target (nothing failed)
    (started,) = receiver.of("pitr_started")
    (finished,) = receiver.of("pitr_finished")
    assert started["title"].startswith("preskool-dr point-in-time recovery started: run ")
    assert f"recovery of {scenario.base_name} + archived WAL" in started["message"]
    assert finished["title"].endswith(" DONE") and finished["type"] == "success"
    assert "rpo_seconds: " in finished["message"] and str(data_dir) in finished["message"]
    assert receiver.of("pitr_failed") == [] and len(receiver.posts) == 2
    for number, (step_id, _) in enumerate(STEPS, 1):
        assert f"step {number}/7  {step_id:<12} DONE" in out
    assert "RESULT DONE" in out and "RPO achieved:" in out
    assert f"stop it: {stop_command(data_dir)}" in out
    assert f'restored log file "{scenario.batch2_segment}" from archive' in out

    rows = dict(sql(scenario.cluster, "SELECT batch, count(*) FROM pitr_events GROUP BY 1", port))
    assert rows == {1: ROWS[1], 2: ROWS[2]}
    ((latest, in_recovery, timeline),) = sql(
        scenario.cluster,
        "SELECT max(at), pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())"
        " FROM pitr_events",
        port,
    )
    assert latest <= scenario.target and not in_recovery and timeline == 2
    # Production is untouched and still has everything.
    assert dict(sql(scenario.cluster, "SELECT batch, count(*) FROM pitr_events GROUP BY 1")) == ROWS

    (journal,) = (tmp_path / "state" / "pitr").glob("*.json")
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    record = json.loads(journal.read_text())
    assert record["result"] == "done" and record["server_running"]
    assert record["base_backup"] == scenario.base_name
    recovery_end = parse_target(record["recovery_end"])
    assert recovery_end <= scenario.target < parse_target(record["stop_point"])
    assert record["rpo_seconds"] == pytest.approx((scenario.target - recovery_end).total_seconds())
    auto = (data_dir / "postgresql.auto.conf").read_text()
    assert "archive_mode = 'off'" in auto and "recovery_target_action = 'promote'" in auto
    assert f"BACKUP_DIR={scenario.backup_dir}" in auto and "wal-fetch %f %p" in auto
    assert not (data_dir / "recovery.signal").exists()  # removed by the promotion
    assert_no_secrets(out, result.stderr, auto, folder=tmp_path / "state")


def test_pitr_from_an_encrypted_base_backup_and_wal_archive_with_the_identity(
    encrypted_scenario: Scenario, tmp_path: Path
) -> None:
    scenario = encrypted_scenario
    assert scenario.identity is not None
    archived = sorted(p.name for p in (scenario.backup_dir / "wal").iterdir())
    assert f"{scenario.batch2_segment}.age" in archived
    assert not [n for n in archived if Segment.parse(n)]  # no clear segment in the archive
    # the base backup is one encrypted tar (WAL and manifest inside), nothing clear beside it
    base = scenario.backup_dir / scenario.base_name
    assert sorted(p.name for p in base.iterdir()) == ["base.tar.gz.age", "base.tar.gz.age.md5"]
    assert "Encrypted with age" in scenario.base_output
    by_hand = subprocess.run(
        f"age -d -i {scenario.identity} base.tar.gz.age | tar -tzf -",
        shell=True,
        cwd=base,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "backup_manifest" in by_hand and "PG_VERSION" in by_hand
    assert any(n.startswith("pg_wal/0000000") for n in by_hand)
    made: list[Path] = []
    try:
        data_dir = new_data_dir(scenario, made)
        port = free_port()
        result = run_cli(
            "--identity",
            str(scenario.identity),
            *pitr_args(scenario, scenario.target, data_dir, port, None),
            env=scenario_env(scenario, tmp_path / "state"),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f'restored log file "{scenario.batch2_segment}" from archive' in result.stdout
        rows = dict(
            sql(scenario.cluster, "SELECT batch, count(*) FROM pitr_events GROUP BY 1", port)
        )
        assert rows == {1: ROWS[1], 2: ROWS[2]}
        auto = (data_dir / "postgresql.auto.conf").read_text()
        assert f"PRESKOOL_DR_AGE_IDENTITY={scenario.identity}" in auto
    finally:
        for folder in made:
            stop_server(folder)
            shutil.rmtree(folder, ignore_errors=True)


def test_target_outside_the_recoverable_range_is_refused_before_anything_starts(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    info = base_info.local_info(scenario.backup_dir / scenario.base_name)
    assert info is not None
    data_dir = new_data_dir(scenario, new_dirs)
    too_early = run_pitr(scenario, tmp_path / "s", info.start_time - timedelta(minutes=1), data_dir)
    assert too_early.returncode == 2
    assert "before the earliest recoverable time" in too_early.stderr
    assert iso_utc(info.end_time) in too_early.stderr
    too_late = run_pitr(scenario, tmp_path / "s", datetime.now(UTC) + timedelta(hours=1), data_dir)
    assert too_late.returncode == 2
    assert "is outside the recoverable range" in too_late.stderr
    assert f"archived WAL up to {scenario.batch3_segment}" in too_late.stderr
    assert not data_dir.exists() and not (tmp_path / "s" / "pitr").exists()


def test_unsafe_requests_are_refused(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    data_dir = new_data_dir(scenario, new_dirs)
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("15\n")
    busy = run_pitr(scenario, tmp_path / "s", scenario.target, data_dir)
    assert busy.returncode == 2 and "is not an empty directory" in busy.stderr
    assert (data_dir / "PG_VERSION").read_text() == "15\n"

    fresh = new_data_dir(scenario, new_dirs)
    env = scenario_env(scenario, tmp_path / "s")
    mismatch = run_cli(
        "pitr",
        *("--target-time", scenario.target.isoformat(), "--data-dir", str(fresh)),
        *("--port", str(free_port()), "--confirm", str(fresh) + "-other"),
        env=env,
    )
    assert mismatch.returncode == 2 and "does not repeat --data-dir" in mismatch.stderr
    in_use = run_pitr(scenario, tmp_path / "s", scenario.target, fresh, port=scenario.cluster.port)
    assert in_use.returncode == 2 and f"port {scenario.cluster.port} is in use" in in_use.stderr
    if scenario.python != sys.executable:  # root: the test venv is not the server's to run
        unrunnable = run_pitr(
            scenario, tmp_path / "s", scenario.target, fresh, python=sys.executable
        )
        assert unrunnable.returncode == 2 and "--server-python" in unrunnable.stderr
    assert not fresh.exists()


def test_wal_gap_is_refused_naming_the_missing_segment(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    backups = copy_backups(scenario, "gap")
    for suffix in ("", ".md5"):
        (backups / "wal" / (scenario.batch2_segment + suffix)).unlink()
    data_dir = new_data_dir(scenario, new_dirs)
    result = run_pitr(scenario, tmp_path / "s", scenario.target, data_dir, backup_dir=backups)
    assert result.returncode == 2
    assert f"WAL gap: segment {scenario.batch2_segment} is missing" in result.stderr
    assert not data_dir.exists()

    env = scenario_env(scenario, tmp_path / "s", backups)
    report = json.loads(run_cli("check", "--json", env=env).stdout)
    (archive,) = [c for c in report["checks"] if c["name"] == "wal_archive"]
    assert archive["status"] == "CRITICAL" and scenario.batch2_segment in archive["summary"]


def test_damaged_segment_stops_the_recovery_clearly(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    backups = copy_backups(scenario, "damaged")
    with (backups / "wal" / scenario.batch2_segment).open("r+b") as handle:
        handle.seek(8192 + 100)
        handle.write(b"\xff\xff\xff")
    data_dir = new_data_dir(scenario, new_dirs)
    with webhook_receiver() as receiver:
        result = run_pitr(
            scenario, tmp_path / "s", scenario.target, data_dir, backup_dir=backups, notify=receiver
        )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"{backups}/wal/{scenario.batch2_segment} fails its checksum" in out
    (failed,) = receiver.of("pitr_failed")
    assert failed["title"].startswith("preskool-dr point-in-time recovery FAILED: run ")
    assert failed["message"].startswith("step replay failed: ") and failed["type"] == "failure"
    assert len(receiver.of("pitr_started")) == 1 and receiver.of("pitr_finished") == []
    assert "the server stopped during recovery" in out and "nothing is running" in out
    assert "step 6/7  replay       FAILED" in out
    assert not (data_dir / "postmaster.pid").exists()
    (journal,) = (tmp_path / "s" / "pitr").glob("*.json")
    record = json.loads(journal.read_text())
    assert record["result"] == "failed" and not record["server_running"]


# ---------------------------------------------------------------- S3, retention, pruning


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear-wal", "encrypted-wal"])
def test_base_backup_in_s3_retention_and_wal_pruning(
    s3: str,
    dr_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    encrypted: bool,
    tmp_path: Path,
) -> None:
    backup_dir = Path(dr_env["BACKUP_DIR"])
    assert main(["backup", "--kind", "base"]) == 0
    (first,) = [p for p in backup_dir.iterdir() if p.is_dir()]
    client = boto3.client("s3")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3)["Contents"]}
    members = ["backup_manifest", "base.tar.gz", "pg_wal.tar.gz"]
    expected = {f"preskool-backups/{first.name}/{m}{s}" for m in members for s in ("", ".md5")}
    assert keys == expected | {f"preskool-backups/{first.name}.meta.json"}
    config = load_config()
    (remote,) = [r for r in catalog.list_backups(config, "s3") if r.kind == "base"]
    assert remote.has_md5 and remote.name == first.name

    # A fresh DR host: only S3 has it; fetched, verified, and its meta understood.
    shutil.rmtree(first)
    meta_path(first).unlink()
    record = catalog.resolve_backup(config, first.name)
    assert base_info.record_info(config, record) is not None
    fetched = fetch_backup(config, record)
    assert all(r.ok for r in checksum.verify_backup(fetched))

    # An expired base backup (local and S3) and WAL older than every base backup left.
    info = base_info.local_info(first)
    assert info is not None
    old = backup_dir / "preskool-base-20200101_000000"
    shutil.copytree(first, old)
    shutil.copy(meta_path(first), meta_path(old))
    for member in old.iterdir():
        client.upload_file(str(member), s3, f"preskool-backups/{old.name}/{member.name}")
    client.upload_file(str(meta_path(old)), s3, f"preskool-backups/{old.name}.meta.json")
    settings = WalSettings.from_env()
    suffix = ""
    if encrypted:  # archived as <name>.age (+ .md5, + .sha256): pruned all the same
        recipient = make_key(tmp_path / "keys").recipient
        settings = dataclasses.replace(settings, recipients=(recipient,))
        suffix = ".age"
    start = info.start_segment.number(info.wal_segment_size)
    older = Segment.at(info.timeline, start - 1, info.wal_segment_size).name
    kept = Segment.at(info.timeline, start, info.wal_segment_size).name
    for name in (older, kept, "00000001.history"):
        source = backup_dir / "pg_wal-src" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(name.encode() * 100)
        push(source, settings)
    capsys.readouterr()
    time.sleep(1)  # a new name: backups are named by the second
    assert main(["backup", "--kind", "base"]) == 0
    out = capsys.readouterr().out
    assert "Deleted 2 old base backup(s)" in out  # the local copy and the S3 copy
    assert not old.exists() and not meta_path(old).exists()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3)["Contents"]}
    assert not [k for k in keys if old.name in k]
    local = sorted(p.name for p in settings.archive_dir.iterdir())
    assert not [n for n in local if n.startswith(older)]  # nor its .md5 / .sha256
    assert f"{kept}{suffix}" in local and f"00000001.history{suffix}" in local
    assert f"wal/{older}{suffix}" not in keys and f"wal/{kept}{suffix}" in keys
    assert_no_secrets(out, folder=backup_dir)


def test_interrupted_replay_leaves_the_server_running_and_journalled(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core API the TUI drives: events out, a cancel flag in."""
    env = scenario_env(scenario, tmp_path / "state")
    for var in list(os.environ):
        if var not in env:
            monkeypatch.delenv(var)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cancel = threading.Event()
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepChanged) and (event.step_id, event.status) == (
            "start",
            StepStatus.DONE,
        ):
            cancel.set()  # as Ctrl-C would, once the server runs

    data_dir = new_data_dir(scenario, new_dirs)
    request = PitrRequest(
        target=scenario.target,
        data_dir=data_dir,
        port=free_port(),
        confirm=str(data_dir),
        server_python=scenario.python,
    )
    runner = PitrRun(load_config(), request, on_event=on_event, cancel=cancel)
    with pytest.raises(Cancelled):
        runner.run()
    state = runner.state
    assert state is not None and state.result == "interrupted"
    assert state.steps["start"] == "done" and state.steps["replay"] == "failed"
    assert state.server_running and (data_dir / "postmaster.pid").exists()
    saved = json.loads(journal_path(tmp_path / "state", state.run_id).read_text())
    assert saved["result"] == "interrupted" and saved["server_running"]
    steps = [(e.step_id, e.status) for e in events if isinstance(e, StepChanged)]
    assert steps[:2] == [("plan", StepStatus.RUNNING), ("plan", StepStatus.DONE)]
    assert any(isinstance(e, Progress) and e.step_id == "extract" for e in events)


def test_damaged_base_backup_or_meta_is_caught_before_extraction(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    backups = copy_backups(scenario, "badbase")
    tar = backups / scenario.base_name / "base.tar.gz"
    with tar.open("r+b") as handle:
        handle.seek(tar.stat().st_size // 2)
        handle.write(b"\x00\x01\x02\x03")
    data_dir = new_data_dir(scenario, new_dirs)
    result = run_pitr(scenario, tmp_path / "s", scenario.target, data_dir, backup_dir=backups)
    assert result.returncode == 1
    assert "step 2/7  fetch        FAILED" in result.stdout
    assert "MD5 mismatch" in result.stderr and "the base backup is damaged" in result.stderr
    assert not data_dir.exists()

    meta = meta_path(backups / scenario.base_name)
    for garbage in ("{not json", json.dumps({"kind": "base", "base": {"members": {}}})):
        meta.write_text(garbage)
        assert base_info.local_info(backups / scenario.base_name) is None
        result = run_pitr(scenario, tmp_path / "s", scenario.target, data_dir, backup_dir=backups)
        assert result.returncode == 2
        assert "has no readable meta.json" in result.stdout
        assert "no usable base backup" in result.stderr


# ---------------------------------------------------------------- the PITR drill


def test_pitr_drill_reports_an_rpo_under_an_hour_in_a_signed_entry(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    key, allowed = make_signing_key(tmp_path, "alice")
    log = tmp_path / "drill-log.jsonl"
    data_dir = new_data_dir(scenario, new_dirs)
    state = tmp_path / "state"
    result = run_pitr(
        scenario,
        state,
        scenario.target,
        data_dir,
        *("--drill", "--performed-by", "alice", "--sign-key", str(key), "--drill-log", str(log)),
        runbook=drill_runbook(tmp_path / "site"),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "validation checks passed" in out and "drill PASS: drill recorded at line 1" in out

    (line,) = log.read_text().splitlines()
    entry = json.loads(line)
    assert all(entry[name] is not None for name in DRILL_FIELDS)
    assert entry["type"] == "drill" and entry["signer"] == "alice"
    assert entry["method"] == "pitr" and entry["result"] == "pass" and entry["run_result"] == "done"
    journal = json.loads(next((state / "pitr").glob("*.json")).read_text())
    assert journal["drill_log_entry"] == sha256_hex(line.encode())
    # RPO: the incident (the target) minus the last transaction the server replayed.
    recovered_to = parse_target(entry["recovered_to"])
    assert recovered_to == parse_target(journal["recovery_end"]) <= scenario.target
    assert entry["rpo_seconds"] == round((scenario.target - recovered_to).total_seconds())
    assert entry["rpo_seconds"] < 3600 and entry["rpo_target_seconds"] == 3600
    assert entry["rpo_ok"] and parse_target(entry["target_time"]) == scenario.target
    assert parse_target(entry["first_not_replayed"]) > scenario.target
    # RTO: the run's start until the recovered server took read-write connections.
    declared = parse_target(entry["incident_declared_at"])
    accessible = parse_target(entry["app_accessible_at"])
    # (the entry's times are to the second, its RTO computed from the exact ones)
    assert abs(entry["rto_seconds"] - (accessible - declared).total_seconds()) <= 1
    meta = json.loads(meta_path(scenario.backup_dir / scenario.base_name).read_text())
    assert entry["backup"] == scenario.base_name and entry["backup_md5"] == meta["md5"]
    assert [s["id"] for s in entry["steps"]] == [sid for sid, _ in STEPS]
    assert all(s["status"] == "done" for s in entry["steps"])
    checks = {c["name"]: c for c in entry["validation"]}
    assert checks["required tables"]["ok"] and checks["smoke: events present"]["ok"]
    assert entry["target"] == f"postgres@localhost:{journal['port']} ({data_dir})"

    assert_openssh_verifies(entry, allowed, "alice", tmp_path)
    env = scenario_env(scenario, state)
    verify = run_cli(
        "drill-log", "verify", "--drill-log", str(log), "--allowed-signers", str(allowed), env=env
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    export = run_cli("drill-log", "export", "--drill-log", str(log), env=env)
    assert export.returncode == 0 and f"| alice | {scenario.base_name} |" in export.stdout
    assert_no_secrets(out, line, folder=state)


def test_pitr_drill_whose_copy_fails_validation_is_recorded_as_failed(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    """The shipped runbook's PreSkool tables are not in the scenario's database."""
    key, allowed = make_signing_key(tmp_path, "bob")
    log = tmp_path / "drill-log.jsonl"
    data_dir = new_data_dir(scenario, new_dirs)
    result = run_pitr(
        scenario,
        tmp_path / "state",
        scenario.target,
        data_dir,
        *("--drill", "--performed-by", "bob", "--sign-key", str(key), "--drill-log", str(log)),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "step 7/7  verify       FAILED" in out and "fails validation: required tables" in out
    assert "drill FAIL: drill recorded at line 1" in out
    assert f"stop it: {stop_command(data_dir)}" in out  # the copy stays for inspection
    entry = json.loads(log.read_text())
    assert entry["result"] == "fail" and entry["run_result"] == "failed"
    assert entry["rpo_seconds"] < 3600  # reached the target: only the validation failed
    assert not next(c for c in entry["validation"] if c["name"] == "required tables")["ok"]
    assert_openssh_verifies(entry, allowed, "bob", tmp_path)


# ---------------------------------------------------------------- killed, then resumed


def start_pitr_process(
    scenario: Scenario, state: Path, data_dir: Path, port: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preskool_dr",
            *pitr_args(scenario, scenario.target, data_dir, port, None),
        ],
        env=scenario_env(scenario, state),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """The run's output up to the line holding `marker` (the run goes on meanwhile)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    pytest.fail(f"the run ended without {marker!r}:\n{''.join(seen)}")


def finish(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    rest = proc.stdout.read()
    proc.stdout.close()
    proc.wait()
    return rest


def only_the_rows_before_the_target(scenario: Scenario, port: int) -> None:
    rows = dict(sql(scenario.cluster, "SELECT batch, count(*) FROM pitr_events GROUP BY 1", port))
    assert rows == {1: ROWS[1], 2: ROWS[2]}


def test_pitr_stopped_by_sigterm_while_extracting_resumes_and_reaches_the_target(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    data_dir = new_data_dir(scenario, new_dirs)
    port = free_port()
    state = tmp_path / "state"
    proc = start_pitr_process(scenario, state, data_dir, port)
    read_until(proc, "extract      RUNNING")
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    (journal,) = (state / "pitr").glob("*.json")
    record = json.loads(journal.read_text())
    if proc.returncode == 0:
        pytest.skip("the recovery was over before SIGTERM arrived (a very fast machine)")
    assert proc.returncode == 130, out
    assert record["result"] == "interrupted"
    resume = f"preskool-dr pitr --resume {record['run_id']} --confirm {data_dir}"
    assert f"resume: {resume}" in out
    env = scenario_env(scenario, state)

    wrong = run_cli("pitr", "--resume", record["run_id"], "--confirm", "/elsewhere", env=env)
    assert wrong.returncode == 2 and "does not repeat run" in wrong.stderr
    mixed = run_cli(
        "pitr", "--resume", record["run_id"], "--confirm", str(data_dir), "--port", "1", env=env
    )
    assert mixed.returncode == 2 and "drop --port" in mixed.stderr

    result = run_cli("pitr", "--resume", record["run_id"], "--confirm", str(data_dir), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resuming run {record['run_id']}" in result.stdout
    if record["steps"]["configure"] != "done":  # stopped before its server existed
        assert f"emptied {data_dir}" in result.stdout and "starting again from the fetch" in (
            result.stdout
        )
    assert "step 7/7  verify       DONE" in result.stdout and "RESULT DONE" in result.stdout
    only_the_rows_before_the_target(scenario, port)
    (again,) = (state / "pitr").glob("*.json")
    final = json.loads(again.read_text())
    assert final["result"] == "done" and final["run_id"] == record["run_id"]
    assert any(note.startswith("resumed at") for note in final["notes"])

    done = run_cli("pitr", "--resume", record["run_id"], "--confirm", str(data_dir), env=env)
    assert done.returncode == 2 and f"run {record['run_id']} is done" in done.stderr
    unknown = run_cli("pitr", "--resume", "20200101-000000-abcd", "--confirm", "/x", env=env)
    assert unknown.returncode == 2 and "no pitr run '20200101-000000-abcd'" in unknown.stderr


def test_pitr_killed_after_its_server_started_is_reattached_by_resume(
    scenario: Scenario, tmp_path: Path, new_dirs: list[Path]
) -> None:
    data_dir = new_data_dir(scenario, new_dirs)
    port = free_port()
    state = tmp_path / "state"
    proc = start_pitr_process(scenario, state, data_dir, port)
    read_until(proc, "start        DONE")
    proc.kill()  # SIGKILL: nothing is recorded; the server, in its own session, goes on
    finish(proc)
    record = json.loads(next((state / "pitr").glob("*.json")).read_text())
    if record["result"] == "done":
        pytest.skip("the recovery was over before SIGKILL arrived (a very fast machine)")
    assert record["result"] == "running" and record["steps"]["start"] == "done"
    assert (data_dir / "postmaster.pid").exists()

    env = scenario_env(scenario, state)
    result = run_cli("pitr", "--resume", record["run_id"], "--confirm", str(data_dir), env=env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "is running: following its recovery" in out
    assert "step 6/7  replay       DONE" in out and "step 7/7  verify       DONE" in out
    assert "step 3/7  extract      RUNNING" not in out  # nothing redone
    only_the_rows_before_the_target(scenario, port)
    final = json.loads(next((state / "pitr").glob("*.json")).read_text())
    assert final["result"] == "done" and final["rpo_seconds"] < 3600


def test_the_data_directory_is_made_ours_before_anything_is_written(tmp_path: Path) -> None:
    """An empty --data-dir of the server's OS user (PITR.md's example) is given to this user,
    0700, before the base backup goes in: that user cannot plant a link into it while it is
    written as root. A symbolic link is refused, its target untouched; so is a folder that
    is no longer empty."""
    from preskool_dr.core.base.errors import DrError
    from preskool_dr.core.pitr.datadir import take_data_dir

    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    theirs = tmp_path / "recovered"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    take_data_dir(theirs)
    info = theirs.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o700)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.chown(elsewhere, 65534, 65534)
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(DrError, match="never followed"):
        take_data_dir(link)
    assert elsewhere.stat().st_uid == 65534 and elsewhere.stat().st_mode & 0o777 == 0o755

    (theirs / "PG_VERSION").write_text("15\n")
    with pytest.raises(DrError, match="no longer empty"):
        take_data_dir(theirs)
