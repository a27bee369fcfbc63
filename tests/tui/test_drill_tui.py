"""The quarterly drill from the TUI: the DRILL banner, production untouched, sign-off with a
real ssh-keygen key, an entry stock OpenSSH verifies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from preskool_dr.core.base.events import StepStatus
from preskool_dr.tui.app import DrApp
from preskool_dr.tui.screens.confirm_name import ConfirmNameScreen
from preskool_dr.tui.screens.sign_off import SignOffScreen
from tests.support.signing import assert_openssh_verifies, make_signing_key
from tests.support.site import Site
from tests.support.tui import run_selected, screen_text, start_run, status, wait_for


def drill_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> tuple[Site, str]:
    """The site's runbook with drill.target_db and drill-only app commands (migrate, health)."""
    data = yaml.safe_load(site.runbook.read_text())
    drill_db = f"{site.db.name}_drill"
    data["drill"] = {
        "target_db": drill_db,
        "app": {"migrate": data["app"]["migrate"], "health_url": data["app"]["health_url"]},
    }
    site.runbook.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("PRESKOOL_DR_RUNBOOK", str(site.runbook))
    return site, drill_db


@pytest.mark.slow
def test_drill_end_to_end_with_sign_off(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asyncio.run(drive_drill(site, monkeypatch, tmp_path))


async def drive_drill(site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    site, drill_db = drill_site(site, monkeypatch)
    site.backup()
    production = site.db.row_counts()
    key, allowed = make_signing_key(tmp_path, "ops-lead")
    log = tmp_path / "drill-log.jsonl"
    app = DrApp(site.config(), drill=True, operator="oncall", sign_key=key, drill_log=log)

    async with app.run_test(size=(80, 24)) as pilot:
        await start_run(pilot)
        assert "[DRILL]" in screen_text(pilot)
        for step_id in ("download", "verify"):
            await run_selected(pilot, step_id)
        # step 1 skips itself in a drill: production's app is never stopped
        await wait_for(pilot, lambda: app.checklist.selected_id == "app_offline", "step 1")
        await pilot.press("r")
        await wait_for(
            pilot, lambda: status(app, "app_offline") is StepStatus.SKIPPED, "step 1 skipped"
        )
        await wait_for(pilot, lambda: app.checklist.selected_id == "recreate_db", "step 5")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmNameScreen), "confirmation")
        await pilot.press(*drill_db, "enter")
        await wait_for(
            pilot,
            lambda: status(app, "recreate_db") is StepStatus.DONE and not app.engine_busy(),
            "drill database recreated",
        )
        await run_selected(pilot, "restore")
        await run_selected(pilot, "migrate")
        await wait_for(pilot, lambda: app.checklist.selected_id == "app_online", "step 8")
        await pilot.press("r")
        await wait_for(
            pilot, lambda: status(app, "app_online") is StepStatus.SKIPPED, "step 8 skipped"
        )
        await run_selected(pilot, "health")
        # the run is done: the sign-off shows the entry and asks who signs
        await wait_for(pilot, lambda: isinstance(app.screen, SignOffScreen), "sign-off")
        text = screen_text(pilot)
        assert "RTO" in text and "RPO" in text and "PASS" in text
        name_box = app.screen.query_one("#sign-off-name")
        name_box.value = ""  # type: ignore[attr-defined]
        await pilot.press(*"ops-lead", "enter")
        await wait_for(pilot, lambda: log.exists() and log.stat().st_size > 0, "entry appended")
        assert "[DRILL]" in screen_text(pilot)

    assert site.db.row_counts() == production  # production untouched
    assert not any(c.startswith(("stop", "start")) for c in site.calls())
    entry = json.loads(log.read_text())
    assert entry["performed_by"] == "ops-lead" and entry["result"] == "pass"
    assert entry["target"].startswith(drill_db)
    assert_openssh_verifies(entry, allowed, "ops-lead", tmp_path)
