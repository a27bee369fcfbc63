"""S3: wrong credentials, a missing bucket or object, throttling and 5xx, a connection reset
half way, archived objects, an unreachable endpoint.

Guarantee: every S3 failure is one line naming the bucket/key, what S3 said and what to do
(exit 1; a missing bucket or object is exit 2 like any missing backup; an object in GLACIER
or DEEP_ARCHIVE is exit 3 from `verify` and exit 1 from `restore`, before any downtime, both
saying it is archived and giving the restore request to make: `verify --request-restore` or
`g` in the TUI's backup list). Throttling and 5xx answers are retried; a connection that
breaks half way through a download is resumed with an HTTP Range request in the same run. A
restore whose backup cannot be fetched fails before the application is taken offline; with
S3 down, local backups still restore.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from preskool_dr.core.backup.take import run_backup
from preskool_dr.core.base.events import StepStatus
from preskool_dr.core.base.ports import free_port
from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import companion_path, meta_path
from preskool_dr.core.storage.meta import read_meta, write_meta
from preskool_dr.core.storage.s3store import S3Store
from tests.support.backups import s3_only_backup, s3_store
from tests.support.checks import assert_no_partial_backups, assert_says, the_error, wait_for_size
from tests.support.moto import moto_checks_credentials
from tests.support.s3proxy import Fault, FaultProxy
from tests.support.site import Site

GZ = ".sql.gz"  # the faults hit the backup object, not its sidecar or meta


def s3_url(site: Site, name: str) -> str:
    config = site.config()
    return f"s3://{config.backups.s3_bucket}/{config.backups.s3_prefix}{name}"


def untouched(site: Site, before: str, result: subprocess.CompletedProcess[str]) -> None:
    assert site.calls() == []
    assert site.checksum() == before
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_wrong_credentials_are_one_line(site: Site, s3: str) -> None:
    """403 (wrong keys): list, verify and restore each print one line naming the bucket and
    AWS_ACCESS_KEY_ID; exit 1; nothing is restored."""
    backup = s3_only_backup(site)
    before = site.checksum()
    with moto_checks_credentials():
        listed = site.cli("list", "--source", "s3")
        verified = site.cli("verify", backup.name)
        restored = site.restore(backup.name)
    for result in (listed, verified, restored):
        assert result.returncode == 1, result.stdout + result.stderr
        line = the_error(result)
        assert_says(
            line, "preskool-dr: error:", "S3 denied access", f"s3://{s3}", "AWS_ACCESS_KEY_ID"
        )
    untouched(site, before, restored)
    site.assert_no_leak(listed, verified, restored)


def test_missing_bucket_is_exit_2(site: Site, s3: str) -> None:
    """A bucket that does not exist: exit 2, naming the bucket and S3_BUCKET."""
    backup = s3_only_backup(site)
    env = site.env(S3_BUCKET="preskool-no-such-bucket")
    listed = site.cli("list", "--source", "s3", env=env)
    url = f"s3://preskool-no-such-bucket/preskool-backups/{backup.name}"
    verified = site.cli("verify", url, env=env)
    for result in (listed, verified):
        assert result.returncode == 2, result.stdout + result.stderr
        assert_says(
            the_error(result), "bucket 'preskool-no-such-bucket' does not exist", "S3_BUCKET"
        )
    site.assert_no_leak(listed, verified)


@pytest.mark.slow
def test_missing_object_is_exit_2(site: Site, s3: str) -> None:
    """An object that does not exist: verify and restore exit 2 and point at `list`; no run
    is created."""
    before = site.checksum()
    url = s3_url(site, "preskool-backup-20200101_000000.sql.gz")
    verified = site.cli("verify", url)
    restored = site.cli("restore", url, "--confirm", site.db.name)
    for result in (verified, restored):
        assert result.returncode == 2, result.stdout + result.stderr
        assert_says(the_error(result), f"{url} does not exist", "preskool-dr list --source s3")
    untouched(site, before, restored)
    assert not (site.state_dir / "runs").exists()
    site.assert_no_leak(verified, restored)


@pytest.mark.parametrize(
    "faults",
    [
        [Fault("error", GZ, method="HEAD", code="SlowDown"), Fault("error", GZ, times=2)],
        [Fault("error", GZ, status=500, code="InternalError", times=2)],
        [Fault("delay", GZ, method="HEAD", seconds=2), Fault("delay", GZ, seconds=3)],
    ],
    ids=["slowdown-503", "internal-error-500", "slow-answers"],
)
@pytest.mark.slow
def test_throttling_and_5xx_are_retried(
    site: Site, s3_proxy: FaultProxy, faults: list[Fault]
) -> None:
    """Throttling (503 SlowDown), a passing 500 and slow answers: retried, the restore
    completes."""
    backup = s3_only_backup(site)
    for fault in faults:
        s3_proxy.add(fault)
    result = site.restore(backup.name)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = [seen.status for seen in s3_proxy.seen if seen.key.endswith(backup.name)]
    injected = [f.status for f in faults if f.action == "error"]
    assert all(status in statuses for status in injected)
    assert_no_partial_backups(site.backup_dir)
    site.assert_no_leak(result)


@pytest.mark.slow
def test_persistent_5xx_fails_before_downtime(site: Site, s3_proxy: FaultProxy) -> None:
    """S3 answering 500 to every download: step 3 fails after the retries with one line
    (code, wait and retry); no .part, the app still up, production untouched."""
    backup = s3_only_backup(site)
    before = site.checksum()
    s3_proxy.add(Fault("error", backup.name, status=500, code="InternalError", times=-1))
    result = site.restore(backup.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_says(
        the_error(result),
        "[FAIL]  Download from S3 failed:",
        "S3 kept failing after retries (InternalError",
        "run the command again",
    )
    assert len(s3_proxy.gets(backup.name)) > 1  # it did retry
    assert "has not been touched" in result.stdout
    untouched(site, before, result)
    assert not list(site.backup_dir.glob("*.part"))
    site.assert_no_leak(result)


@pytest.mark.slow
def test_a_download_that_fails_after_the_companion_drops_the_load_it_began(
    site: Site, s3_proxy: FaultProxy
) -> None:
    """The companion comes down first and its load starts in step 3; the .sql.gz then keeps
    failing: step 3 fails, the load is stopped and its database dropped, nothing else is
    touched. The companion stays (it has its recorded MD5), so the next run does not fetch
    it again, and removes a `.part` of it left beside it."""
    backup = run_backup(site.config(), "daily", custom=True).path
    companion = companion_path(backup)
    for path in backup.parent.iterdir():
        path.unlink()
    at_backup = site.checksum()
    site.change_data()
    before = site.checksum()
    s3_proxy.add(Fault("error", backup.name, status=500, code="InternalError", times=-1))

    result = site.restore(backup.name)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "step 6's load starts now" in result.stdout
    assert "S3 kept failing after retries (InternalError" in result.stdout
    assert "has not been touched" in result.stdout
    untouched(site, before, result)
    assert site.loading_databases() == []
    state = site.the_run()
    assert state.step("download").status is StepStatus.FAILED and state.load is None
    assert not (site.state_dir / "load" / f"{state.run_id}-early").exists()
    assert companion.is_file()
    fetched = len(s3_proxy.gets(companion.name))
    stale = companion.with_name(companion.name + ".part")  # a download of it left behind
    stale.write_bytes(b"PGDMP")

    s3_proxy.faults.clear()
    again = site.restore(backup.name)

    assert again.returncode == 0, again.stdout + again.stderr
    assert len(s3_proxy.gets(companion.name)) == fetched
    assert not stale.exists()
    assert site.checksum() == at_backup


def test_a_companion_step_4_refuses_sends_it_back_to_the_whole_sql_gz(site: Site, s3: str) -> None:
    """The companion has the MD5 its meta records, so its load starts and the .sql.gz is
    only hashed on its way down; but pg_restore cannot read it, so step 4 refuses it and
    reads the .sql.gz whole (gzip and content) before step 6 loads that file instead."""
    backup = run_backup(site.config(), "daily", custom=True).path
    counts = site.db.row_counts()
    companion = companion_path(backup)
    companion.write_bytes(b"PGDMP, but not an archive pg_restore can read")
    bogus = checksum.verify_file(companion, None).actual_md5
    checksum.write_sidecar(companion, bogus)
    meta = read_meta(backup)
    assert meta is not None
    write_meta(backup, dataclasses.replace(meta, companion_md5=bogus))
    store = s3_store(site.config())
    for path in (companion, checksum.sidecar_path(companion), meta_path(backup)):
        store.upload(path)
    for path in backup.parent.iterdir():
        path.unlink()
    site.change_data()

    result = site.restore(backup.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 6's load starts now" in result.stdout
    assert "pg_restore cannot read" in result.stdout
    assert "not read again" not in result.stdout
    state = site.the_run()
    assert state.verify is not None and state.verify.skipped is None
    assert state.load is not None and state.load.loader != "pg_restore"
    restored = site.db.row_counts()
    restored.pop("alembic_version")
    assert restored == counts


@pytest.mark.slow
@pytest.mark.parametrize("how", ["reset", "cut"])
@pytest.mark.slow
def test_connection_broken_half_way_is_resumed_with_range(
    site: Site, s3_proxy: FaultProxy, how: str
) -> None:
    """The connection is reset (RST) or closed half way through the download: the same run
    resumes with an HTTP Range request from what it has, verifies and restores."""
    backup = s3_only_backup(site)
    half = (1 << 20) + 4096
    if how == "reset":
        s3_proxy.add(Fault("stall", backup.name, after_bytes=half))
        child = site.start("restore", backup.name, "--confirm", site.db.name)
        wait_for_size(site.backup_dir / (backup.name + ".part"), 1 << 20)
        s3_proxy.release(reset=True)
        result = child.finish()
    else:
        s3_proxy.add(Fault("cut", backup.name, after_bytes=half))
        result = site.restore(backup.name)
    assert result.returncode == 0, result.stdout + result.stderr
    ranges = [seen.range for seen in s3_proxy.gets(backup.name)]
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1].startswith("bytes=")
    assert int(ranges[-1].removeprefix("bytes=").rstrip("-")) >= 1 << 20
    assert_no_partial_backups(site.backup_dir)
    site.assert_no_leak(result)


@pytest.mark.slow
@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
@pytest.mark.slow
def test_archived_backup_says_how_to_get_it(site: Site, s3: str, storage_class: str) -> None:
    """An object in GLACIER/DEEP_ARCHIVE: verify exits 3 with the restore request to make,
    restore fails at step 3 before downtime; after the request the backup verifies."""
    path = site.backup()
    config = site.config()
    store = S3Store(s3, config.backups.s3_prefix)
    store.upload(checksum.sidecar_path(path))
    store.upload(meta_path(path))
    store.upload(path, storage_class=storage_class)
    for member in (checksum.sidecar_path(path), meta_path(path), path):
        member.unlink()
    before = site.checksum()

    verified = site.cli("verify", path.name)
    restored = site.restore(path.name)

    assert verified.returncode == 3, verified.stdout + verified.stderr
    assert_says(the_error(verified), storage_class, "--request-restore", "not restored yet")
    assert restored.returncode == 1, restored.stdout + restored.stderr
    assert_says(
        the_error(restored),
        "[FAIL]  Download from S3 failed:",
        f"is in {storage_class} and not restored yet",
        f"preskool-dr verify {s3_url(site, path.name)} --request-restore",
        "`g` on it in the TUI",
    )
    untouched(site, before, restored)
    requested = site.cli("verify", path.name, "--request-restore")
    assert requested.returncode == 3 and "restore requested" in requested.stdout
    again = site.cli("verify", path.name)  # moto completes restores at once
    assert again.returncode == 0, again.stdout + again.stderr
    site.assert_no_leak(verified, restored, requested, again)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("list-s3", marks=pytest.mark.slow),
        "verify-s3",
        pytest.param("restore-local", marks=pytest.mark.slow),
    ],
)
def test_unreachable_endpoint(site: Site, s3: str, command: str) -> None:
    """The S3 endpoint is unreachable (a closed port): S3 commands fail with one line naming
    AWS_ENDPOINT_URL; a local backup still restores."""
    local = site.backup()
    env = site.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    runs: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
        "list-s3": lambda: site.cli("list", "--source", "s3", env=env),
        "verify-s3": lambda: site.cli("verify", s3_url(site, local.name), env=env),
        "restore-local": lambda: site.cli("restore", "latest", "--confirm", site.db.name, env=env),
    }
    result = runs[command]()
    if command == "restore-local":
        assert result.returncode == 0, result.stdout + result.stderr
        assert local.name in result.stdout
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert_says(the_error(result), "cannot reach the S3 endpoint", "AWS_ENDPOINT_URL")
    site.assert_no_leak(result)


def test_proxy_passes_a_clean_download(site: Site, s3_proxy: FaultProxy) -> None:
    """Control case: through the proxy without faults, one GET without Range."""
    backup = s3_only_backup(site)
    result = site.cli("verify", backup.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [seen.range for seen in s3_proxy.gets(backup.name)] == [None]
    assert boto3.client("s3").head_bucket(Bucket=site.config().backups.s3_bucket)
    assert Path(site.backup_dir / backup.name).is_file()


def test_an_s3_restore_looks_its_backup_up_once(site: Site, s3_proxy: FaultProxy) -> None:
    """Every request to S3 is a round trip before the load can start (tens of ms each
    against a real bucket). `restore NAME` looks the backup up once (the CLI's check, which
    step 2 takes), step 3 once more as it fetches (that lookup decides: missing, archived,
    unsafe names; the space check and the downloads take its answers), then the downloads:
    12 requests in all, where there were 23."""
    backup = run_backup(site.config(), "daily", custom=True).path
    for path in backup.parent.iterdir():
        path.unlink()
    s3_proxy.seen.clear()

    result = site.restore(backup.name)

    assert result.returncode == 0, result.stdout + result.stderr
    stem = backup.name.removesuffix(".sql.gz")
    seen = [(s.method, s.key.rsplit("/", 1)[-1].removeprefix(stem)) for s in s3_proxy.seen]
    lookup = [("HEAD", GZ), ("HEAD", GZ + ".md5"), ("HEAD", ".dump"), ("GET", GZ + ".meta.json")]
    assert seen[:4] == lookup  # the CLI's lookup, taken by step 2
    assert seen[4:7] == lookup[:3]  # step 3's
    assert seen.count(("GET", GZ)) == 1 and seen.count(("GET", ".dump")) == 1
    assert seen[7:] == [
        ("GET", GZ + ".md5"),
        ("GET", GZ + ".meta.json"),
        ("GET", ".dump.md5"),
        ("GET", ".dump"),
        ("GET", GZ),
    ]
    # the companion loads: the .sql.gz was hashed on its way down, not inflated, and step 4
    # took that hash instead of reading the file again
    assert "(checked while step 3 downloaded it: not read again)" in result.stdout
    verify = site.the_run().verify
    assert verify is not None and verify.md5_ok
    assert verify.skipped and verify.skipped.startswith(f"step 6 loads {stem}.dump")
