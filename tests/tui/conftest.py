"""TUI fixtures: the site with recording app commands, a variant whose step 1 runs until it
is stopped, and a steady Input cursor for snapshots. Driving helpers: tests/support/tui.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.support.site import SLOW, Site
from tests.support.tui import Frozen, frozen_site


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stable snapshots: the Input cursor stays drawn."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


@pytest.fixture
def site_app() -> str:
    """The TUI tests' site records its app calls with the target database (`stop t_1a2b`),
    and its migrate adds no table: restored and aside copies compare equal."""
    return "recording"


@pytest.fixture
def slow_site(site: Site) -> Site:
    """The same site, but app.stop (step 1) runs until it is stopped."""
    site.set_app(stop=[sys.executable, "-c", SLOW])
    return site


@pytest.fixture
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Frozen:
    """A site only on disk (three fixed backups, no database), in a clean environment."""
    for var in list(os.environ):
        if var.startswith(("AWS_", "PG", "DB_", "PRESKOOL_DR_")) or var == "S3_BUCKET":
            monkeypatch.delenv(var, raising=False)
    site = frozen_site(tmp_path)
    for key, value in site.env().items():
        monkeypatch.setenv(key, value)
    return site
