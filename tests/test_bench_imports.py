"""Benchmarks (and the test doubles they share with the tests) never import the test suite: bench/ and
testkit/ must run from a checkout without tests/ being a package on the path, so neither may import
`tests` nor spawn a `tests.` module (`python -m tests.x` in a subprocess command)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def suite_references(source: str) -> list[str]:
    """Every import of `tests` (or a submodule) and every string constant naming a `tests.` module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "tests"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "tests":
                found.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("tests."):
                found.append(repr(node.value))
    return found


def test_bench_and_testkit_import_nothing_from_tests():
    modules = sorted((REPO / "bench").rglob("*.py")) + sorted((REPO / "testkit").rglob("*.py"))
    assert len(modules) > 10, "the scan finds the benchmark and testkit modules"
    offenders = {
        str(module.relative_to(REPO)): refs
        for module in modules
        if (refs := suite_references(module.read_text(encoding="utf-8")))
    }
    assert offenders == {}, (
        f"these import or spawn the test suite: {offenders}; "
        "move what they need from tests/ into testkit/ and import it from there"
    )


def test_scan_catches_imports_and_spawned_modules():
    source = (
        "import tests.servers.hub_server\n"
        "from tests import report_fixtures\n"
        "def f():\n"
        "    from tests.synthesis_fakes import png_for\n"
        "    return ['python', '-m', 'tests.servers.capacity_server']\n"
        "from testkit.servers.openai_server import ScriptedOpenAIServer\n"
        "PATH = ROOT / 'tests' / 'fixtures'  # data files, not the package\n"
    )
    assert suite_references(source) == [
        "tests.servers.hub_server",
        "tests",
        "tests.synthesis_fakes",
        "'tests.servers.capacity_server'",
    ]
