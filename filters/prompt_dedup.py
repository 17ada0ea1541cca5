"""Near-duplicate prompt removal: MinHash signatures over word shingles, banded LSH, exact check.

LSH only proposes candidates (tuned so a pair at the threshold is missed with probability <= 1%); every
candidate's exact Jaccard similarity of shingle sets is then computed, so `query` returns exactly the
indexed prompts whose Jaccard similarity is >= threshold, up to LSH misses (<= 1% at the threshold,
fewer above it; `bench/dedup.py` measures recall against exact all-pairs Jaccard).

Each of the `num_perm` MinHash functions is the splitmix64 finaliser of the 64-bit shingle hash XOR a
per-function seed: a bijective, well-mixed 64-bit hash, so every shingle is equally likely to be the
minimum. (A linear `a*x + b mod 2^61-1` family over 32-bit values barely wraps and lets small shingle
hashes win most functions, which cost about 5% of the pairs at the threshold.) Everything is
deterministic: shingles hash with blake2b, seeds come from a seeded numpy generator.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from itertools import chain

import numpy as np

from filters.base import Candidate, Decision, Filter

SIGNATURE_MARGIN = 0.25
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
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


def _set_jaccard(first: frozenset[int], second: frozenset[int]) -> float:
    common = len(first & second)
    return common / (len(first) + len(second) - common)


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
        self._seeds = generator.integers(
            0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True
        )
        # band key -> rows (positions in `_ids`); a row's signature, low 32 bits per function (an equal
        # low half is an equal value but for ~2^-32 chance, which only ever adds a candidate)
        self._buckets: list[defaultdict[bytes, list[int]]] = [defaultdict(list) for _ in range(self.bands)]
        self._shingles: dict[str, frozenset[int]] = {}  # exact verification with set operations
        self._ids: list[str] = []
        self._signatures = np.zeros((64, num_perm), dtype=np.uint32)
        # curation queries a candidate's prompt, then adds the same text when it keeps it: the last
        # text's shingles and signature are computed once for both
        self._last: tuple[str, np.ndarray, np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self._shingles)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._shingles

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        """MinHash signature (num_perm values) of a non-empty shingle hash array."""
        with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2^64, as splitmix64 intends
            mixed = (shingles[:, None] ^ self._seeds[None, :]) + GOLDEN_GAMMA
            mixed = (mixed ^ (mixed >> np.uint64(30))) * MIX_1
            mixed = (mixed ^ (mixed >> np.uint64(27))) * MIX_2
            mixed ^= mixed >> np.uint64(31)
        return mixed.min(axis=0)

    def _prepared(self, text: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The text's shingle hashes and MinHash signature (None when it has no shingles)."""
        if self._last is not None and self._last[0] == text:
            return self._last[1], self._last[2]
        shingles = shingle_hashes(text, self.shingle_size)
        signature = self.signature(shingles) if shingles.size else None
        self._last = (text, shingles, signature)
        return shingles, signature

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[band * self.rows : (band + 1) * self.rows].tobytes() for band in range(self.bands)]

    def add(self, item_id: str, text: str) -> None:
        if item_id in self._shingles:
            return
        shingles, signature = self._prepared(text)
        self._shingles[item_id] = frozenset(shingles.tolist())
        if signature is None:
            return
        row = len(self._ids)
        if row == len(self._signatures):
            self._signatures = np.concatenate([self._signatures, np.zeros_like(self._signatures)])
        self._ids.append(item_id)
        self._signatures[row] = signature.astype(np.uint32)
        for buckets, key in zip(self._buckets, self._band_keys(signature), strict=True):
            buckets[key].append(row)

    def _plausible(self, signature: np.ndarray) -> list[str]:
        """Ids sharing a band with `signature` whose signatures agree on at least `threshold -
        SIGNATURE_MARGIN` of the functions (a vectorised MinHash estimate of Jaccard): only those are
        verified exactly. A pair at the threshold agrees on fewer with probability ~1e-12 (7 standard
        deviations at 128 functions), while template-heavy prompts that share a band far below the
        threshold cost one vectorised comparison instead of a set intersection."""
        lists = [
            rows
            for buckets, key in zip(self._buckets, self._band_keys(signature), strict=True)
            if (rows := buckets.get(key))
        ]
        if not lists:
            return []
        proposed = np.unique(np.fromiter(chain.from_iterable(lists), dtype=np.int64))
        agreement = (self._signatures[proposed] == signature.astype(np.uint32)).mean(axis=1)
        keep = proposed[agreement >= self.threshold - SIGNATURE_MARGIN]
        return [self._ids[row] for row in keep.tolist()]

    def query(self, text: str) -> list[tuple[str, float]]:
        """Indexed prompts with Jaccard >= threshold, most similar first (ties by id)."""
        shingles, signature = self._prepared(text)
        if signature is None:
            return []
        if self.threshold <= 0.0:
            candidates: set[str] | list[str] = set(self._shingles)
        else:
            candidates = self._plausible(signature)
        query_set = frozenset(shingles.tolist())
        matches = []
        for item_id in candidates:
            similarity = _set_jaccard(query_set, self._shingles[item_id])
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
