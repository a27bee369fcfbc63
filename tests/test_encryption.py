"""Encrypted backups (age): the runbook's recipients, `backup` writing `.sql.gz.age` with
nothing in clear text on disk, the stock `age` tool decrypting it by hand, and verify,
restore and restore-test decrypting in the stream with `--identity` or
PRESKOOL_DR_AGE_IDENTITY. Real pg_dump, psql, PostgreSQL and the real `age` binary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import signal
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import Cancelled, ConfigError, UsageError
from preskool_dr.core.base.events import utcnow
from preskool_dr.core.storage.layout import meta_path
from tests.support.age_keys import AgeKey, age_decrypt, encrypting_runbook, make_key
from tests.support.backups import make_backup
from tests.support.cli import call_cli, run_cli
from tests.support.runbook import write_runbook
from tests.support.site import Site

# ---------------------------------------------------------------- the runbook


def test_runbook_accepts_age_and_ssh_recipients(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ssh")], check=True
    )
    ssh_public = (tmp_path / "ssh.pub").read_text().strip()
    runbook = encrypting_runbook(tmp_path, key.recipient, ssh_public)
    config = load_config(runbook, env={})
    assert config.encryption.recipients == (key.recipient, ssh_public)
    assert config.encryption.enabled
    (tmp_path / "plain").mkdir()
    assert not load_config(write_runbook(tmp_path / "plain"), env={}).encryption.enabled


@pytest.mark.parametrize(
    ("recipient", "says"),
    [
        ("age1notakey", "not a valid age recipient"),
        ("AGE-SECRET-KEY-1QQQQ", "secret key"),
        ("hello", "not an age recipient"),
    ],
)
def test_a_bad_recipient_is_a_config_error_at_its_line(
    tmp_path: Path, recipient: str, says: str
) -> None:
    key = make_key(tmp_path)
    runbook = encrypting_runbook(tmp_path, key.recipient, recipient)
    lines = runbook.read_text().splitlines()
    expected = next(n for n, line in enumerate(lines, 1) if recipient in line)
    with pytest.raises(ConfigError) as info:
        load_config(runbook, env={})
    assert f"{runbook}:{expected}:" in str(info.value)
    assert "encryption.recipients[1]" in str(info.value) and says in str(info.value)
    result = call_cli("--runbook", str(runbook), "config", "check")
    assert result.returncode == 2, result.stderr
    assert f"{runbook}:{expected}:" in result.stderr


def test_an_encryption_section_without_recipients_is_refused(tmp_path: Path) -> None:
    runbook = write_runbook(tmp_path, encryption={"recipients": []})
    with pytest.raises(ConfigError, match="at least one age recipient"):
        load_config(runbook, env={})


# ---------------------------------------------------------------- backup


def _encrypt_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *recipients: str) -> Path:
    folder = tmp_path / "rb"
    folder.mkdir(exist_ok=True)
    runbook = encrypting_runbook(folder, *recipients)
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    return runbook


def test_backup_is_encrypted_before_it_touches_disk_and_age_decrypts_it(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(tmp_path / "keys")
    runbook = _encrypt_site(tmp_path, monkeypatch, key.recipient)
    result = call_cli("backup", "--no-upload")
    assert result.returncode == 0, result.stderr + result.stdout
    backup_dir = Path(dr_env["BACKUP_DIR"])
    names = sorted(p.name for p in backup_dir.iterdir() if not p.name.startswith("."))
    (backup,) = [n for n in names if n.endswith(".sql.gz.age")]
    assert names == [backup, backup + ".md5", backup + ".meta.json"]
    path = backup_dir / backup
    data = path.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b"PostgreSQL database dump" not in data
    # the sidecar is over the encrypted bytes: `md5sum --check` works without a key
    md5 = hashlib.md5(data).hexdigest()
    assert (backup_dir / (backup + ".md5")).read_text() == f"{md5}  {backup}\n"
    meta = json.loads((backup_dir / (backup + ".meta.json")).read_text())
    assert meta["encrypted"] is True and meta["md5"] == md5 and meta["size"] == len(data)
    # the operator's manual path: age -d -i KEY F | gunzip -c
    text = age_decrypt(path, key)
    assert text.startswith(b"--\n-- PostgreSQL database dump")
    assert b"-- PostgreSQL database dump complete" in text
    assert b"COPY public.students" in text
    assert runbook.exists()


def test_a_recipient_broken_after_the_check_fails_the_backup_with_nothing_written(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails closed: the recipients are parsed again at backup time, before any file."""
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    config = load_config()
    broken = dataclasses.replace(
        config, encryption=dataclasses.replace(config.encryption, recipients=("age1broken",))
    )
    with pytest.raises(UsageError, match=r"recipients\[0\] is unusable.*nothing was written"):
        run_backup(broken, "daily", upload=False)
    assert [p.name for p in Path(dr_env["BACKUP_DIR"]).iterdir()] == []


def test_custom_format_is_refused_with_encryption_rather_than_written_in_clear(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    result = call_cli("backup", "--no-upload", "--format", "custom")
    assert result.returncode == 2, result.stderr
    assert "clear text" in result.stderr
    assert [p.name for p in Path(dr_env["BACKUP_DIR"]).iterdir()] == []


def _encrypted_backup(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, AgeKey]:
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    result = run_backup(load_config(), "daily", upload=False)
    return result.path, key


# ---------------------------------------------------------------- verify


def test_verify_without_a_key_checks_the_md5_and_says_the_content_was_not(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _encrypted_backup(dr_env, tmp_path, monkeypatch)
    result = call_cli("verify", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches the sidecar" in result.stdout
    assert "Gzip and content not checked: the backup is encrypted" in result.stdout
    assert "--identity FILE" in result.stdout
    report = json.loads(call_cli("verify", path.name, "--json").stdout)
    (file,) = report["files"]
    assert report["ok"] and file["encrypted"] and not file["gzip_checked"]


def test_verify_with_the_identity_decrypts_and_checks_gzip_and_content(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key = _encrypted_backup(dr_env, tmp_path, monkeypatch)
    result = call_cli("--identity", str(key.identity), "verify", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Decrypted; gzip integrity check passed" in result.stdout
    assert "Content is complete pg_dump output" in result.stdout
    # the environment works as well as the option
    monkeypatch.setenv("PRESKOOL_DR_AGE_IDENTITY", str(key.identity))
    report = json.loads(call_cli("verify", path.name, "--json").stdout)
    (file,) = report["files"]
    assert report["ok"] and file["gzip_checked"] and file["dump_checked"] and file["dump_ok"]


def test_verify_with_the_wrong_identity_is_a_clear_error(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _encrypted_backup(dr_env, tmp_path, monkeypatch)
    other = make_key(tmp_path / "other")
    result = call_cli("--identity", str(other.identity), "verify", path.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "matches none of its recipients" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.exists()  # the backup is not at fault and stays


def test_verify_with_the_key_finds_damage_the_md5_would_also_find(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damaged ciphertext resealed with an honest sidecar: only decryption finds it."""
    path, key = _encrypted_backup(dr_env, tmp_path, monkeypatch)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    md5 = hashlib.md5(bytes(data)).hexdigest()
    (path.parent / (path.name + ".md5")).write_text(f"{md5}  {path.name}\n")
    assert call_cli("verify", path.name).returncode == 0  # without a key: md5 only
    result = call_cli("--identity", str(key.identity), "verify", path.name)
    assert result.returncode == 1, result.stdout
    assert "does not decrypt: its encrypted data is damaged" in result.stdout


# ---------------------------------------------------------------- restore


def _encrypt(site: Site, *recipients: str) -> None:
    write_runbook(site.root, app=site.app, encryption={"recipients": list(recipients)})


def test_restore_with_identity_decrypts_in_the_stream_and_restores_exactly(
    site: Site, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    _encrypt(site, key.recipient)
    before = site.checksum()
    counts = site.db.row_counts()
    backup = site.backup()
    assert backup.name.endswith(".sql.gz.age")
    site.change_data()
    assert site.checksum() != before
    result = site.cli(
        "--identity", str(key.identity), "restore", backup.name, "--confirm", site.db.name
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert site.checksum() == before
    restored = site.db.row_counts()
    restored.pop("alembic_version", None)  # the stand-in app's migrate (step 8) adds it
    assert restored == counts
    assert "decrypted in the stream" in result.stdout
    # nothing in clear text was left on disk
    for folder in (site.state_dir, site.backup_dir):
        for file in folder.rglob("*"):
            if file.is_file() and not file.is_symlink():
                assert b"PostgreSQL database dump" not in file.read_bytes(), file
    site.assert_no_leak(result)


def test_restore_without_identity_stops_before_downtime_saying_what_to_pass(
    site: Site, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys")
    _encrypt(site, key.recipient)
    backup = site.backup()
    before = site.checksum()
    result = site.restore(backup.name)
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "is encrypted and no identity was given" in output
    assert "--identity FILE" in output and "PRESKOOL_DR_AGE_IDENTITY" in output
    assert "stop" not in site.calls()  # step 4 refused: the app was never taken down
    assert site.checksum() == before


@pytest.mark.slow
def test_restore_test_decrypts_with_the_environment_identity(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(tmp_path / "keys")
    _encrypt(site, key.recipient)
    site.backup()
    result = site.cli("restore-test", "latest")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no identity was given" in result.stdout + result.stderr
    checks = json.loads(site.cli("check", "--json").stdout)["checks"]
    (restore_test,) = [c for c in checks if c["name"] == "restore_test"]
    assert (
        restore_test["status"] == "WARNING" and "no identity was given" in restore_test["summary"]
    )
    env = site.env(PRESKOOL_DR_AGE_IDENTITY=str(key.identity))
    result = site.cli("restore-test", "latest", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- check


def _check_states(env: dict[str, str] | None = None) -> dict[str, str]:
    report = json.loads(call_cli("check", "--json", env=env).stdout)
    return {c["name"]: c["status"] for c in report["checks"]}


def test_check_is_critical_when_the_newest_backup_is_clear_text_under_encryption(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear = make_backup(Path(dr_env["BACKUP_DIR"]), utcnow() - timedelta(hours=1))
    assert "encryption" not in _check_states()  # no encryption configured: no such check
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    result = call_cli("check")
    assert result.returncode == 2, result.stdout
    assert f"Backup not encrypted: the newest backup {clear.name} is clear text" in result.stdout
    assert _check_states()["encryption"] == "CRITICAL"
    run_backup(load_config(), "daily", upload=False)
    assert _check_states()["encryption"] == "OK"


@pytest.mark.slow
def test_a_base_backup_under_encryption_is_one_encrypted_tar(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_basebackup's tar stream is encrypted as it is read: the folder holds only
    base.tar.gz.age (WAL and manifest inside) and its sidecar; the stock tools open it."""
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    result = run_backup(load_config(), "base", upload=True)
    folder = result.path
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3)["Contents"]
    }
    prefix = f"preskool-backups/{folder.name}"
    assert {k for k in keys if k.startswith(prefix)} == {
        f"{prefix}/base.tar.gz.age",
        f"{prefix}/base.tar.gz.age.md5",
        f"{prefix}.meta.json",
    }
    assert sorted(p.name for p in folder.iterdir()) == ["base.tar.gz.age", "base.tar.gz.age.md5"]
    assert (folder / "base.tar.gz.age").read_bytes().startswith(b"age-encryption.org/v1\n")
    check = subprocess.run(["md5sum", "--check", "base.tar.gz.age.md5"], cwd=folder)
    assert check.returncode == 0
    listing = subprocess.run(
        f"age -d -i {key.identity} base.tar.gz.age | tar -tzf -",
        shell=True,
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "backup_manifest" in listing and "PG_VERSION" in listing
    meta = json.loads(meta_path(folder).read_text())
    assert set(meta["base"]["members"]) == {"base.tar.gz.age"}
    assert meta["md5"] == meta["base"]["members"]["base.tar.gz.age"]
    assert call_cli("verify", folder.name).returncode == 0


def test_encrypted_backup_goes_to_s3_as_age_and_verifies_from_there(
    s3: str, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploaded encrypted (the same bytes as on disk), listed and `latest` from S3 alone,
    downloaded and decrypted in the stream by verify."""
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    path = run_backup(load_config(), "daily", upload=True).path
    client = boto3.client("s3", endpoint_url=s3_server)
    keys = sorted(
        o["Key"].rsplit("/", 1)[-1] for o in client.list_objects_v2(Bucket=s3)["Contents"]
    )
    assert keys == [path.name, path.name + ".md5", path.name + ".meta.json"]
    body = client.get_object(Bucket=s3, Key=f"preskool-backups/{path.name}")["Body"].read()
    assert body == path.read_bytes() and body.startswith(b"age-encryption.org/v1\n")
    for name in keys:
        (path.parent / name).unlink()
    result = call_cli("--identity", str(key.identity), "verify", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "downloaded from s3://" in result.stdout
    assert "Content is complete pg_dump output" in result.stdout


def test_config_check_shows_the_recipients_and_where_the_identity_comes_from(
    tmp_path: Path,
) -> None:
    key = make_key(tmp_path / "keys")
    runbook = encrypting_runbook(tmp_path, key.recipient)
    env = {**os.environ, "PRESKOOL_DR_AGE_IDENTITY": str(key.identity)}
    result = call_cli("--runbook", str(runbook), "config", "check", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("encryption.recipients") and key.recipient in line for line in lines)
    (identity,) = [line for line in lines if line.startswith("encryption.identity")]
    assert str(key.identity) in identity and "environment PRESKOOL_DR_AGE_IDENTITY" in identity
    assert "AGE-SECRET-KEY" not in result.stdout


def test_a_write_error_mid_encrypted_backup_leaves_no_file(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real write error (EFBIG from a file size limit) raised on the encryption thread
    reaches the operator as the disk error it is, and nothing is left."""
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))

    result = run_cli("backup", "--no-upload", preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "File too large" in result.stderr and "nothing was saved" in result.stderr
    assert "Traceback" not in result.stderr
    left = [
        p.name for p in Path(dr_env["BACKUP_DIR"]).iterdir() if p.name != ".preskool-backup.lock"
    ]
    assert left == []


def test_a_cancelled_encrypted_backup_stops_its_encryption_and_leaves_nothing(
    dr_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(tmp_path / "keys")
    _encrypt_site(tmp_path, monkeypatch, key.recipient)
    cancel = threading.Event()
    cancel.set()
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(Cancelled):
        run_backup(load_config(), "daily", upload=False, cancel=cancel)
    assert "age-encrypt" not in {t.name for t in threading.enumerate()} - before
    left = [
        p.name for p in Path(dr_env["BACKUP_DIR"]).iterdir() if p.name != ".preskool-backup.lock"
    ]
    assert left == []
