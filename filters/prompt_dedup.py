"""Near-duplicate prompt removal: MinHash signatures over word shingles, banded LSH, exact check.

LSH only proposes candidates (tuned so a pair at the threshold is missed with probability <= 1%); every candidate's exact
Jaccard similarity of shingle sets is then computed, so `query` returns exactly the indexed prompts
whose Jaccard similarity is >= threshold, up to LSH misses far below the tuning point. Everything
is deterministic: shingles hash with blake2b, permutations come from a seeded numpy generator.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

from filters.base import Candidate, Decision, Filter

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore; any script)."""
    return WORD.findall(text.lower())


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """Sorted unique 64-bit hashes of the text's word `size`-shingles (the whole text if shorter)."""
    tokens = words(text)
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    count = max(1, len(tokens) - size + 1)
    shingles = {" ".join(tokens[start : start + size]) for start in range(count)}
    values = [
        int.from_bytes(hashlib.blake2b(shingle.encode("utf-8"), digest_size=8).digest(), "little")
        for shingle in shingles
    ]
    return np.unique(np.array(values, dtype=np.uint64))


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays (0.0 when both are empty)."""
    if first.size == 0 and second.size == 0:
        return 0.0
    common = np.intersect1d(first, second, assume_unique=True).size
    return common / (first.size + second.size - common)


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with the most rows per band (fewest false candidates) such that a pair exactly
    at `threshold` still shares a band with probability >= `recall` (pairs above it: higher)."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


class PromptDedupIndex:
    """Prompts by id; `query(text)` returns (id, jaccard) of indexed prompts >= threshold."""

    def __init__(self, threshold: float, *, num_perm: int = 128, shingle_size: int = 3, seed: int = 0):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within [0, 1]")
        self.threshold = threshold
        self.shingle_size = shingle_size
        self.num_perm = num_perm
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        generator = np.random.default_rng(seed)
        # a, b < 2^32 and shingle hashes reduced to 32 bits: a * x + b < 2^64, no uint64 overflow.
        self._a = generator.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
        self._b = generator.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
        self._buckets: list[defaultdict[bytes, list[str]]] = [defaultdict(list) for _ in range(self.bands)]
        self._shingles: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._shingles)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._shingles

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        """MinHash signature (num_perm values) of a non-empty shingle hash array."""
        low = (shingles & np.uint64(0xFFFFFFFF))[:, None]
        permuted = (low * self._a[None, :] + self._b[None, :]) % MERSENNE_PRIME
        return permuted.min(axis=0)

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[band * self.rows : (band + 1) * self.rows].tobytes() for band in range(self.bands)]

    def add(self, item_id: str, text: str) -> None:
        if item_id in self._shingles:
            return
        shingles = shingle_hashes(text, self.shingle_size)
        self._shingles[item_id] = shingles
        if shingles.size == 0:
            return
        for buckets, key in zip(self._buckets, self._band_keys(self.signature(shingles)), strict=True):
            buckets[key].append(item_id)

    def query(self, text: str) -> list[tuple[str, float]]:
        """Indexed prompts with Jaccard >= threshold, most similar first (ties by id)."""
        shingles = shingle_hashes(text, self.shingle_size)
        if shingles.size == 0:
            return []
        if self.threshold <= 0.0:
            candidates: set[str] = set(self._shingles)
        else:
            candidates = set()
            for buckets, key in zip(self._buckets, self._band_keys(self.signature(shingles)), strict=True):
                candidates.update(buckets.get(key, ()))
        matches = []
        for item_id in candidates:
            similarity = jaccard(shingles, self._shingles[item_id])
            if similarity >= self.threshold:
                matches.append((item_id, similarity))
        matches.sort(key=lambda match: (-match[1], match[0]))
        return matches


class PromptNearDuplicateFilter(Filter):
    """Drops a candidate whose task prompt nearly duplicates a kept sample's prompt."""

    name = "prompt_near_duplicate"

    def __init__(self, index: PromptDedupIndex) -> None:
        super().__init__()
        self.index = index

    def check(self, candidate: Candidate) -> Decision:
        matches = self.index.query(candidate.prompt.prompt)
        return Decision.drop("prompt_near_duplicate", matches[0][0]) if matches else Decision.accept()
