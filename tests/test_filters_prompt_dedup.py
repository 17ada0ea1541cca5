"""MinHash + LSH prompt dedup: planted near-duplicates found, distinct prompts not, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.prompt_dedup import PromptDedupIndex, jaccard, lsh_bands, shingle_hashes, words

BASE = (
    "Draw a poster of the 2024 Summer Olympics opening ceremony on the Seine in Paris, showing the "
    "parade of athletes on boats, the Eiffel Tower lit up in the rain and the exact number of "
    "participating nations written in large gold letters at the top"
)
NEAR = BASE.replace("large gold", "big gold")  # one word changed
DISTINCT = [
    "Illustrate the molecular structure of caffeine with each atom labelled and the molar mass in grams per mole",
    "Paint the Hubble Space Telescope in orbit above Earth with its launch year and the shuttle that carried it",
    "Create a map of the river Nile from Lake Victoria to the Mediterranean with the names of its capitals",
    "Show the starting lineup of the 1998 World Cup final winning team with their shirt numbers",
]


def test_words_and_shingles() -> None:
    assert words("Eiffel-Tower, 2024!  Ünïcode") == ["eiffel", "tower", "2024", "ünïcode"]
    assert shingle_hashes("a b c d", 3).size == 2
    assert shingle_hashes("a b", 3).size == 1  # shorter than a shingle: the whole text
    assert shingle_hashes("!!!", 3).size == 0
    assert np.array_equal(shingle_hashes("A b C", 2), shingle_hashes("a B c", 2))


def test_planted_near_duplicate_found_distinct_prompts_not() -> None:
    index = PromptDedupIndex(0.8)
    index.add("base", BASE)
    for number, text in enumerate(DISTINCT):
        index.add(f"distinct{number}", text)
    similarity = jaccard(shingle_hashes(BASE, 3), shingle_hashes(NEAR, 3))
    assert 0.8 <= similarity < 1.0
    assert index.query(NEAR) == [("base", similarity)]
    assert index.query(BASE) == [("base", 1.0)]
    assert index.query("Draw the Eiffel Tower at night in the rain") == []
    for number, text in enumerate(DISTINCT):
        assert index.query(text) == [(f"distinct{number}", 1.0)]


def test_threshold_is_respected() -> None:
    reworded = BASE.replace("Draw a poster of", "Make an illustration about").replace("at the top", "above")
    similarity = jaccard(shingle_hashes(BASE, 3), shingle_hashes(reworded, 3))
    assert 0.5 < similarity < 0.8
    strict, loose = PromptDedupIndex(0.8), PromptDedupIndex(0.5)
    strict.add("base", BASE)
    loose.add("base", BASE)
    assert strict.query(reworded) == []
    assert loose.query(reworded) == [("base", similarity)]


def test_same_seed_same_signature_other_seed_other_signature() -> None:
    shingles = shingle_hashes(BASE, 3)
    first, second, other = PromptDedupIndex(0.8), PromptDedupIndex(0.8), PromptDedupIndex(0.8, seed=1)
    assert np.array_equal(first.signature(shingles), second.signature(shingles))
    assert not np.array_equal(first.signature(shingles), other.signature(shingles))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.9, 1.0])
def test_bands_fit_signature_and_recall_at_threshold(threshold: float) -> None:
    bands, rows = lsh_bands(threshold, 128)
    assert bands * rows <= 128
    assert 1 - (1 - threshold**rows) ** bands >= 0.99


vocabulary = st.sampled_from("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split())


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.lists(vocabulary, min_size=1, max_size=12).map(" ".join), min_size=1, max_size=8),
    query=st.lists(vocabulary, min_size=1, max_size=12).map(" ".join),
)
def test_query_never_returns_pairs_below_threshold_and_finds_exact_copies(
    texts: list[str], query: str
) -> None:
    index = PromptDedupIndex(0.6)
    for number, text in enumerate(texts):
        index.add(f"t{number}", text)
    query_shingles = shingle_hashes(query, 3)
    for item_id, similarity in index.query(query):
        assert similarity >= 0.6
        assert similarity == jaccard(query_shingles, shingle_hashes(texts[int(item_id[1:])], 3))
    for number, text in enumerate(texts):
        assert (f"t{number}", 1.0) in index.query(text)


def _random_text(generator: np.random.Generator, length: int) -> list[str]:
    vocabulary = [f"w{number}" for number in range(5000)]
    return [vocabulary[i] for i in generator.integers(0, len(vocabulary), size=length)]


def test_no_single_shingle_wins_most_minhash_functions() -> None:
    """The issue-12 regression: with a weak family one shingle won over half of the 128 minima in a
    fifth of texts. With a well-mixed family a shingle wins about 128 / shingles of them."""
    generator = np.random.default_rng(5)
    index = PromptDedupIndex(0.8)
    shares = []
    for _ in range(200):
        shingles = shingle_hashes(" ".join(_random_text(generator, 40)), 3)
        per_shingle = np.stack([index.signature(shingles[k : k + 1]) for k in range(shingles.size)])
        winners = np.bincount(per_shingle.argmin(axis=0), minlength=shingles.size)
        shares.append(winners.max() / index.num_perm)
    assert max(shares) < 0.25


def test_recall_of_pairs_at_the_threshold_is_at_least_99_percent() -> None:
    """Planted pairs with exact Jaccard in [0.8, 0.9): the index must find >= 99% of them."""
    generator = np.random.default_rng(9)
    pairs = []
    while len(pairs) < 400:
        tokens = _random_text(generator, int(generator.integers(30, 80)))
        edited = list(tokens)
        for position in generator.choice(len(edited), size=int(generator.integers(1, 4)), replace=False):
            edited[position] = f"x{int(generator.integers(0, 10**6))}"
        similarity = jaccard(shingle_hashes(" ".join(tokens), 3), shingle_hashes(" ".join(edited), 3))
        if 0.8 <= similarity < 0.9:
            pairs.append((" ".join(tokens), " ".join(edited)))
    found = 0
    for number, (first, second) in enumerate(pairs):
        index = PromptDedupIndex(0.8, seed=number)
        index.add("first", first)
        found += bool(index.query(second))
    assert found / len(pairs) >= 0.99
