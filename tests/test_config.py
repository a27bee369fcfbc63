"""runbook.yaml + environment: typed, immutable, and every error names file:line."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import ConfigError
from preskool_dr.core.base.steps import StepId

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = (REPO / "runbook.yaml").read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runbook.yaml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    return str(info.value)


def test_shipped_runbook_holds_the_seed_as_data() -> None:
    config = load_config(REPO / "runbook.yaml", env={})
    assert tuple(s.id for s in config.steps) == tuple(StepId)
    assert config.thresholds.rto_minutes == 120
    assert config.thresholds.rpo_hours == 24
    assert config.thresholds.backup_missing_hours == 26
    assert config.thresholds.backup_warn_age_hours == 25
    assert config.thresholds.min_backup_bytes == 1_048_576
    assert config.backups.retention["daily"].local_days == 30
    assert config.backups.retention["daily"].s3_days == 90
    assert config.backups.retention["weekly"].storage_class == "GLACIER"
    assert config.backups.retention["weekly"].s3_days == 365
    assert config.backups.retention["pre-deploy"].local_days == 7
    assert len(config.restore_test.required_tables) >= 15
    assert config.app.stop == ("docker-compose", "stop", "frontend", "backend")
    assert config.app.health_url == "http://localhost:8000/api/v1/health"
    assert config.backups.s3_bucket is None  # the contract: no bucket in the shipped file
    assert config.drill.target_db != config.database.name


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = {
        "DB_HOST": "db1",
        "DB_PORT": "6543",
        "DB_NAME": "other_db",
        "DB_USER": "app",
        "S3_BUCKET": "bucket-x",
        "BACKUP_DIR": str(tmp_path / "b"),
        "PRESKOOL_DR_STATE_DIR": str(tmp_path / "s"),
    }
    config = load_config(REPO / "runbook.yaml", env=env)
    assert config.database.label == "other_db@db1:6543"
    assert config.database.user == "app"
    assert config.backups.s3_bucket == "bucket-x"
    assert config.backups.dir == tmp_path / "b"
    assert config.state_dir == tmp_path / "s"


def test_config_is_immutable_and_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "pw-MARKER-7f3a9c")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-MARKER-42")
    config = load_config(REPO / "runbook.yaml", env=os.environ)
    assert "MARKER" not in repr(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.database.name = "x"  # type: ignore[misc]


def test_relative_paths_resolve_against_the_runbook_folder(tmp_path: Path) -> None:
    text = RUNBOOK.replace("dir: /var/backups/preskool", "dir: ./backups")
    config = load_config(write(tmp_path, text), env={})
    assert config.backups.dir == (tmp_path / "backups").resolve()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("  port: 5432", "  port: [5432"), ":10: invalid YAML"),
        (("  port: 5432", "  port: [5432"), "flow sequence that starts on line 9"),
        (
            ("  port: 5432", "  port: five"),
            ":9: database.port must be a whole number, got text 'five'",
        ),
        (("  port: 5432", "  prot: 5432"), ":9: unknown key database.prot"),
        (
            ("  rto_minutes: 120 ", "  rto_minutes: true "),
            ":32: thresholds.rto_minutes must be a number",
        ),
        (("  - id: migrate", "  - id: migrations"), "unknown step id 'migrations'"),
        (
            ("  stop: [docker-compose, stop, frontend, backend]", "  stop: docker-compose stop"),
            ":73: app.stop must be a list",
        ),
        (("    title: App offline\n", ""), "is missing required key 'title'"),
        (("    daily:  ", "    hourly: "), ":26: backups.retention.hourly: unknown backup kind"),
        (
            ("  companion: true", "  companion: often"),
            ":24: backups.companion must be true or false, got text 'often'",
        ),
    ],
)
def test_bad_runbooks_name_file_and_line(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in RUNBOOK, old
    message = error_for(tmp_path, RUNBOOK.replace(old, new, 1))
    assert str(tmp_path / "runbook.yaml") in message
    assert expected in message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "steps must list the nine steps" in error_for(tmp_path, "")
    with pytest.raises(ConfigError, match="runbook file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_bad_env_port_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="DB_PORT must be a port number"):
        load_config(REPO / "runbook.yaml", env={"DB_PORT": "abc"})


def test_cli_exits_2_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, RUNBOOK.replace("  port: 5432", "  port: nope", 1))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "preskool_dr",
            "--runbook",
            str(path),
            "restore",
            "latest",
            "--confirm",
            "preskool_db",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PRESKOOL_DR_STATE_DIR": str(tmp_path / "state")},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}:9: database.port must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr
