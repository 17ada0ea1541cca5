"""A whole offline run whose exported rows pass the issue-10 checks, verified from the export and the
warehouse rather than from the rules' own verdicts: no SFT row holds a protocol correction, no exported
row's reference is about another subject, every SFT row's grounding (recomputed from its evidence rows)
reaches curation.min_grounding, and every supported fact's source is one of the trajectory's tool calls."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from filters.evidence import names_any, url_words
from filters.subject import subject_aliases
from flows.runner import run_regenerate
from schemas.config import Config, SizesConfig
from synthesis.agent_protocol import load_template
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

CORRECTIONS = (
    load_template("format_error.txt").split("$error", 1)[0].strip(),
    "You have not called image_search",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, prefect_server):
    workdir = tmp_path_factory.mktemp("grounded-run")
    config = Config(workdir=workdir, batch_size=8, sizes=SizesConfig(sft=6, rl=3))
    result = run_regenerate(config)
    assert result["version"] is not None
    return workdir, config, Path(result["version"]["path"])


def exported_rows(folder: Path, split: str) -> list[dict]:
    rows: list[dict] = []
    for shard in sorted((folder / "data").glob(f"{split}-*.parquet")):
        rows += pq.read_table(shard, columns=["id"]).to_pylist()
    return rows


def facts_of(warehouse: Warehouse, sample_ids: list[str]) -> list[dict]:
    """Per exported sample: its trajectory, prompt subjects, evidence and judgement."""
    return warehouse.query(
        """
        SELECT s.id, s.split, t.messages, t.references, t.chosen_references, t.tool_calls,
               t.protocol_repairs,
               (SELECT list(title) FROM topics WHERE list_contains(p.topic_ids, topics.id)) AS subjects,
               (SELECT list({'supported': e.supported, 'index': e.tool_call_index, 'url': e.source_url})
                FROM evidence e WHERE e.trajectory_id = t.id) AS evidence,
               (SELECT max(j.grounding) FROM judgements j WHERE j.image_id = s.image_id) AS grounding
        FROM samples s JOIN trajectories t ON t.id = s.trajectory_id JOIN prompts p ON p.id = s.prompt_id
        WHERE s.id IN (SELECT unnest(?)) ORDER BY s.id
        """,
        [sample_ids],
    ).to_pylist()


def test_exported_rows_are_well_formed_grounded_and_on_subject(exported) -> None:
    workdir, config, folder = exported
    sft_ids = [row["id"] for row in exported_rows(folder, "sft")]
    rl_ids = [row["id"] for row in exported_rows(folder, "rl")]
    assert sft_ids and rl_ids
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        rows = facts_of(warehouse, sft_ids + rl_ids)
        evidence_rows = warehouse.count("evidence")
    assert len(rows) == len(sft_ids) + len(rl_ids)
    assert evidence_rows > 0
    for row in rows:
        aliases = subject_aliases(row["subjects"])
        by_id = {reference["img_id"]: reference for reference in row["references"]}
        for chosen in row["chosen_references"]:
            reference = by_id[chosen["img_id"]]
            metadata = (
                f"{reference['title']} {url_words(reference['page_url'])} {url_words(reference['url'])}"
            )
            assert names_any(metadata, aliases), (row["id"], reference, row["subjects"])
        evidence = row["evidence"] or []
        for fact in evidence:
            if fact["supported"]:
                assert 0 <= fact["index"] < len(row["tool_calls"])
        if row["split"] != "sft":
            continue
        assert row["protocol_repairs"] == 0
        for message in row["messages"]:
            if message["role"] == "user":
                assert not any(correction in message["content"] for correction in CORRECTIONS)
            if message["role"] == "assistant":
                assert not message["content"].lstrip().startswith("<think></think>")
        recomputed = sum(f["supported"] for f in evidence) / len(evidence) if evidence else 1.0
        assert recomputed >= config.curation.min_grounding, row["id"]
        assert row["grounding"] == pytest.approx(recomputed, abs=1e-3)


def test_the_card_and_status_report_grounding(exported) -> None:
    workdir, _, folder = exported
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "## Grounding" in card and "| split | rows | mean |" in card
    manifest = json.loads((folder / "manifest.json").read_text())
    from warehouse.query import status_tables

    titles = [table.title for table in status_tables(workdir / "warehouse.duckdb")]
    assert any(title.startswith("grounding per version") for title in titles)
    assert manifest["counts"]["sft"] > 0


def test_quality_bench_reads_the_run(exported) -> None:
    """bench/quality.py's readers on a real run: its export trips none of the rules curation applied."""
    from bench.quality import caught_in_export, run_metrics
    from schemas.config import CurationConfig

    workdir, config, _ = exported
    caught, totals = caught_in_export(workdir / "warehouse.duckdb", CurationConfig())
    assert totals["sft"] > 0 and totals["rl"] > 0
    assert all(per_split == {"sft": 0, "rl": 0} for per_split in caught.values()), caught
    metrics = run_metrics(workdir / "warehouse.duckdb")
    assert metrics["samples"]["kept"] == totals["sft"] + totals["rl"]
    assert metrics["evidence"]["found"] <= metrics["evidence"]["facts"]
