"""Grounding distribution per version (status) and per split (card), from a hand-filled warehouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.rows import Judgement, Sample, Version
from warehouse.grounding_stats import GROUNDING_BY_VERSION_SQL, grounding_by_split
from warehouse.query import status_tables
from warehouse.store import Warehouse


def sample(number: int, split: str, curator: str = "cur") -> Sample:
    return Sample(
        id=f"s{number}",
        trajectory_id=f"t{number}",
        prompt_id=f"p{number}",
        image_id=f"i{number}",
        category="art",
        status="kept",
        split=split,  # type: ignore[arg-type]
        curator=curator,
    )


def judgement(number: int, grounding: float | None, facts: int = 0, found: int = 0) -> Judgement:
    return Judgement(
        id=f"j{number}",
        image_id=f"i{number}",
        trajectory_id=f"t{number}",
        judge="rules",
        keep=True,
        grounding=grounding,
        facts=facts,
        supported_facts=found,
    )


def version(name: str, sft: list[str], rl: list[str], minute: int) -> Version:
    return Version(
        id=name,
        created_at=datetime(2026, 11, 30, 4, minute, tzinfo=UTC),
        sft_rows=len(sft),
        rl_rows=len(rl),
        config_fingerprint="c",
        code_version="x",
        path=f"exports/{name}",
        manifest_json=json.dumps({"ids": {"sft": sft, "rl": rl}}),
    )


def filled(tmp_path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    warehouse.insert([sample(1, "sft"), sample(2, "sft"), sample(3, "rl"), sample(4, "sft", "other")])
    warehouse.insert(
        [judgement(1, 1.0, 4, 4), judgement(2, 0.6, 5, 3), judgement(3, 0.25, 4, 1), judgement(4, None)]
    )
    warehouse.insert([version("v1", ["s1"], [], 0), version("v2", ["s1", "s2", "s4"], ["s3"], 1)])
    return warehouse


def test_per_version_and_split(tmp_path) -> None:
    with filled(tmp_path) as warehouse:
        rows = [tuple(row.values()) for row in warehouse.query(GROUNDING_BY_VERSION_SQL).to_pylist()]
    # version, split, rows, mean, <.5, .5-.8, .8-1, =1, unscored, facts, found
    assert rows == [
        ("v2", "sft", 3, 0.8, 0, 1, 0, 1, 1, 9, 7),
        ("v2", "rl", 1, 0.25, 1, 0, 0, 0, 0, 4, 1),
        ("v1", "sft", 1, 1.0, 0, 0, 0, 1, 0, 4, 4),
    ]


def test_per_split_of_one_curator(tmp_path) -> None:
    with filled(tmp_path) as warehouse:
        assert grounding_by_split(warehouse, "cur") == [
            ("sft", 2, 0.8, 0, 1, 0, 1, 0, 9, 7),
            ("rl", 1, 0.25, 1, 0, 0, 0, 0, 4, 1),
        ]


def test_status_shows_the_table(tmp_path) -> None:
    filled(tmp_path).close()
    titles = [table.title for table in status_tables(tmp_path / "warehouse.duckdb")]
    assert any(title.startswith("grounding per version") for title in titles)
