"""docs/ARCHITECTURE.md is the map docstrings cite: every module path it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "ARCHITECTURE.md"

PATH_PATTERN = re.compile(
    r"`((?:schemas|extractors|synthesis|filters|warehouse|flows|tests|testkit|bench)/[\w/.-]+)`"
)


def named_paths(text: str) -> list[str]:
    return sorted(set(PATH_PATTERN.findall(text)))


def test_every_named_module_exists():
    paths = named_paths(DOC.read_text(encoding="utf-8"))
    assert len(paths) > 20, "the map names the modules it describes"
    missing = [path for path in paths if not (REPO / path).exists()]
    assert missing == [], f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_pattern_catches_a_missing_module():
    assert named_paths("see `flows/no_such_module.py` and `warehouse/store.py`") == [
        "flows/no_such_module.py",
        "warehouse/store.py",
    ]


def test_docstrings_cite_the_repository_map_not_an_absent_design_file():
    offenders = []
    for folder in ("schemas", "extractors", "synthesis", "filters", "warehouse", "flows"):
        for module in (REPO / folder).rglob("*.py"):
            if "DESIGN.md" in module.read_text(encoding="utf-8"):
                offenders.append(str(module.relative_to(REPO)))
    assert offenders == []
