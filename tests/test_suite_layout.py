"""The suite's own layout: tests and conftests take shared helpers from tests/support only
(no test module imports another, no helper lives in a conftest), and tests/support imports
no test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_test_modules(path: Path) -> list[str]:
    """Modules of this suite that `path` imports, other than tests.support."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.append("." * node.level + (node.module or ""))
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            if (name == "tests" or name.startswith("tests.")) and not name.startswith(
                "tests.support"
            ):
                found.append(name)
    return found


def test_no_test_module_or_conftest_imports_another_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS)): imported_test_modules(path)
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != "__init__.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_conftests_hold_fixtures_and_no_public_helpers() -> None:
    """Every public function in a conftest is a fixture (or a pytest hook)."""
    helpers = []
    for path in sorted(TESTS.rglob("conftest.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith(
                ("_", "pytest_")
            ):
                decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
                if not any(d.startswith("pytest.fixture") for d in decorators):
                    helpers.append(f"{path.relative_to(TESTS)}: {node.name}")
    assert helpers == []
