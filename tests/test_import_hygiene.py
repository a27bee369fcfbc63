"""The core is reachable without the TUI: importing any core module (or a headless CLI
command) must not import textual. Each import runs in a fresh interpreter. And no module
imports itself back through others (the layers are enforced by import-linter, `make lint`)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import grimp
import pytest

import preskool_dr.core

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(preskool_dr.core.__path__, "preskool_dr.core.")
    if not m.ispkg
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
    assert {"preskool_dr.core.restore.engine", "preskool_dr.core.restore.journal"} <= set(
        CORE_MODULES
    )


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


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports (lazy imports inside functions count)."""
    graph = grimp.build_graph("preskool_dr")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert cycles == []
