"""The backup browser: newest first, filter, sort, S3-only backups, Glacier rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import boto3
import pytest
from textual.widgets import DataTable

from preskool_dr.core.base.events import StepStatus
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.messages import EngineProgress
from preskool_dr.tui.widgets.backup_browser import SORT_KEYS
from preskool_dr.tui.widgets.restore_panel import RestorePanel
from tests.support.site import Site
from tests.support.tui import log_text, run_selected, screen_text, status, wait_for

DAYS = [
    (datetime(2026, 2, 18, 2, 0, tzinfo=UTC), "daily"),
    (datetime(2026, 2, 19, 1, 0, tzinfo=UTC), "weekly"),
    (datetime(2026, 2, 20, 2, 0, tzinfo=UTC), "daily"),
]


def names(app: DrApp) -> list[str]:
    table: DataTable[object] = app.browser.table
    return [str(key.value) for key in table.rows]


async def browse(app: DrApp) -> None:
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")  # incident declared now
        await wait_for(pilot, lambda: app.browser.table.row_count == 3, "three backups listed")
        assert app.query_one("#switcher").current == "backups"  # type: ignore[attr-defined]
        assert names(app)[0] == "preskool-backup-20260220_020000.sql.gz"  # newest first
        text = screen_text(pilot)
        assert "weekly" in text and "local" in text and "Storage" in text  # 120 columns
        await pilot.press("slash", *"weekly")
        await wait_for(pilot, lambda: app.browser.table.row_count == 1, "filtered to one")
        assert names(app) == ["preskool-backup-20260219_010000.sql.gz"]
        await pilot.press("enter")  # back to the table, filter kept
        assert app.focused is app.browser.table
        await pilot.press("escape")  # clears the filter
        await wait_for(pilot, lambda: app.browser.table.row_count == 3, "filter cleared")
        await pilot.press("slash", *"no such backup")
        await wait_for(pilot, lambda: app.browser.table.row_count == 0, "nothing matches")
        assert "No backup matches the filter" in screen_text(pilot)
        await pilot.press("escape")
        # sort by clicking a column header: oldest first on "Time", then by kind
        table = app.browser.table

        def header_x(label: str) -> int:
            columns = list(table.columns.values())
            at = [str(c.key.value) for c in columns].index(label)
            return sum(c.get_render_width(table) for c in columns[:at]) + 1

        await pilot.click(table, offset=(header_x("Time (UTC)"), 0))
        await wait_for(
            pilot, lambda: names(app)[0] == "preskool-backup-20260218_020000.sql.gz", "oldest first"
        )
        await pilot.click(table, offset=(header_x("Kind"), 0))
        await wait_for(pilot, lambda: app.browser.sort_column == "Kind", "sorted by kind")
        assert [SORT_KEYS["Kind"](r) for r in app.browser.visible_records()] == [
            "daily",
            "daily",
            "weekly",
        ]
        await pilot.press("o")  # the key sorts by the next column
        assert app.browser.sort_column == "Size"
        # choose the weekly one (not the newest): the run restores what was chosen
        await pilot.press("escape")
        table.move_cursor(row=table.get_row_index("preskool-backup-20260219_010000.sql.gz"))
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: app.engine is not None and status(app, "identify") is StepStatus.DONE,
            "weekly backup identified",
        )
        assert app.engine is not None and app.engine.state.backup is not None
        assert app.engine.state.backup.name == "preskool-backup-20260219_010000.sql.gz"
        assert "RPO " in screen_text(pilot)


@pytest.mark.slow
def test_browse_filter_sort_and_choose(site: Site) -> None:
    for at, kind in DAYS:
        site.backup(at=at, kind=kind)
    app = DrApp(site.config())
    asyncio.run(browse(app))


async def download_from_s3(app: DrApp, messages: list[object]) -> None:
    async with app.run_test(size=(80, 24), message_hook=messages.append) as pilot:
        await wait_for(pilot, lambda: app.screen.id != "_default", "incident prompt")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.browser.table.row_count == 2, "two S3 backups")
        await pilot.pause()
        assert "s3 · STANDARD\nEnter chooses it" in str(
            app.browser.query_one("#backup-detail").render()
        )
        # the archived one is marked and cannot be chosen; g asks S3 for a restore
        table = app.browser.table
        table.move_cursor(row=table.get_row_index("preskool-backup-20260101_020000.sql.gz"))
        await pilot.pause()
        text = screen_text(pilot)
        assert "s3 · GLACIER" in text and "archived, not downloadable yet: g restores" in text
        assert app.browser.check_action("request_restore", ())  # g is in the footer here
        await pilot.press("enter")
        await pilot.pause()
        assert app.engine is None  # refused: not directly downloadable
        await pilot.press("g")
        await wait_for(
            pilot,
            lambda: "[s3] " in log_text(app),  # the answer is information: the log has it
            "Glacier restore requested",
        )
        # the standard one downloads with progress, then verifies
        table.move_cursor(row=0)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: app.engine is not None and status(app, "identify") is StepStatus.DONE,
            "identified",
        )
        await run_selected(pilot, "download")
        await wait_for(pilot, lambda: app.query_one(RestorePanel).last is not None, "progress")
        assert "Download preskool-backup-" in str(app.query_one("#restore-title").render())
        await run_selected(pilot, "verify")


@pytest.mark.slow
def test_s3_only_backup_downloads_and_glacier_is_marked(site: Site, s3: str) -> None:
    path = site.backup(at=datetime(2026, 2, 20, 2, 0, tzinfo=UTC), upload=True)
    client = boto3.client("s3")
    archived = "preskool-backup-20260101_020000.sql.gz"
    for suffix in ("", ".md5"):
        source = path.with_name(path.name + suffix).read_bytes()
        if suffix == ".md5":
            source = source.replace(path.name.encode(), archived.encode())
        client.put_object(
            Bucket=s3,
            Key=f"preskool-backups/{archived}{suffix}",
            Body=source,
            StorageClass="GLACIER",
        )
    for local in path.parent.iterdir():  # S3 only from here on
        local.unlink()
    app = DrApp(site.config())
    messages: list[object] = []
    asyncio.run(download_from_s3(app, messages))
    downloads = [
        m.progress
        for m in messages
        if isinstance(m, EngineProgress) and m.progress.phase == "download"
    ]
    assert downloads and downloads[-1].done == downloads[-1].total
    assert path.exists()  # fetched back into BACKUP_DIR


def test_the_browser_shows_the_object_lock_and_its_date() -> None:
    """Issue 19: the browser's storage column says `locked MODE to DATE` while it holds."""
    from dataclasses import replace
    from datetime import timedelta

    from preskool_dr.core.storage.catalog import BackupRecord
    from preskool_dr.tui.widgets.backup_browser import lock_text, storage_text

    now = datetime.now(UTC)
    record = BackupRecord(
        name="preskool-backup-20260220_020000.sql.gz.age",
        kind="daily",
        time=now,
        size=1,
        local_path=None,
        s3_url="s3://b/p/preskool-backup-20260220_020000.sql.gz.age",
        storage_class="STANDARD",
        restore_state=None,
        has_md5=True,
    )
    assert storage_text(record) == "STANDARD" and lock_text(record) == ""
    until = now + timedelta(days=30)
    locked = replace(record, lock_mode="COMPLIANCE", lock_until=until)
    assert storage_text(locked) == f"STANDARD (locked COMPLIANCE to {until:%Y-%m-%d})"
    expired = replace(locked, lock_until=now - timedelta(days=1))
    assert lock_text(expired) == ""


async def list_with_s3_down(app: DrApp) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("enter")  # incident declared now
        await wait_for(pilot, lambda: "No backups listed" in screen_text(pilot), "the note")
        text = screen_text(pilot)
        assert "No backups found" not in text  # S3 was never listed: not "none there"
        await wait_for(pilot, lambda: "cannot" in log_text(app), "why, in the log")


def test_an_unreachable_bucket_is_not_an_empty_one(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No local backups and the S3 endpoint down: the browser says the backups could not all
    be listed (not "none found"), where to read why, and the log holds the reason."""
    from preskool_dr.core.base.ports import free_port

    monkeypatch.setenv("S3_BUCKET", "preskool-nowhere")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    asyncio.run(list_with_s3_down(DrApp(site.config())))
