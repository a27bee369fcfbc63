"""A hostile bucket or folder: names, metadata and races that try to write where they should not.

Guarantee: nothing a bucket or BACKUP_DIR hands over is written outside its folder. An S3
key such as `preskool-backups/<backup name>/../../victim/x` makes its backup BAD in `list`
(exit 0, with the reason), `latest` skips it, and `verify`/`restore` of it fail with exit 1
naming the key, before any downtime and with nothing written; an `s3://` URL with a `..`,
`.` or empty segment, a backslash or a NUL is refused with exit 2. Names are matched whole:
a backup or WAL name with a trailing newline is not a backup or WAL name. A `.meta.json`
holding Infinity, NaN, a number out of range, 10,000 levels of nesting or a list is
reported as bad metadata while `list` and `latest` go on working. Two servers pushing the
same WAL name at the same moment, into one folder or one bucket, never overwrite each
other: the first install wins (os.link locally, `If-None-Match: *` in S3) and the other push
fails naming the conflict, or succeeds when its bytes are identical. Downloaded backups and
every file written beside them are mode 0600, folders the tool creates 0700, and `check`
warns (Nagios WARNING) about a BACKUP_DIR other users can enter, naming the `chmod` fix.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import pwd
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from preskool_dr.cli.wal_cmd import EXIT_ABORT_RECOVERY
from preskool_dr.core.base.config import load_config
from preskool_dr.core.base.errors import DrError, UsageError
from preskool_dr.core.storage import catalog, checksum
from preskool_dr.core.storage.backup_names import backup_name
from preskool_dr.core.storage.fetch import discard_download, fetch_backup
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.meta import META_MAX_BYTES, BackupMeta, read_meta, write_meta
from tests.support.backups import fabricate
from tests.support.checks import assert_says, check_line, restore_test_passed, the_error
from tests.support.child import Child
from tests.support.cli import HANG_GUARD, cli_argv, run
from tests.support.leaks import AWS_SECRET, assert_no_secrets
from tests.support.runbook import REPO
from tests.support.s3proxy import Fault, FaultProxy
from tests.support.site import Site

PREFIX = "preskool-backups/"
GOOD_AT = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
HOSTILE_AT = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # newer: what `latest` would pick
HOSTILE = backup_name("daily", HOSTILE_AT)
SEG = "000000010000000000000007"
DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\nSELECT 1;\n\n"
    b"--\n-- PostgreSQL database dump complete\n--\n\n"
)


def make_backup(folder: Path, at: datetime, meta: bytes | None = None) -> Path:
    """A small logical backup that verifies (pg_dump's banners, sidecar, meta). `meta`
    replaces the .meta.json's bytes (a hostile one)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / backup_name("daily", at)
    path.write_bytes(gzip.compress(DUMP))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    checksum.write_sidecar(path, md5)
    write_meta(path, BackupMeta(path.name, "daily", at, "preskool_db", path.stat().st_size, md5))
    if meta is not None:
        meta_path(path).write_bytes(meta)
    return path


def upload(bucket: str, path: Path, key: str | None = None) -> None:
    """`path` and the sidecar and meta beside it, under preskool-backups/ (or as `key`)."""
    client = boto3.client("s3")
    if key is not None:
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        return
    for member in (path, checksum.sidecar_path(path), meta_path(path)):
        if member.exists():
            client.put_object(Bucket=bucket, Key=PREFIX + member.name, Body=member.read_bytes())


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = run(cli_argv(*args), env if env is not None else dict(os.environ))
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert_no_secrets(result.stdout, result.stderr)
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ---------------------------------------------------------------- keys that climb out


@pytest.mark.slow
def test_dot_dot_key_is_listed_bad_refused_and_never_written_outside(
    s3_bucket: str, tmp_path: Path
) -> None:
    """The key `preskool-backups/<newest backup name>/../../victim/x`: `list` shows that
    backup BAD (exit 0) with the key, `latest` skips it, `verify` of it by name or URL exits 1
    naming the key, and nothing appears outside BACKUP_DIR."""
    backup_dir = Path(os.environ["BACKUP_DIR"])
    good = make_backup(tmp_path / "made", GOOD_AT)
    upload(s3_bucket, good)
    key = f"{PREFIX}{HOSTILE}/../../victim/x"
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=key, Body=b"planted\n")
    victim = tmp_path / "victim"  # where BACKUP_DIR/<name>/../../victim/x lands

    listed = cli("list")
    as_json = cli("list", "--json")
    by_name = cli("verify", HOSTILE)
    by_url = cli("verify", f"s3://{s3_bucket}/{PREFIX}{HOSTILE}")
    latest = cli("verify", "latest")

    assert listed.returncode == 0
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(HOSTILE)]
    assert "BAD" in row
    assert f"BAD {HOSTILE}: " in listed.stdout and "'..'" in listed.stdout
    records = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert "'..'" in records[HOSTILE]["bad"] and records[good.name]["bad"] is None
    for result in (by_name, by_url):
        assert result.returncode == 1, result.stdout + result.stderr
        assert_says(the_error(result), "is refused", repr(key), "nothing was downloaded")
    assert latest.returncode == 0, latest.stdout + latest.stderr
    assert f"Backup verified: {backup_dir / good.name}" in latest.stdout
    assert not victim.exists()
    assert not (backup_dir / HOSTILE).exists()


@pytest.mark.slow
def test_restore_of_a_dot_dot_backup_fails_before_downtime(site: Site, s3: str) -> None:
    """`restore` of a backup whose folder holds a `..` key: exit 1 naming the key, the app
    is never stopped, the database untouched, nothing written outside BACKUP_DIR."""
    key = f"{PREFIX}{HOSTILE}/../../victim/x"
    boto3.client("s3").put_object(Bucket=s3, Key=key, Body=b"planted\n")
    before = site.checksum()
    result = site.restore(f"s3://{s3}/{PREFIX}{HOSTILE}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert repr(key) in result.stdout + result.stderr
    assert site.calls() == []
    assert site.checksum() == before
    assert not (site.backup_dir.parent / "victim").exists()
    site.assert_no_leak(result)


@pytest.mark.parametrize(
    "folder",
    [f"{PREFIX}..", f"{PREFIX}.", PREFIX.rstrip("/") + "/", f"{PREFIX}a\\..\\b"],
    ids=["dot-dot", "dot", "empty-segment", "backslash"],
)
def test_s3_url_with_a_climbing_segment_is_refused(
    s3_bucket: str, tmp_path: Path, folder: str
) -> None:
    """`verify s3://bucket/<key>` where the key holds `..`, `.`, an empty segment or a
    backslash: refused with exit 2 even though S3 has an object under that literal key."""
    good = make_backup(tmp_path / "made", GOOD_AT)
    key = f"{folder}/{good.name}"
    upload(s3_bucket, good, key=key)
    result = cli("verify", f"s3://{s3_bucket}/{key}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert_says(the_error(result), "is refused")
    assert list(Path(os.environ["BACKUP_DIR"]).iterdir()) == []


def test_s3_url_with_a_nul_is_refused(s3_bucket: str) -> None:
    """A NUL inside an s3:// URL (it cannot travel in argv, but can in the TUI or a journal)
    is refused as a usage error (exit 2) before S3 is asked."""
    config = load_config(REPO / "runbook.yaml", env=os.environ)
    with pytest.raises(UsageError, match="is refused") as caught:
        catalog.resolve_backup(config, f"s3://{s3_bucket}/{PREFIX}x\0/../y.sql.gz")
    assert caught.value.exit_code == 2


# ---------------------------------------------------------------- names matched whole


def test_names_with_a_trailing_newline_are_not_names(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    """A file `<newer backup name>\\n` in BACKUP_DIR is not listed and not `latest`; WAL
    names with a trailing newline are refused by wal-fetch and wal-push."""
    backup_dir = Path(os.environ["BACKUP_DIR"])
    good = make_backup(backup_dir, GOOD_AT)
    newline_name = HOSTILE + "\n"
    (backup_dir / newline_name).write_bytes(good.read_bytes())
    checksum.write_sidecar(backup_dir / newline_name, hashlib.md5(good.read_bytes()).hexdigest())
    archive = backup_dir / "wal"
    archive.mkdir()
    planted = archive / (SEG + "\n")
    planted.write_bytes(b"w" * 1024)
    checksum.write_sidecar(planted, hashlib.md5(planted.read_bytes()).hexdigest())
    source = tmp_path / "pg_wal" / (SEG + "\n")
    source.parent.mkdir()
    source.write_bytes(b"w" * 1024)

    as_json = cli("list", "--json")
    latest = cli("verify", "latest")
    fetched = cli("wal-fetch", SEG + "\n", str(tmp_path / "RECOVERYXLOG"))
    pushed = cli("wal-push", str(source))

    assert [r["name"] for r in json.loads(as_json.stdout)] == [good.name]
    assert latest.returncode == 0 and f"Backup verified: {good}" in latest.stdout
    # The WAL commands' own codes: a push is retried (1), a fetch stops the recovery (255).
    for result, code in ((fetched, EXIT_ABORT_RECOVERY), (pushed, 1)):
        assert result.returncode == code, result.stdout + result.stderr
        assert_says(the_error(result), "is not a WAL file name")
    assert not (tmp_path / "RECOVERYXLOG").exists()
    assert sorted(p.name for p in archive.iterdir()) == sorted(
        [planted.name, planted.name + ".md5"]
    )


# ---------------------------------------------------------------- metadata


BAD_METAS = {
    "infinity": b'{"name": "N", "kind": "daily", "created_at": "2026-03-02T02:00:00Z", '
    b'"database": "d", "size": Infinity, "md5": "' + b"0" * 32 + b'"}',
    "nan": b'{"name": "N", "kind": "daily", "created_at": "2026-03-02T02:00:00Z", '
    b'"database": "d", "size": NaN, "md5": "' + b"0" * 32 + b'"}',
    "out-of-range": b'{"name": "N", "kind": "daily", "created_at": "2026-03-02T02:00:00Z", '
    b'"database": "d", "size": 1, "md5": "' + b"0" * 32 + b'", "row_counts": {"t": 1e400}}',
    "deep-nesting": b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "list": b'[{"name": "N", "kind": "daily"}]',
}


# The fast tier keeps a listing and a nesting bomb in a local folder; `make test` runs all.
FAST_METAS = {("list", "local"), ("deep-nesting", "local")}


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        pytest.param(
            payload,
            where,
            id=f"{payload}-{where}",
            marks=() if (payload, where) in FAST_METAS else pytest.mark.slow,
        )
        for payload in sorted(BAD_METAS)
        for where in ("s3", "local")
    ],
)
def test_bad_metadata_is_reported_and_list_and_latest_go_on(
    s3_bucket: str, tmp_path: Path, payload: str, where: str
) -> None:
    """The newest backup's .meta.json holds Infinity, NaN, 1e400, 10,000 levels of nesting,
    or a list: `list` exits 0 and warns `bad metadata` naming the backup, `list --json` says
    why, and `verify latest` still picks and verifies that backup."""
    backup_dir = Path(os.environ["BACKUP_DIR"])
    upload(s3_bucket, make_backup(tmp_path / "made", GOOD_AT))
    folder = backup_dir if where == "local" else tmp_path / "made"
    newest = make_backup(folder, HOSTILE_AT, meta=BAD_METAS[payload])
    if where == "s3":
        upload(s3_bucket, newest)

    listed = cli("list")
    as_json = cli("list", "--json")
    latest = cli("verify", "latest")

    assert listed.returncode == 0 and as_json.returncode == 0
    assert newest.name in listed.stdout
    assert f"warning: {newest.name}: bad metadata" in listed.stderr
    records = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert records[newest.name]["meta_error"] and records[newest.name]["kind"] == "unknown"
    assert latest.returncode == 0, latest.stdout + latest.stderr
    assert f"Backup verified: {backup_dir / newest.name}" in latest.stdout


# ---------------------------------------------------------------- two pushes of one name


def wait_for_reader(fifo: Path) -> int:
    """Until a process has `fifo` open for reading; returns our write end."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def write_all(fd: int, data: bytes) -> None:
    os.set_blocking(fd, True)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


@pytest.mark.parametrize("same", [False, True], ids=["different-bytes", "identical-bytes"])
def test_two_local_pushes_of_one_wal_name_never_overwrite(
    base_env: dict[str, str], tmp_path: Path, same: bool
) -> None:
    """Push A has checked that SEG is not archived and is copying it (its source is a pipe
    held open) when push B of the same name with other bytes completes. A then exits 1
    naming the conflict (or 0 when its bytes are identical); the archive keeps B's segment
    and B's sidecar."""
    first, second = b"A" * 65536, (b"A" if same else b"B") * 65536
    env = dict(os.environ)
    fifo = tmp_path / "server-a" / SEG
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    other = tmp_path / "server-b" / SEG
    other.parent.mkdir()
    other.write_bytes(second)
    archived = Path(base_env["BACKUP_DIR"]) / "wal" / SEG

    a = Child(cli_argv("wal-push", str(fifo)), env)
    try:
        fd = wait_for_reader(fifo)  # A is past its "not archived yet" check
        b = cli("wal-push", str(other), env=env)
        write_all(fd, first)
        result_a = a.finish()
    finally:
        a.kill()

    assert b.returncode == 0, b.stderr
    if same:
        assert result_a.returncode == 0, result_a.stderr
    else:
        assert result_a.returncode == 1, result_a.stderr
        assert_says(the_error(result_a), f"{archived} is already archived with different content")
    assert archived.read_bytes() == second
    digest = hashlib.md5(second).hexdigest()
    assert checksum.sidecar_path(archived).read_text() == f"{digest}  {SEG}\n"
    assert not list(archived.parent.glob(".*.tmp"))


def test_two_servers_pushing_one_wal_name_to_s3_never_overwrite(
    bucket_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Servers A and B (own BACKUP_DIRs, one bucket) push SEG with different bytes. A's PUT is
    held at the proxy after its HEAD found nothing; B's lands. Then A's PUT goes on: S3
    refuses it (If-None-Match: *), A exits 1 naming the conflict, the object keeps B's bytes."""
    bucket = os.environ["S3_BUCKET"]
    sources = {}
    for server, byte in (("a", b"A"), ("b", b"B")):
        path = tmp_path / f"pg_wal-{server}" / SEG
        path.parent.mkdir()
        path.write_bytes(byte * 65536)
        sources[server] = path
    env_a = {**os.environ, "BACKUP_DIR": str(tmp_path / "server-a")}
    env_b = {**os.environ, "BACKUP_DIR": str(tmp_path / "server-b")}
    bucket_proxy.add(Fault("hold", key_suffix=f"wal/{SEG}", method="PUT"))

    a = Child(cli_argv("wal-push", str(sources["a"])), env_a)
    try:
        assert bucket_proxy.stalled.wait(HANG_GUARD), "push A never sent its PUT"
        b = cli("wal-push", str(sources["b"]), env=env_b)
        bucket_proxy.release()
        result_a = a.finish()
    finally:
        bucket_proxy.release()
        a.kill()

    assert b.returncode == 0, b.stderr
    assert result_a.returncode == 1, result_a.stdout + result_a.stderr
    assert_says(
        the_error(result_a), f"s3://{bucket}/wal/{SEG} already exists with different content"
    )
    stored = boto3.client("s3").get_object(Bucket=bucket, Key=f"wal/{SEG}")["Body"].read()
    assert stored == sources["b"].read_bytes()
    assert AWS_SECRET not in result_a.stdout + result_a.stderr


# ---------------------------------------------------------------- modes


@pytest.fixture
def fresh_backup_dir(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    """A bucket, and BACKUP_DIR two levels below a folder that does not exist yet: the tool
    creates both."""
    backup_dir = tmp_path / "new" / "backups"
    monkeypatch.setenv("BACKUP_DIR", str(backup_dir))
    yield backup_dir


@pytest.mark.slow
def test_downloads_are_0600_in_folders_created_0700(fresh_backup_dir: Path, tmp_path: Path) -> None:
    """A logical backup (with its custom-format companion) and a folder base backup, only in
    S3, are downloaded by `verify`: every file 0600 (backup, .md5, .meta.json, companion,
    members), every folder the tool made 0700 (BACKUP_DIR, its missing parent, the base
    backup's folder)."""
    logical = make_backup(tmp_path / "made", GOOD_AT)
    companion = companion_path(logical)
    companion.write_bytes(b"PGDMP custom format stand-in")
    companion_md5 = hashlib.md5(companion.read_bytes()).hexdigest()
    checksum.write_sidecar(companion, companion_md5)
    # the companion is fetched only with the MD5 its backup's meta records (the verify gate)
    meta = read_meta(logical)
    assert meta is not None
    write_meta(logical, replace(meta, companion_md5=companion_md5))
    bucket = os.environ["S3_BUCKET"]
    upload(bucket, logical)
    upload(bucket, companion)
    base_name = backup_name("base", GOOD_AT)
    member = tmp_path / "made" / "base.tar.gz"
    member.write_bytes(gzip.compress(b"tar stand-in"))
    upload(bucket, member, key=f"{PREFIX}{base_name}/base.tar.gz")
    boto3.client("s3").put_object(
        Bucket=bucket,
        Key=f"{PREFIX}{base_name}/base.tar.gz.md5",
        Body=f"{hashlib.md5(member.read_bytes()).hexdigest()}  base.tar.gz\n".encode(),
    )

    for name in (logical.name, base_name):
        result = cli("verify", name)
        assert result.returncode == 0, result.stdout + result.stderr
    config = load_config(REPO / "runbook.yaml", env=os.environ)
    record = catalog.resolve_backup(config, f"s3://{bucket}/{PREFIX}{logical.name}")
    discard_download(fresh_backup_dir / logical.name)
    fetch_backup(config, record, with_companion=True)

    for folder in (fresh_backup_dir.parent, fresh_backup_dir, fresh_backup_dir / base_name):
        assert mode(folder) == 0o700, folder
    files = [p for p in fresh_backup_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        logical.name,
        logical.name + ".md5",
        logical.name + ".meta.json",
        companion.name,
        companion.name + ".md5",
        "base.tar.gz",
        "base.tar.gz.md5",
    }
    for path in files:
        assert mode(path) == 0o600, path


# ---------------------------------------------------------------- what is planted in BACKUP_DIR


def plant_hard_link(part: Path, victim: Path) -> None:
    os.link(victim, part)


def plant_foreign_file(part: Path, victim: Path) -> None:
    part.write_bytes(b"")
    os.chown(part, 65534, 65534)


def plant_fifo(part: Path, victim: Path) -> None:
    os.mkfifo(part)


def plant_writable_file(part: Path, victim: Path) -> None:
    part.write_bytes(b"")
    part.chmod(0o666)


@pytest.mark.parametrize(
    ("plant", "says"),
    [
        (plant_hard_link, "hard links"),
        (plant_foreign_file, "belongs to uid 65534"),
        (plant_fifo, "is not a regular file"),
        (plant_writable_file, "can be written by group or others"),
    ],
)
def test_a_planted_part_is_refused_and_touches_nothing(
    s3_bucket: str, tmp_path: Path, plant: Callable[[Path, Path], None], says: str
) -> None:
    """What sits at a download's `.part` name is resumed, chmodded, truncated and renamed
    into place as root only when it is this user's own regular file, with one link, that
    no one else can write: else the download is refused naming it, and the file it points
    at (a hard link's other name, outside BACKUP_DIR) keeps its bytes and mode."""
    if plant is plant_foreign_file and os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    logical = make_backup(tmp_path / "made", GOOD_AT)
    upload(s3_bucket, logical)
    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"important = 1\n" * 10)
    victim.chmod(0o664)
    backup_dir = Path(os.environ["BACKUP_DIR"])
    part = backup_dir / (logical.name + ".part")
    plant(part, victim)
    config = load_config(REPO / "runbook.yaml", env=os.environ)
    record = catalog.resolve_backup(config, logical.name)

    with pytest.raises(DrError) as refused:
        fetch_backup(config, record)

    assert_says(str(refused.value), str(part), says, f"rm {part}")
    assert victim.read_bytes() == b"important = 1\n" * 10 and mode(victim) == 0o664
    assert not (backup_dir / logical.name).exists()


def test_a_backup_dir_others_can_write_is_refused_before_any_download(
    s3_bucket: str, tmp_path: Path
) -> None:
    """Anyone who can write to BACKUP_DIR can swap a path there for a symbolic link between
    our check and our write: nothing is downloaded into it, and the fix is named."""
    logical = make_backup(tmp_path / "made", GOOD_AT)
    upload(s3_bucket, logical)
    backup_dir = Path(os.environ["BACKUP_DIR"])
    backup_dir.chmod(0o1777)
    config = load_config(REPO / "runbook.yaml", env=os.environ)
    record = catalog.resolve_backup(config, logical.name)

    with pytest.raises(DrError) as refused:
        fetch_backup(config, record)

    assert_says(str(refused.value), "can be written by group or others", f"chmod go-w {backup_dir}")
    assert list(backup_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["daily", "base"])
@pytest.mark.parametrize("how", ["group-writable", "foreign"])
def test_a_backup_into_a_backup_dir_others_control_is_refused(
    dr_env: dict[str, str], kind: str, how: str
) -> None:
    """`backup` writes as root into BACKUP_DIR: one its group or others can write, or that
    belongs to another user (wal-push running as postgres once made it), is refused before
    anything is written there, naming the fix."""
    from preskool_dr.core.backup.take import run_backup

    backup_dir = Path(dr_env["BACKUP_DIR"])
    if how == "foreign":
        if os.geteuid() != 0:
            pytest.skip("needs root to give a folder to another user")
        os.chown(backup_dir, 65534, 65534)
        fix = "chown"
    else:
        backup_dir.chmod(0o770)
        fix = f"chmod go-w {backup_dir}"
    config = load_config(REPO / "runbook.yaml", env=os.environ)

    with pytest.raises(DrError) as refused:
        run_backup(config, kind, upload=False)

    assert_says(str(refused.value), "BACKUP_DIR", str(backup_dir), "nothing was saved", fix)
    assert list(backup_dir.iterdir()) == []


def base_in_bucket(bucket: str, members: dict[str, bytes]) -> str:
    name = backup_name("base", GOOD_AT)
    for member, data in members.items():
        boto3.client("s3").put_object(Bucket=bucket, Key=f"{PREFIX}{name}/{member}", Body=data)
    return name


def test_a_folder_member_named_like_a_part_makes_the_backup_bad(
    s3_bucket: str, tmp_path: Path
) -> None:
    """`base.tar.gz.part` beside `base.tar.gz` in a base backup's folder would be resumed as
    `base.tar.gz` by the next download: the backup is refused, nothing written."""
    name = base_in_bucket(s3_bucket, {"base.tar.gz": b"REAL", "base.tar.gz.part": b"EVIL"})
    config = load_config(REPO / "runbook.yaml", env=os.environ)

    with pytest.raises(DrError) as refused:
        fetch_backup(config, f"s3://{s3_bucket}/{PREFIX}{name}")

    assert_says(str(refused.value), "base.tar.gz.part", "nothing was downloaded")
    assert list(Path(os.environ["BACKUP_DIR"]).iterdir()) == []


def test_a_folder_someone_else_made_for_a_base_backup_is_refused(
    s3_bucket: str, tmp_path: Path
) -> None:
    """The base backup's folder already exists, made by another user (who could swap its
    subfolders for symbolic links while the download runs): refused, nothing written."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    name = base_in_bucket(s3_bucket, {"base.tar.gz": b"REAL", "wal/0001": b"WAL"})
    planted = Path(os.environ["BACKUP_DIR"]) / name
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    config = load_config(REPO / "runbook.yaml", env=os.environ)

    with pytest.raises(DrError) as refused:
        fetch_backup(config, f"s3://{s3_bucket}/{PREFIX}{name}")

    assert_says(str(refused.value), str(planted), "(uid 65534)", "nothing was downloaded")
    assert list(planted.iterdir()) == []


def test_sidecars_and_metas_are_read_small_and_never_kept_stale(
    s3_bucket: str, tmp_path: Path
) -> None:
    """A sidecar of 3 MiB in the bucket: at most META_MAX_BYTES + 1 bytes of it are read and
    written, and step 4's check refuses it by its size. A meta the bucket does not have
    is not taken from an old local copy."""
    logical = make_backup(tmp_path / "made", GOOD_AT)
    upload(s3_bucket, logical)
    client = boto3.client("s3")
    client.put_object(Bucket=s3_bucket, Key=PREFIX + logical.name + ".md5", Body=b"0" * (3 << 20))
    client.delete_object(Bucket=s3_bucket, Key=PREFIX + logical.name + ".meta.json")
    backup_dir = Path(os.environ["BACKUP_DIR"])
    stale = meta_path(backup_dir / logical.name)
    stale.write_bytes(meta_path(logical).read_bytes())
    config = load_config(REPO / "runbook.yaml", env=os.environ)
    record = catalog.resolve_backup(config, logical.name)

    path = fetch_backup(config, record)

    assert checksum.sidecar_path(path).stat().st_size == META_MAX_BYTES + 1
    assert not stale.exists()
    expected, problem = checksum.expected_md5(path)
    assert expected is None and problem


def test_check_warns_about_a_backup_dir_others_can_enter(base_env: dict[str, str]) -> None:
    """A BACKUP_DIR with o+r or o+x, or g+w: `check` exits 1 (WARNING) with one line naming
    the folder and `chmod 700 DIR`; made private again, the warning is gone."""
    check_env = Path(base_env["BACKUP_DIR"])
    fabricate(check_env, hours=2)
    restore_test_passed(Path(base_env["PRESKOOL_DR_STATE_DIR"]))
    for open_mode in (0o755, 0o711, 0o770):
        check_env.chmod(open_mode)
        result = cli("check")
        assert result.returncode == 1, result.stdout
        line = check_line(result.stdout.splitlines(), "backup_dir_permissions")
        assert_says(line, "WARNING", str(check_env), f"chmod 700 {check_env}")
        assert ("refuse to download" in line) == (open_mode == 0o770), line
    if os.geteuid() == 0:  # another user's folder, however private
        os.chown(check_env, 65534, 65534)
        check_env.chmod(0o700)
        line = check_line(cli("check").stdout.splitlines(), "backup_dir_permissions")
        assert_says(line, "WARNING", "belongs to uid 65534", f"chown 0 {check_env}")
        os.chown(check_env, 0, 0)
    check_env.chmod(0o700)
    result = cli("check")
    assert result.returncode == 0, result.stdout
    assert "backup_dir_permissions" not in result.stdout


def test_check_fix_keeps_the_wal_archive_reachable(base_env: dict[str, str]) -> None:
    """With a WAL archive inside owned by the server's OS user, the fix `check` gives keeps
    that user able to enter BACKUP_DIR: group postgres and 0750, not 0700."""
    check_env = Path(base_env["BACKUP_DIR"])
    if os.geteuid() != 0:
        pytest.skip("needs root to give the WAL archive to another user")
    try:
        server = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres OS user")
    fabricate(check_env, hours=2)
    wal = check_env / "wal"
    wal.mkdir(mode=0o750)
    os.chown(wal, server.pw_uid, server.pw_gid)
    check_env.chmod(0o755)
    result = cli("check")
    line = check_line(result.stdout.splitlines(), "backup_dir_permissions")
    assert_says(line, "WARNING", "&& chmod 750", str(check_env))
    assert "chmod 700" not in line
