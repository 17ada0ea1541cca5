"""Benchmark decontamination: drop candidates whose task prompt overlaps a benchmark prompt.

Overlap is measured on word n-grams with the overlap coefficient |C & B| / min(|C|, |B|) against
each benchmark prompt B (so a candidate containing a whole benchmark prompt, or contained in one,
scores 1.0); the highest score over the benchmark counts. Texts shorter than n words are one n-gram.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from filters.base import Candidate, Decision, Filter
from filters.prompt_dedup import words
from schemas.errors import ConfigurationError


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of a text (the whole text as one gram if it has fewer than n words)."""
    tokens = words(text)
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[start : start + n]) for start in range(len(tokens) - n + 1)}


def _prompt_of(item: object, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("prompt"), str):
        return item["prompt"]
    raise ConfigurationError(f"{where}: expected a string or an object with a string 'prompt' field")


def read_benchmark_prompts(path: str | Path) -> list[str]:
    """Prompts of a benchmark file: a JSON list (`.json`), JSON lines (`.jsonl`, `.ndjson`) of
    strings or objects with a `prompt` field, or plain text with one prompt per non-blank line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"benchmark file {path} cannot be read: {error}") from error
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise ConfigurationError(f"benchmark file {path} must hold a JSON list")
            return [_prompt_of(item, f"{path} item {index}") for index, item in enumerate(data)]
        if suffix in {".jsonl", ".ndjson"}:
            return [
                _prompt_of(json.loads(line), f"{path} line {number}")
                for number, line in enumerate(text.splitlines(), start=1)
                if line.strip()
            ]
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"benchmark file {path} is not valid JSON: {error}") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


class BenchmarkIndex:
    """An inverted index from word n-grams to the benchmark prompts that contain them."""

    def __init__(self, prompts: Iterable[str], n: int) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.prompts: list[str] = []
        self._sizes: list[int] = []
        self._postings: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
        for prompt in prompts:
            grams = ngrams(prompt, n)
            if not grams:
                continue
            number = len(self.prompts)
            self.prompts.append(prompt)
            self._sizes.append(len(grams))
            for gram in grams:
                self._postings[gram].append(number)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], n: int) -> BenchmarkIndex:
        prompts: list[str] = []
        for path in paths:
            prompts.extend(read_benchmark_prompts(path))
        return cls(prompts, n)

    def __len__(self) -> int:
        return len(self.prompts)

    def overlap(self, text: str) -> tuple[float, int]:
        """(highest overlap coefficient, index of that benchmark prompt); (0.0, -1) when none."""
        grams = ngrams(text, self.n)
        shared: Counter[int] = Counter()
        for gram in grams:
            shared.update(self._postings.get(gram, ()))
        best_score, best_index = 0.0, -1
        for number in sorted(shared):
            score = shared[number] / min(len(grams), self._sizes[number])
            if score > best_score:
                best_score, best_index = score, number
        return best_score, best_index


class DecontaminationFilter(Filter):
    """Drops a candidate whose prompt overlaps a benchmark prompt at or above `threshold` (> 0)."""

    name = "benchmark_contamination"

    def __init__(self, index: BenchmarkIndex, threshold: float) -> None:
        super().__init__()
        self.index = index
        self.threshold = threshold

    def check(self, candidate: Candidate) -> Decision:
        score, _ = self.index.overlap(candidate.prompt.prompt)
        if score > 0.0 and score >= self.threshold:
            return Decision.drop("benchmark_contamination")
        return Decision.accept()
