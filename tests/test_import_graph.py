"""The import graph of the package (docs/ARCHITECTURE.md, "Folders: one job each, imports only
downwards"): every import of every module, at the top or inside a function, read with `ast`.

(a) no cycle among the modules of flows/ (a lazy import does not make a cycle go away: the two
    modules still need each other); (b) each folder imports only the folders its row of the table
    allows; (c) bench/ imports nothing from tests/.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "extractors", "synthesis", "filters", "warehouse", "flows")
OURS = (*PACKAGES, "tests", "testkit", "bench")

# docs/ARCHITECTURE.md's table: the folders each folder may import (besides itself)
MAY_IMPORT = {
    "schemas": set(),
    "extractors": {"schemas"},
    "synthesis": {"schemas", "extractors"},
    "filters": {"schemas", "synthesis"},
    "warehouse": {"schemas"},
    "flows": {"schemas", "extractors", "synthesis", "filters", "warehouse"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, known: set[str]) -> Iterator[str]:
    """Every module of ours `tree` imports, wherever the import statement is (`from a import b` names
    the module a.b when that is one, else a)."""
    package = module.rpartition(".")[0] if module else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 more
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base


def graph(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, for every module under `folders`."""
    paths = [path for folder in folders for path in sorted((REPO / folder).rglob("*.py"))]
    known = {module_name(path) for folder in OURS for path in (REPO / folder).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges[name] = {
            target
            for target in imported(tree, name, known)
            if target.split(".")[0] in OURS and target != name
        }
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_inside_flows() -> None:
    edges = graph(PACKAGES)
    flows = {
        name: {target for target in targets if target.startswith("flows.")}
        for name, targets in edges.items()
        if name.startswith("flows.")
    }
    assert len(flows) > 20, "the scan finds the flows modules"
    assert cycles(flows) == [], (
        "these flows/ modules import each other (a function-level import counts too): move what both "
        "need into a module below them"
    )


def test_each_folder_imports_only_the_folders_below_it() -> None:
    edges = graph(PACKAGES)
    upward = sorted(
        f"{name} imports {target}"
        for name, targets in edges.items()
        for target in targets
        if (folder := name.split(".")[0]) != (other := target.split(".")[0])
        and other not in MAY_IMPORT[folder]
    )
    assert upward == [], "docs/ARCHITECTURE.md's import rules say no to these; move the code down"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from flows import tasks\n", {"flows.tasks"}),
        ("def f():\n    from flows.runner import task_runner_for\n", {"flows.runner"}),
        (
            "from flows.batches import StageCounts\nimport warehouse.store\n",
            {"flows.batches", "warehouse.store"},
        ),
        ("from . import stages\nfrom .ledger import RunLedger\n", {"flows.stages", "flows.ledger"}),
    ],
)
def test_the_scan_sees_every_form_of_import(source: str, expected: set[str]) -> None:
    known = {
        "flows.tasks",
        "flows.runner",
        "flows.batches",
        "warehouse.store",
        "flows.stages",
        "flows.ledger",
    }
    assert set(imported(ast.parse(source), "flows.regenerate", known)) == expected


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_bench_imports_nothing_from_tests() -> None:
    edges = graph(("bench",))
    assert len(edges) > 5, "the scan finds the benchmark modules"
    from_tests = sorted(
        f"{name} imports {target}"
        for name, targets in edges.items()
        for target in targets
        if target.split(".")[0] == "tests"
    )
    assert from_tests == [], "bench/ runs without the test suite: import test doubles from testkit/"
