"""The core is reachable without the TUI: importing any core module (or a headless CLI
command) must not import textual. Each import runs in a fresh interpreter. And no module
imports itself back through others (the layers are enforced by import-linter, `make lint`)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from typing import Any

import grimp
import pytest

import preskool_dr.core

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(preskool_dr.core.__path__, "preskool_dr.core.")
    if not m.ispkg
)
HEADLESS = ["preskool_dr.cli.main", "preskool_dr.cli.tui_cmd"]

# One interpreter that has imported nothing of ours forks a child per module: each child
# starts from that clean state (as a fresh interpreter would), imports the module and
# reports the TUI modules it pulled in (anything in sys.modules counts, inherited or not, so
# a pre-imported library can only add findings). One start-up instead of one per module.
CHECK = """
import importlib, json, os, sys
for heavy in ("boto3", "psycopg"):  # not ours and never textual: shared, not re-imported
    importlib.import_module(heavy)
results = {}
for name in sys.argv[1:]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            importlib.import_module(name)
            ui = sorted(
                m for m in sys.modules
                if m == "textual" or m.startswith(("textual.", "preskool_dr.tui"))
            )
            report = [0, ",".join(ui)]
        except BaseException as exc:
            report = [1, f"{type(exc).__name__}: {exc}"]
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    results[name] = json.loads(data) if data else [1, "the child died without a report"]
print(json.dumps(results))
"""


def ui_modules_pulled_in(*modules: str) -> dict[str, list[Any]]:
    """{module: [0, "textual,..."]} per module, or [1, error] when its import failed."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *modules], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, list[Any]] = json.loads(result.stdout)
    return found


# The cases share one worker (--dist loadgroup), so the check runs once per session.
pytestmark = pytest.mark.xdist_group("import_hygiene")


@pytest.fixture(scope="module")
def pulled_in() -> dict[str, list[Any]]:
    return ui_modules_pulled_in(*CORE_MODULES, *HEADLESS)


@pytest.mark.parametrize("module", CORE_MODULES + HEADLESS)
def test_imports_without_textual(pulled_in: dict[str, list[Any]], module: str) -> None:
    code, text = pulled_in[module]
    assert code == 0, text
    assert text == "", f"{module} pulls in {text}"


def test_the_list_is_not_empty() -> None:
    assert {"preskool_dr.core.restore.engine", "preskool_dr.core.restore.journal"} <= set(
        CORE_MODULES
    )


def test_the_check_sees_textual_when_it_is_imported() -> None:
    code, text = ui_modules_pulled_in("preskool_dr.tui.app")["preskool_dr.tui.app"]
    assert code == 0, text
    assert "textual" in text.split(",")


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
