"""The quarterly DR drill, headless: production untouched, a signed entry anyone can check
with stock OpenSSH."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.demo import standin_app
from tests.support.runbook import write_runbook
from tests.support.signing import assert_openssh_verifies, make_signing_key
from tests.support.site import Site


@pytest.fixture
def drill_site(site: Site) -> Site:
    """The site with a drill section: restore into `<db>_drill`, migrate and check health
    there (the stand-in app's health URL asked about that database)."""
    assert site.server is not None
    drill_db = f"{site.db.name}_drill"
    write_runbook(
        site.root,
        app=site.app,
        drill={
            "target_db": drill_db,
            "app": {
                "migrate": standin_app.command("migrate", site.app_dir),
                "health_url": f"{site.server.health_url}?db={drill_db}",
                "health_wait_seconds": 20,
            },
        },
    )
    return site


def test_drill_restores_elsewhere_and_signs_an_entry(drill_site: Site, tmp_path: Path) -> None:
    site = drill_site
    config = load_config(site.runbook, env=site.env())
    run_backup(config, "daily", upload=False)
    production_before = site.db.row_counts()
    key, allowed = make_signing_key(tmp_path, "alice")
    log = tmp_path / "drill-log.jsonl"
    drill_db = config.drill.target_db

    result = site.cli(
        "restore",
        "latest",
        "--drill",
        "--confirm",
        drill_db,
        "--performed-by",
        "alice",
        "--sign-key",
        str(key),
        "--drill-log",
        str(log),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "drill PASS" in result.stdout
    assert site.db.row_counts() == production_before  # production untouched
    assert "stop" not in site.calls() and "start" not in site.calls()
    assert "migrate" in site.calls()
    restored = site.db.row_counts(drill_db)
    restored.pop("alembic_version")
    assert restored == production_before
    # the entry: the contract's fields, the hash chain start, a real SSH signature
    (line,) = log.read_bytes().splitlines()
    entry = json.loads(line)
    for field in (
        "version",
        "date",
        "performed_by",
        "backup",
        "backup_md5",
        "incident_declared_at",
        "app_accessible_at",
        "rto_seconds",
        "rpo_seconds",
        "result",
        "steps",
        "prev_sha256",
        "signer",
        "signature",
    ):
        assert field in entry, field
    assert entry["type"] == "drill" and entry["result"] == "pass"
    assert entry["prev_sha256"] == "0" * 64 and entry["signer"] == "alice"
    assert entry["backup_md5"] and len(entry["steps"]) == 9
    assert_openssh_verifies(entry, allowed, "alice", tmp_path)
    verify = site.cli(
        "drill-log",
        "verify",
        "--drill-log",
        str(log),
        "--allowed-signers",
        str(allowed),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    export = site.cli("drill-log", "export", "--format", "markdown", "--drill-log", str(log))
    assert (
        "| Date | Performed By | Backup Used | RTO Achieved | RPO Window | Result |"
        in export.stdout
    )
    assert "alice" in export.stdout
    assert site.db.exists(drill_db)  # kept for inspection without --drop-after


def test_drill_refuses_the_production_database(drill_site: Site) -> None:
    site = drill_site
    run_backup(load_config(site.runbook, env=site.env()), "daily", upload=False)
    result = site.cli(
        "restore", "latest", "--drill", "--target-db", site.db.name, "--confirm", site.db.name
    )
    assert result.returncode == 2
    assert "never restores into the production database" in result.stderr
    assert site.calls() == []


@pytest.mark.slow
def test_drill_without_key_is_recorded_unsigned_and_drop_after(
    drill_site: Site, tmp_path: Path
) -> None:
    site = drill_site
    config = load_config(site.runbook, env={**site.env(), "SSH_AUTH_SOCK": ""})
    run_backup(config, "daily", upload=False)
    log = tmp_path / f"log-{uuid.uuid4().hex[:6]}.jsonl"
    env = {k: v for k, v in site.env().items() if k != "SSH_AUTH_SOCK"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "preskool_dr",
            "--runbook",
            str(site.runbook),
            "restore",
            "latest",
            "--drill",
            "--confirm",
            config.drill.target_db,
            "--performed-by",
            "bob",
            "--drill-log",
            str(log),
            "--drop-after",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "UNSIGNED" in result.stdout and "drill-log sign 1" in result.stdout
    entry = json.loads(log.read_text())
    assert entry["signature"] is None and entry["signer"] == "bob"
    assert not site.db.exists(config.drill.target_db)
