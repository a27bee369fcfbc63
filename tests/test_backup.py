"""`preskool-dr backup` end to end: real pg_dump, gzip, md5sum, psql and a moto S3 server."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from psycopg import sql

from preskool_dr.cli.output import BANNER_RULE
from preskool_dr.core.backup.gzip_writer import ReadBack
from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import Cancelled, DrError
from preskool_dr.core.base.events import Event, Notice, Progress, ignore_events, utcnow
from preskool_dr.core.storage.backup_names import backup_name, parse_backup_name
from preskool_dr.core.storage.meta import BackupMeta, write_meta
from preskool_dr.demo.cluster import Cluster
from tests.support.cli import call_cli, run_cli
from tests.support.db import APP_ROLE, Database
from tests.support.leaks import assert_no_secrets
from tests.support.runbook import write_runbook

NAME_RE = r"preskool-backup-\d{8}_\d{6}\.sql\.gz"


def backups_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(NAME_RE, p.name))


def write_fake_backup(folder: Path, kind: str | None, age: timedelta) -> Path:
    """A backup file named `age` ago, with meta naming `kind` (None: no meta, kind unknown)."""
    at = utcnow() - age
    path = folder / backup_name("daily", at)
    data = gzip.compress(b"-- old dump\n")
    path.write_bytes(data)
    (folder / (path.name + ".md5")).write_text(f"{hashlib.md5(data).hexdigest()}  {path.name}\n")
    if kind is not None:
        meta = BackupMeta(path.name, kind, at, "preskool_db", len(data), "0" * 32)
        write_meta(path, meta)
    return path


# ---------------------------------------------------------------- the happy path


@pytest.mark.parametrize("companion", [True, False], ids=["default", "companion-off"])
def test_backup_prints_the_seed_lines_and_writes_a_verified_backup(
    dr_env: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    companion: bool,
) -> None:
    """The seed's lines and files; the default also writes the custom-format companion
    and says so after them, and `backups.companion: false` is exactly the seed's backup."""
    backup_dir = Path(dr_env["BACKUP_DIR"])
    if not companion:
        runbook = write_runbook(tmp_path, backups={"companion": False})
        monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(runbook))
    result = call_cli("backup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == BANNER_RULE == "═" * 56
    assert re.fullmatch(
        r"  PreSkool ERP — Database Backup \| \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}",
        lines[1],
    )
    assert lines[2] == BANNER_RULE
    assert lines[3] == f"[BACKUP] Dumping database '{database.name}'..."
    created = re.fullmatch(
        rf"\[OK\]    Backup created: (\S+/{NAME_RE}) \((\d+(\.\d)?[KMG]?)\)", lines[4]
    )
    assert created, lines[4]
    md5_line = re.fullmatch(r"\[OK\]    MD5: ([0-9a-f]{32})", lines[5])
    assert md5_line, lines[5]
    assert lines[6] == "[OK]    Checksum verified ✓"
    assert lines[7] == "[OK]    Gzip integrity check passed"
    path = Path(created.group(1))
    name = path.name
    dump = name.removesuffix(".sql.gz") + ".dump"
    if companion:
        said = re.fullmatch(
            rf"\[OK\]    Custom-format companion: {re.escape(dump)} \(\d+ TOC entries, "
            r"MD5 ([0-9a-f]{32})\), from the same snapshot",
            lines.pop(8),
        )
        assert said, result.stdout
    # The test database is far below 1 MiB: the seed's "Backup small" alert, said at once.
    assert lines[8].startswith("[WARN]  Backup is only ")
    assert lines[9:] == ["[OK]    Deleted 0 old backup(s)"]

    assert path.parent == backup_dir
    assert backups_in(backup_dir) == [name]
    companion_files = [dump, dump + ".md5"] if companion else []
    assert sorted(p.name for p in backup_dir.iterdir() if not p.name.startswith(".")) == sorted(
        [name, name + ".md5", name + ".meta.json", *companion_files]
    )
    assert not list(backup_dir.glob("*.part")) and not list(backup_dir.glob(".*.part"))
    assert path.stat().st_mode & 0o777 == 0o600
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    assert md5_line.group(1) == digest
    # The real tools an operator without preskool-dr would use.
    check = subprocess.run(
        ["md5sum", "--check", name + ".md5"], cwd=backup_dir, capture_output=True, text=True
    )
    assert check.returncode == 0 and f"{name}: OK" in check.stdout
    assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0

    meta = json.loads((backup_dir / (name + ".meta.json")).read_text())
    assert meta["kind"] == "daily" and meta["md5"] == digest
    assert meta["size"] == path.stat().st_size
    assert meta["database"] == database.name
    assert meta["pg_dump_version"].startswith("pg_dump (PostgreSQL)")
    assert meta["row_counts"] == database.row_counts()
    if companion:
        dump_md5 = hashlib.md5((backup_dir / dump).read_bytes()).hexdigest()
        assert meta["companion_md5"] == said.group(1) == dump_md5
        assert (backup_dir / (dump + ".md5")).read_text() == f"{dump_md5}  {dump}\n"
    else:
        assert "companion_md5" not in meta
    # Name time is UTC and is the time in the banner.
    stamp = parse_backup_name(name)
    assert stamp is not None and stamp.strftime("%H:%M:%S %Y") in lines[1].replace(" UTC", "")
    assert_no_secrets(result.stdout, result.stderr, folder=backup_dir)


def test_gunzip_into_psql_reproduces_every_table_while_the_app_writes(
    dr_env: dict[str, str], database: Database, pg_cluster: Cluster
) -> None:
    """Row counts in meta.json come from the dump's own snapshot: they match the restored
    database exactly even though rows are inserted throughout the backup."""
    stop = threading.Event()
    inserted = 0

    def app_writes() -> None:
        nonlocal inserted
        with database.connect() as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO roles (name) VALUES (%s)", (f"role-{inserted}",))
                inserted += 1

    writer = threading.Thread(target=app_writes)
    writer.start()
    try:
        result = call_cli("backup")
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    backup_dir = Path(dr_env["BACKUP_DIR"])
    (name,) = backups_in(backup_dir)
    meta = json.loads((backup_dir / (name + ".meta.json")).read_text())

    restored = database.name + "_restored"  # the fixture drops names starting with its own
    with database.connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(restored), sql.Identifier(APP_ROLE)
            )
        )
    env = os.environ | {"PGHOST": pg_cluster.host, "PGPORT": str(pg_cluster.port)}
    env |= {"PGUSER": APP_ROLE, "PGDATABASE": restored}
    gunzip = subprocess.Popen(["gunzip", "-c", str(backup_dir / name)], stdout=subprocess.PIPE)
    psql = subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1"],
        stdin=gunzip.stdout,
        env=env,
        capture_output=True,
        text=True,
    )
    assert gunzip.stdout is not None
    gunzip.stdout.close()
    assert gunzip.wait() == 0
    assert psql.returncode == 0, psql.stderr
    assert len(meta["row_counts"]) == 18
    assert database.row_counts(restored) == meta["row_counts"]
    assert database.row_counts()["roles"] >= meta["row_counts"]["roles"]  # only ever grows


# ---------------------------------------------------------------- S3


def test_weekly_backup_uploads_three_files_and_the_dump_as_glacier(
    s3: str, database: Database
) -> None:
    result = call_cli("backup", "--kind", "weekly")
    assert result.returncode == 0, result.stderr
    name = re.search(NAME_RE, result.stdout)
    assert name
    url = f"s3://{s3}/preskool-backups/{name.group(0)}"
    assert f"[BACKUP] Uploading to {url} (GLACIER)..." in result.stdout
    dump = name.group(0).removesuffix(".sql.gz") + ".dump"
    assert f"[OK]    Uploaded to S3: {url} (+ .md5, .meta.json, {dump} + .md5)" in result.stdout
    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=s3, Prefix="preskool-backups/")["Contents"]
    classes = {o["Key"].removeprefix("preskool-backups/"): o.get("StorageClass") for o in listed}
    # the default companion travels with it: data in the kind's class, sidecars STANDARD
    assert classes == {
        name.group(0): "GLACIER",
        name.group(0) + ".md5": "STANDARD",
        name.group(0) + ".meta.json": "STANDARD",
        dump: "GLACIER",
        dump + ".md5": "STANDARD",
    }
    sidecar = client.get_object(Bucket=s3, Key=f"preskool-backups/{name.group(0)}.md5")
    local = Path(os.environ["BACKUP_DIR"]) / (name.group(0) + ".md5")
    assert sidecar["Body"].read() == local.read_bytes()
    assert (
        json.loads(
            client.get_object(Bucket=s3, Key=f"preskool-backups/{name.group(0)}.meta.json")[
                "Body"
            ].read()
        )["kind"]
        == "weekly"
    )
    assert_no_secrets(result.stdout, result.stderr, folder=Path(os.environ["BACKUP_DIR"]))


def test_daily_uploads_standard_and_no_upload_touches_nothing(s3: str, database: Database) -> None:
    client = boto3.client("s3")
    skipped = call_cli("backup", "--no-upload")
    assert skipped.returncode == 0, skipped.stderr
    assert "[BACKUP] S3 upload skipped (--no-upload)" in skipped.stdout
    assert client.list_objects_v2(Bucket=s3).get("KeyCount") == 0
    # A second backup in the same second would collide on its name: start it in the next one.
    time.sleep(1.05 - time.time() % 1)
    uploaded = call_cli("backup")
    assert uploaded.returncode == 0, uploaded.stderr
    name = re.findall(NAME_RE, uploaded.stdout)[0]
    head = client.head_object(Bucket=s3, Key=f"preskool-backups/{name}")
    assert head.get("StorageClass", "STANDARD") == "STANDARD"


def test_upload_failure_fails_the_run_and_keeps_the_local_backup(
    s3: str, database: Database
) -> None:
    env = os.environ | {"S3_BUCKET": "no-such-bucket-preskool"}
    result = call_cli("backup", env=env)
    assert result.returncode == 1
    fail = [ln for ln in result.stderr.splitlines() if ln.startswith("[FAIL]")]
    assert len(fail) == 1 and "S3 upload failed" in fail[0] and "is kept" in fail[0]
    assert "no-such-bucket-preskool" in fail[0]
    assert "Deleted" not in result.stdout  # nothing is deleted when the new copy is not safe
    backup_dir = Path(os.environ["BACKUP_DIR"])
    (name,) = backups_in(backup_dir)
    check = subprocess.run(["md5sum", "--check", name + ".md5"], cwd=backup_dir)
    assert check.returncode == 0
    assert_no_secrets(result.stdout, result.stderr, folder=backup_dir)


# ---------------------------------------------------------------- retention


def test_retention_deletes_only_old_backups_of_the_same_kind(s3: str, database: Database) -> None:
    backup_dir = Path(os.environ["BACKUP_DIR"])
    old_daily = write_fake_backup(backup_dir, "daily", timedelta(days=40))  # > 30 d local
    young_daily = write_fake_backup(backup_dir, "daily", timedelta(days=10))
    old_weekly = write_fake_backup(backup_dir, "weekly", timedelta(days=41))
    old_unknown = write_fake_backup(backup_dir, None, timedelta(days=42))
    old_pre_deploy = write_fake_backup(backup_dir, "pre-deploy", timedelta(days=43))
    # In S3: a daily past 90 days goes, one at 50 days stays, a weekly at 100 days stays.
    client = boto3.client("s3")
    s3_names = {}
    for label, kind, days in (
        ("gone", "daily", 100),
        ("young", "daily", 50),
        ("weekly", "weekly", 101),
        ("unknown", None, 102),
    ):
        staging = backup_dir / "staging"
        staging.mkdir(exist_ok=True)
        fake = write_fake_backup(staging, kind, timedelta(days=days))
        s3_names[label] = fake.name
        for path in staging.iterdir():
            client.upload_file(str(path), s3, f"preskool-backups/{path.name}")
            path.unlink()
        staging.rmdir()

    result = call_cli("backup")
    assert result.returncode == 0, result.stderr
    assert "[OK]    Deleted 2 old backup(s)" in result.stdout
    new = re.findall(NAME_RE, result.stdout)[0]
    local = set(os.listdir(backup_dir))
    assert old_daily.name not in local
    assert old_daily.name + ".md5" not in local and old_daily.name + ".meta.json" not in local
    for kept in (young_daily, old_weekly, old_unknown, old_pre_deploy):
        assert kept.name in local
    assert new in local
    keys = {
        o["Key"].removeprefix("preskool-backups/")
        for o in client.list_objects_v2(Bucket=s3)["Contents"]
    }
    assert not {s3_names["gone"], s3_names["gone"] + ".md5", s3_names["gone"] + ".meta.json"} & keys
    assert {s3_names["young"], s3_names["weekly"], s3_names["unknown"], new} <= keys

    # A pre-deploy run keeps its backup local (the seed: "Pre-deployment ... Local") and
    # applies the 7-day pre-deploy limit only. Started in the next second: backup names
    # have one-second resolution.
    time.sleep(1.05 - time.time() % 1)
    later = call_cli("backup", "--kind", "pre-deploy")
    assert later.returncode == 0, later.stderr
    assert "S3 upload skipped: pre-deploy backups stay local" in later.stdout
    assert "[OK]    Deleted 1 old backup(s)" in later.stdout
    local = set(os.listdir(backup_dir))
    assert old_pre_deploy.name not in local and young_daily.name in local


# ---------------------------------------------------------------- failures leave nothing


def assert_failed_cleanly(result: subprocess.CompletedProcess[str], backup_dir: Path) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    fail = [ln for ln in result.stderr.splitlines() if ln.startswith("[FAIL]  ")]
    assert len(fail) == 1, result.stderr
    assert backups_in(backup_dir) == []
    leftovers = [p.name for p in backup_dir.iterdir() if p.name != ".preskool-backup.lock"]
    assert leftovers == []
    assert "[OK]" not in result.stdout
    assert_no_secrets(result.stdout, result.stderr, folder=backup_dir)
    return fail[0]


def test_wrong_password_fails_without_a_file(dr_env: dict[str, str], database: Database) -> None:
    wrong = "wrong-pw-MARKER-5e1d"
    result = call_cli("backup", env=os.environ | {"PGPASSWORD": wrong})
    fail = assert_failed_cleanly(result, Path(dr_env["BACKUP_DIR"]))
    assert "password authentication failed" in fail and "PGPASSWORD" in fail
    assert wrong not in result.stdout + result.stderr


def test_missing_database_fails_without_a_file(dr_env: dict[str, str], database: Database) -> None:
    result = call_cli("backup", env=os.environ | {"DB_NAME": "no_such_db"})
    fail = assert_failed_cleanly(result, Path(dr_env["BACKUP_DIR"]))
    assert 'database "no_such_db" does not exist' in fail


def test_pg_dump_failing_half_way_leaves_no_file(
    dr_env: dict[str, str], database: Database
) -> None:
    """Row-level security the app role may not bypass: pg_dump writes the schema and most
    tables, then its COPY of the last table fails and it exits 1."""
    with database.connect() as conn:
        conn.execute("CREATE TABLE zzz_secret (id int)")
        conn.execute("INSERT INTO zzz_secret VALUES (1), (2)")
        conn.execute("GRANT SELECT ON zzz_secret TO preskool")
        conn.execute("ALTER TABLE zzz_secret ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY only_some ON zzz_secret USING (id > 1)")
    result = call_cli("backup")
    fail = assert_failed_cleanly(result, Path(dr_env["BACKUP_DIR"]))
    assert "pg_dump failed (exit status 1)" in fail
    assert 'row-level security policy for table "zzz_secret"' in fail


def test_disk_error_mid_write_leaves_no_file(dr_env: dict[str, str], database: Database) -> None:
    """A file size limit is a real write error (EFBIG) part way through the ~160 KB dump."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = run_cli("backup", preexec_fn=limit_file_size)
    fail = assert_failed_cleanly(result, Path(dr_env["BACKUP_DIR"]))
    assert "File too large" in fail and "nothing was saved" in fail


def test_sigterm_mid_run_leaves_no_half_file(dr_env: dict[str, str], database: Database) -> None:
    """cron's or systemd's SIGTERM: pg_dump is stopped and the .part removed. Where the signal
    lands is up to the scheduler, so the invariant is checked rather than one outcome: any
    final-named file passes `md5sum --check`, no .part is left, exit is 0 or 130."""
    backup_dir = Path(dr_env["BACKUP_DIR"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "preskool_dr", "backup"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[BACKUP] Dumping"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=240)
    assert proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert "[FAIL]  backup stopped by SIGTERM" in err, err
    for name in backups_in(backup_dir):
        check = subprocess.run(["md5sum", "--check", name + ".md5"], cwd=backup_dir)
        assert check.returncode == 0
    assert not [p for p in backup_dir.iterdir() if p.name.endswith(".part")]


def test_a_second_backup_waits_for_the_lock_holder(
    dr_env: dict[str, str], database: Database
) -> None:
    backup_dir = Path(dr_env["BACKUP_DIR"])
    with open(backup_dir / ".preskool-backup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242\n")
        lock.flush()
        result = run_cli("backup")
    assert result.returncode == 1
    assert "another backup (pid 4242) is running" in result.stderr
    assert backups_in(backup_dir) == []


def test_leftover_part_of_a_killed_run_is_removed(
    dr_env: dict[str, str], database: Database
) -> None:
    backup_dir = Path(dr_env["BACKUP_DIR"])
    stale = backup_dir / ".preskool-backup-20260101_020000.sql.gz.part"
    stale.write_bytes(b"\x1f\x8b half")
    result = call_cli("backup")
    assert result.returncode == 0, result.stderr
    assert f"[WARN]  Removed {stale.name} left by an interrupted backup" in result.stdout
    assert not stale.exists()


# ---------------------------------------------------------------- the core API


def test_core_reports_through_events_and_cancel_removes_the_part(
    dr_env: dict[str, str], database: Database
) -> None:
    config = load_config()
    events: list[Event] = []
    result = run_backup(config, "daily", upload=False, on_event=events.append)
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices[0] == f"Dumping database '{database.name}'..."
    assert notices[-1] == "Deleted 0 old backup(s)"
    phases = {e.phase for e in events if isinstance(e, Progress)}
    assert {"dump", "verify"} <= phases
    assert result.meta.row_counts == database.row_counts()

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_backup(config, "daily", at=utcnow() + timedelta(seconds=5), cancel=cancel)
    assert backups_in(config.backups.dir) == [result.path.name]
    assert not list(config.backups.dir.glob(".*.part"))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("none", None),
        ("truncated", "without its end marker"),
        ("trailing bytes", "trailing garbage after the gzip data"),
        ("flipped bytes", "corrupt gzip data"),
        ("shorter than written", "the file ends at byte"),
        ("other text", "pg_dump wrote"),
    ],
)
def test_read_back_finds_what_differs_from_what_was_written(
    damage: str, problem: str | None, tmp_path: Path
) -> None:
    """The check that runs beside the dump, on files damaged the ways a disk or a bug could:
    the backup gets its name only when it is None."""
    text = b"".join(b"%d\tsome row text\n" % i for i in range(50_000))
    good = gzip.compress(text)
    data, written, sql_bytes = good, len(good), len(text)
    if damage == "truncated":
        data = good[:-12]
        written = len(data)
    elif damage == "trailing bytes":
        data += b"\x00junk"
        written = len(data)
    elif damage == "flipped bytes":
        middle = len(good) // 2
        data = (
            good[:middle]
            + bytes(b ^ 0x5A for b in good[middle : middle + 32])
            + good[middle + 32 :]
        )
    elif damage == "shorter than written":
        data = good[: len(good) // 2]
    elif damage == "other text":
        sql_bytes += 1
    path = tmp_path / "part"
    path.write_bytes(data)
    check = ReadBack(path, ignore_events)
    check.written(written)
    check.end(complete=True)
    found = check.problem(sql_bytes)
    if problem is None:
        assert found is None
        assert check.md5 == hashlib.md5(good).hexdigest()
    else:
        assert found is not None and problem in found


def test_the_companion_is_written_into_a_new_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_dump --file would create the companion 0666 & ~umask (readable while the whole
    database is written) through whatever is at its name: the .part is made here, new and
    0600, before pg_dump starts; a symbolic link at that name is refused and its target kept."""
    from preskool_dr.core.backup import companion
    from preskool_dr.core.base.settings import DatabaseSettings
    from preskool_dr.core.storage.layout import companion_path

    backup = tmp_path / "preskool-backup-20260101_020000.sql.gz"
    part = tmp_path / f".{companion_path(backup).name}.part"
    seen: list[int] = []

    def no_pg_dump(argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        seen.append(part.lstat().st_mode)
        return subprocess.Popen(["false"], stderr=subprocess.PIPE)

    monkeypatch.setattr(companion.procs, "spawn", no_pg_dump)
    with (
        pytest.raises(DrError, match="pg_dump --format=custom failed"),
        companion.companion_dump(DatabaseSettings(), "snap", backup, enabled=True),
    ):
        pass
    assert seen == [stat.S_IFREG | 0o600]
    assert not part.exists()  # a failed dump leaves nothing

    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"keep = 1\n")
    part.symlink_to(victim)
    with (
        pytest.raises(DrError, match="something is already at"),
        companion.companion_dump(DatabaseSettings(), "snap", backup, enabled=True),
    ):
        pass
    assert victim.read_bytes() == b"keep = 1\n" and len(seen) == 1
