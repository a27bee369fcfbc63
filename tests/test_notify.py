"""Notifications (runbook `notify:`), delivered to a real local HTTP receiver through
Apprise's `json://` webhook: each event arrives once and names itself and its backup or
run; a receiver that is down, hangs or answers 500 never fails or stalls the job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.backup.wal import alert
from preskool_dr.core.backup.wal.settings import WalSettings
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import ConfigError
from preskool_dr.core.base.events import Event, EventSink, Notice
from preskool_dr.core.base.files import atomic_write
from preskool_dr.core.base.notify import EVENT_ENV, Notification, Notifier
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.drill.append import append_entry
from preskool_dr.core.drill.entry import DRILL_FIELDS
from tests.support.db import Database
from tests.support.leaks import assert_no_secrets
from tests.support.notify import TOKEN, Receiver, webhook_receiver
from tests.support.runbook import REPO, write_runbook
from tests.support.signing import make_signing_key


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as found:
        yield found


def collect() -> tuple[list[str], EventSink]:
    warnings: list[str] = []

    def sink(event: Event) -> None:
        if isinstance(event, Notice):
            warnings.append(event.text)

    return warnings, sink


NOTE = Notification("backup_failed", "daily backup of preskool_db@db:5432", "pg_dump failed")


# ------------------------------------------------------------------ the notifier itself


def test_a_notification_arrives_once_naming_event_and_subject(receiver: Receiver) -> None:
    warnings, sink = collect()
    notifier = Notifier((receiver.url(),), on_event=sink)

    assert notifier.send(NOTE) is True

    ((path, body),) = receiver.posts
    assert path == f"/hook/{TOKEN}"
    assert body["title"] == "preskool-dr backup FAILED: daily backup of preskool_db@db:5432"
    assert body["message"].startswith("pg_dump failed\nevent: backup_failed\n")
    assert body["type"] == "failure"
    assert warnings == []


def test_a_500_is_retried_then_logged_without_the_token(receiver: Receiver) -> None:
    warnings, sink = collect()
    notifier = Notifier((receiver.url("fail"),), on_event=sink, timeout_seconds=2)

    assert notifier.send(NOTE) is False

    assert len(receiver.posts) == 2  # one retry
    (warning,) = warnings
    assert "backup_failed" in warning and "failed after 2 attempts" in warning
    assert "500" in warning and f"127.0.0.1:{receiver.port}" in warning
    assert TOKEN not in warning


@pytest.mark.slow
def test_an_unreachable_or_hanging_receiver_costs_at_most_the_deadline() -> None:
    closed = free_port()
    hanging = socket.socket()  # accepts connections into its backlog, never answers
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)
    try:
        urls = (
            f"json://127.0.0.1:{closed}/x/{TOKEN}",
            f"json://127.0.0.1:{hanging.getsockname()[1]}/y/{TOKEN}",
        )
        warnings, sink = collect()
        notifier = Notifier(urls, on_event=sink, timeout_seconds=0.5)
        started = time.monotonic()
        assert notifier.send(NOTE) is False
        assert time.monotonic() - started <= notifier.deadline_seconds + 0.5
    finally:
        hanging.close()
    assert warnings and all(TOKEN not in w for w in warnings)


def test_a_url_apprise_does_not_know_is_a_warning_not_an_error() -> None:
    warnings, sink = collect()
    assert Notifier((f"nosuchservice://{TOKEN}",), on_event=sink).send(NOTE) is False
    (warning,) = warnings
    assert "nosuchservice://" in warning and TOKEN not in warning


def test_the_command_gets_the_event_as_json(tmp_path: Path) -> None:
    out = tmp_path / "event.json"
    script = f"import os; open({str(out)!r}, 'w').write(os.environ[{EVENT_ENV!r}])"
    notifier = Notifier(command=(sys.executable, "-c", script))

    assert notifier.send(NOTE) is True

    event = json.loads(out.read_text())
    assert event["event"] == "backup_failed" and event["title"] == NOTE.title
    assert event["subject"] == NOTE.subject and event["level"] == "failure"


def test_a_failing_command_is_a_warning() -> None:
    warnings, sink = collect()
    assert Notifier(command=("false",), on_event=sink).send(NOTE) is False
    assert len(warnings) == 1 and "notify.command" in warnings[0]


# ------------------------------------------------------------------ the runbook section


def _runbook(folder: Path, notify: object) -> Path:
    return write_runbook(folder, notify=notify)


def test_runbook_notify_section_and_the_environment_winning(tmp_path: Path) -> None:
    runbook = _runbook(
        tmp_path,
        {"urls": ["json://file.example:80/a"], "command": ["/bin/true"], "on_success": True},
    )
    settings = load_config(runbook, env={}).notify
    assert settings.urls == ("json://file.example:80/a",)
    assert settings.command == ("/bin/true",) and settings.on_success is True

    env = {"PRESKOOL_DR_NOTIFY_URLS": "json://a:1/x, json://b:2/y"}
    notifier = Notifier.from_config(load_config(runbook, env=env), env=env)
    assert notifier.urls == ("json://a:1/x", "json://b:2/y")
    assert Notifier.from_config(load_config(runbook, env={}), env={}).urls == settings.urls


def test_runbook_notify_errors_name_file_and_line(tmp_path: Path) -> None:
    base = (REPO / "runbook.yaml").read_text()
    at = base.count("\n")  # the appended section starts on the next line
    runbook = tmp_path / "runbook.yaml"
    for section, line, message in (
        ("notify:\n  urls:\n    - json://ok:1/a\n    - not a url\n", 4, r"notify.urls\[1\] is not"),
        ("notify:\n  on_success: yes please\n", 2, r"notify.on_success must be true or false"),
        ("notify:\n  url: json://x:1/a\n", 2, r"unknown key notify.url "),
        ("notify:\n  timeout_seconds: 0\n", 2, r"notify.timeout_seconds must be from 0 to 60"),
    ):
        runbook.write_text(base + section)
        with pytest.raises(ConfigError, match=rf"runbook.yaml:{at + line}: {message}"):
            load_config(runbook, env={})


# ------------------------------------------------------------------ the real commands


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "preskool_dr", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
        check=False,
    )


def notify_env(receiver: Receiver, path: str = "hook") -> dict[str, str]:
    return {**os.environ, "PRESKOOL_DR_NOTIFY_URLS": receiver.url(path)}


def test_backup_failure_notifies_once(receiver: Receiver, base_env: dict[str, str]) -> None:
    env = {**notify_env(receiver), "DB_HOST": "127.0.0.1", "DB_PORT": str(free_port())}

    result = cli("backup", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    (note,) = receiver.of("backup_failed")
    assert note["title"].startswith("preskool-dr backup FAILED: daily backup of preskool_db@")
    assert len(receiver.posts) == 1
    assert TOKEN not in result.stdout + result.stderr


def test_backup_failure_with_a_failing_receiver_keeps_its_exit_code(
    receiver: Receiver, base_env: dict[str, str]
) -> None:
    env = {**notify_env(receiver, "fail"), "DB_HOST": "127.0.0.1", "DB_PORT": str(free_port())}

    result = cli("backup", env=env)

    assert result.returncode == 1
    assert len(receiver.posts) == 2
    assert "[WARN]  notify: backup_failed to json://127.0.0.1:" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_backup_success_notifies_only_with_on_success(
    receiver: Receiver, dr_env: dict[str, str], tmp_path: Path
) -> None:
    assert cli("backup", "--no-upload", env=notify_env(receiver)).returncode == 0
    assert receiver.posts == []
    time.sleep(1.1)  # backup names have one-second resolution

    runbook = _runbook(tmp_path, {"on_success": True})
    env = {**notify_env(receiver), "PRESKOOL_DR_RUNBOOK": str(runbook)}
    result = cli("backup", "--no-upload", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    (note,) = receiver.of("backup_succeeded")
    assert note["title"].startswith("preskool-dr backup succeeded: preskool-backup-")
    assert note["type"] == "success"
    assert_no_secrets(result.stdout, result.stderr, json.dumps(receiver.posts))


@pytest.mark.slow
def test_restore_test_failure_notifies(receiver: Receiver, dr_env: dict[str, str]) -> None:
    result = cli("restore-test", "preskool-backup-20200101_020000.sql.gz", env=notify_env(receiver))

    assert result.returncode == 2, result.stdout + result.stderr
    (note,) = receiver.of("restore_test_failed")
    assert note["title"] == (
        "preskool-dr restore test FAILED: preskool-backup-20200101_020000.sql.gz"
    )
    assert len(receiver.posts) == 1


def _fake_backup(folder: Path) -> None:
    """A tiny backup named now: `check` then says WARNING (too small) instead of CRITICAL."""
    from datetime import UTC, datetime

    name = f"preskool-backup-{datetime.now(UTC):%Y%m%d_%H%M%S}.sql.gz"
    atomic_write(folder / name, b"tiny", mode=0o600)


def test_check_notifies_each_state_change_once(
    receiver: Receiver, base_env: dict[str, str]
) -> None:
    env = notify_env(receiver)

    first = cli("check", env=env)  # no backup at all: CRITICAL
    again = cli("check", env=env)  # still CRITICAL: no news
    _fake_backup(Path(base_env["BACKUP_DIR"]))
    changed = cli("check", env=env)

    assert (first.returncode, again.returncode, changed.returncode) == (2, 2, 1), changed.stdout
    notes = receiver.of("check_state_changed")
    assert [n["title"].split(": ", 1)[1].split(" ", 1)[1] for n in notes] == [
        "no earlier check -> CRITICAL",
        "CRITICAL -> WARNING",
    ]
    assert notes[0]["title"].startswith("preskool-dr check state changed: preskool_db@")
    assert changed.stdout.startswith("PRESKOOL_DR WARNING - ")  # the plugin's answer intact
    state = json.loads((Path(base_env["PRESKOOL_DR_STATE_DIR"]) / "check-state.json").read_text())
    assert state["state"] == "WARNING"


@pytest.fixture
def drill_db(dr_env: dict[str, str], database: Database) -> str:
    """A backup of the test database to drill with; the drill database's name."""
    run_backup(load_config(REPO / "runbook.yaml"), "daily", upload=False)
    return f"{database.name}_drill"


def drill(receiver: Receiver, folder: Path, target: str, migrate: str, *args: str) -> tuple:
    """`restore latest --drill` with `migrate` as step 7's command (`true` or `false`)."""
    runbook = write_runbook(folder, drill={"target_db": target, "app": {"migrate": [migrate]}})
    env = {**notify_env(receiver), "PRESKOOL_DR_RUNBOOK": str(runbook)}
    log = str(folder / "drill-log.jsonl")
    return cli(
        *("restore", "latest", "--drill", "--confirm", target, "--performed-by", "alice"),
        *("--drill-log", log, "--drop-after", *args),
        env=env,
    )


@pytest.mark.slow
def test_restore_drill_notifies_start_finish_and_signature(
    receiver: Receiver, drill_db: str, tmp_path: Path
) -> None:
    key, _ = make_signing_key(tmp_path, "alice")

    result = drill(receiver, tmp_path, drill_db, "true", "--sign-key", str(key))

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split("run ", 1)[1].split(":", 1)[0]
    (started,) = receiver.of("restore_started")
    (finished,) = receiver.of("restore_finished")
    (signed,) = receiver.of("drill_signed")
    assert started["title"] == f"preskool-dr restore started: run {run_id}"
    assert finished["title"] == f"preskool-dr restore finished: run {run_id} DONE"
    assert "RTO " in finished["message"] and "RPO " in finished["message"]
    assert "rto_seconds: " in finished["message"] and finished["type"] == "success"
    assert signed["title"] == f"preskool-dr drill signed: run {run_id} PASS"
    assert receiver.of("restore_step_failed") == []
    assert len(receiver.posts) == 3
    assert_no_secrets(result.stdout, result.stderr, json.dumps(receiver.posts))


@pytest.mark.slow
def test_a_failed_restore_step_notifies(receiver: Receiver, drill_db: str, tmp_path: Path) -> None:
    result = drill(receiver, tmp_path, drill_db, "false")

    assert result.returncode == 1, result.stdout + result.stderr
    (failed,) = receiver.of("restore_step_failed")
    assert failed["title"].startswith("preskool-dr restore step FAILED: run ")
    assert failed["message"].startswith("step 7 (")
    (finished,) = receiver.of("restore_finished")
    assert finished["title"].endswith(" FAILED") and finished["type"] == "failure"
    (recorded,) = receiver.of("drill_recorded")
    assert recorded["title"].endswith(" FAIL")


def test_signing_a_drill_later_notifies(
    receiver: Receiver, base_env: dict[str, str], tmp_path: Path
) -> None:
    state = Path(base_env["PRESKOOL_DR_STATE_DIR"])
    state.mkdir(mode=0o700)
    fields: dict[str, object] = dict.fromkeys(DRILL_FIELDS)  # the drill's facts do not matter
    fields.update(performed_by="alice", result="pass")
    append_entry(state / "drill-log.jsonl", fields, signer="alice", key=None)
    key, _ = make_signing_key(tmp_path, "alice")

    result = cli("drill-log", "sign", "1", "--sign-key", str(key), env=notify_env(receiver))

    assert result.returncode == 0, result.stdout + result.stderr
    (note,) = receiver.of("drill_signed")
    assert note["title"] == "preskool-dr drill signed: drill-log line 1 signed by alice"
    assert len(receiver.posts) == 1


def test_a_failing_wal_push_notifies_once_until_a_push_succeeds(
    receiver: Receiver, base_env: dict[str, str], tmp_path: Path
) -> None:
    """PostgreSQL retries a failed archive_command every few seconds: the first failure
    notifies (from PRESKOOL_DR_NOTIFY_URLS in the server's environment, no runbook), the
    retries stay quiet, and after a successful push a new failure is news again."""
    segment = "000000010000000000000001"
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    env = {**notify_env(receiver), "BACKUP_DIR": base_env["BACKUP_DIR"]}
    env.pop("PRESKOOL_DR_RUNBOOK", None)

    def push() -> subprocess.CompletedProcess[str]:
        return cli("wal-push", str(pg_wal / segment), env=env)

    first, retry = push(), push()  # the segment file is missing: both fail
    assert (first.returncode, retry.returncode) == (1, 1), first.stderr
    (note,) = receiver.of("wal_push_failed")
    assert note["title"] == f"preskool-dr WAL archiving FAILED: segment {segment}"
    assert f"cannot read {pg_wal / segment}" in note["message"]
    assert note["type"] == "failure"

    (pg_wal / segment).write_bytes(b"\x01" * 8192)
    assert push().returncode == 0
    assert len(receiver.of("wal_push_failed")) == 1  # success is not notified
    assert not (Path(base_env["BACKUP_DIR"]) / "wal" / ".push-failure-notified").exists()

    (pg_wal / segment).write_bytes(b"\x02" * 8192)  # other bytes under an archived name
    again = push()
    assert again.returncode == 1 and "refus" in again.stderr.lower(), again.stderr
    assert len(receiver.of("wal_push_failed")) == 2
    assert_no_secrets(first.stderr, again.stderr, json.dumps(receiver.posts))


def test_a_mark_planted_in_the_temp_folder_does_not_silence_the_wal_alert(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The temp folder's mark (used when the archive itself fails) has a predictable name:
    a fresh file there that is not this user's own does not count as 'notified already'."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    settings = WalSettings(backup_dir=tmp_path / "no-archive")  # the archive folder is missing
    env = notify_env(receiver)
    for planted in alert._marks(settings)[1:]:
        planted.write_bytes(b"")
        os.chown(planted, 65534, 65534)
    try:
        assert alert.notify_push_failure(settings, "000000010000000000000001", "x", env)
        assert len(receiver.of("wal_push_failed")) == 1
    finally:
        for mark in alert._marks(settings):
            mark.unlink(missing_ok=True)
