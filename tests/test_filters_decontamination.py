"""Benchmark decontamination: n-gram overlap against benchmark prompts read from files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filters.decontamination import BenchmarkIndex, ngrams, read_benchmark_prompts
from schemas.errors import ConfigurationError

BENCH = [
    "Generate an image of the 2023 Nobel Prize in Physics laureates standing together holding their medals",
    "Draw the current tallest building in Africa with its height in metres written on a banner",
]


def test_ngrams() -> None:
    assert ngrams("One two three four", 3) == {("one", "two", "three"), ("two", "three", "four")}
    assert ngrams("One two", 3) == {("one", "two")}
    assert ngrams("", 3) == set()


def test_reads_json_jsonl_and_text(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"prompt": BENCH[0], "id": 1}, BENCH[1]]))
    (tmp_path / "b.jsonl").write_text(json.dumps({"prompt": BENCH[0]}) + "\n\n" + json.dumps(BENCH[1]) + "\n")
    (tmp_path / "c.txt").write_text(f"{BENCH[0]}\n   \n{BENCH[1]}\n")
    for name in ("a.json", "b.jsonl", "c.txt"):
        assert read_benchmark_prompts(tmp_path / name) == BENCH


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.json", '{"prompt": "x"}', "must hold a JSON list"),
        ("e.json", '[{"text": "x"}]', "'prompt' field"),
        ("f.jsonl", "{not json", "not valid JSON"),
    ],
)
def test_bad_files_are_configuration_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        read_benchmark_prompts(tmp_path / name)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        read_benchmark_prompts(tmp_path / "missing.json")


def test_planted_overlap_scores_high_and_clean_prompt_scores_zero(tmp_path: Path) -> None:
    path = tmp_path / "knowgen.jsonl"
    path.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in BENCH))
    index = BenchmarkIndex.from_files([path], n=8)
    assert len(index) == 2
    planted = "As a poster: " + BENCH[1] + ", in watercolour."
    assert index.overlap(planted) == (1.0, 1)  # contains the whole benchmark prompt
    # half of a benchmark prompt's 8-grams: words 0..11 of BENCH[0] (16 words, 9 grams) give 5 grams
    half = " ".join(BENCH[0].split()[:12]) + " on a red carpet in Stockholm under bright lights"
    score, number = index.overlap(half)
    assert number == 0
    assert score == pytest.approx(5 / 9)
    assert index.overlap("Paint a quiet mountain lake at dawn with a single red canoe near the shore") == (
        0.0,
        -1,
    )
