"""The core is reachable without the TUI: importing any core module (or a headless CLI
command) must not import textual. Each import runs in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import preskool_dr.core

CORE_MODULES = sorted(
    f"preskool_dr.core.{m.name}" for m in pkgutil.iter_modules(preskool_dr.core.__path__)
)
HEADLESS = ["preskool_dr.cli.main", "preskool_dr.cli.tui_cmd"]

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
ui = sorted(m for m in sys.modules if m == "textual" or m.startswith(("textual.", "preskool_dr.tui")))
print(",".join(ui))
"""


@pytest.mark.parametrize("module", CORE_MODULES + HEADLESS)
def test_imports_without_textual(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} pulls in {result.stdout.strip()}"


def test_the_list_is_not_empty() -> None:
    assert {"preskool_dr.core.engine", "preskool_dr.core.journal"} <= set(CORE_MODULES)


def test_the_check_sees_textual_when_it_is_imported() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, "preskool_dr.tui.app"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "textual" in result.stdout.split(",")


def test_building_the_cli_does_not_import_the_tui() -> None:
    """Every command module is imported to build --help; only `tui` may load Textual, later."""
    code = (
        "import sys; from preskool_dr.cli.main import build_parser; build_parser(); "
        "print(any(m == 'textual' or m.startswith('textual.') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
