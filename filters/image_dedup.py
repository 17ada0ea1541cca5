"""Image dedup: exact (sha256) and near-duplicate (64-bit perceptual hash within a Hamming distance).

`PerceptualHashIndex` is multi-index hashing with neighbour enumeration (Norouzi et al., "Fast Search
in Hamming Space with Multi-Index Hashing"): the 64 bits are cut into `m` substrings, and by the
pigeonhole principle two hashes within `r` bits differ in at least one substring by at most
`r // m` bits. A query enumerates, per substring, every value within `r // m` bits of its own
(`flip_masks`) and looks those up, so it touches only true candidates instead of scanning the index;
`m` is chosen per radius from a cost model (`substring_plan`), which keeps radius 10 and 12 as cheap
as radius 4 was with plain bands.

Curation asks one question per candidate, in order, against a growing set of kept images. `prefetch`
answers all of a pass's questions at once, vectorised with numpy (`pairs_within`: per substring and
flip mask one table gather, then exact distances with a vectorised popcount), over the union of the
indexed hashes and the pass's candidates; `query` then filters those neighbour lists by what is
indexed at that moment, so the answers are exactly the sequential ones.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from itertools import combinations

import numpy as np

from filters.base import Candidate, Decision, Filter

HASH_BITS = 64
HASH_HEX_LENGTH = HASH_BITS // 4
MAX_SUBSTRING_BITS = 22  # direct-address tables of 2^22 entries at most (32 MiB of int64)


def parse_phash(phash_hex: str) -> int:
    """The 64-bit integer of a 16-hex-character perceptual hash. Raises ValueError otherwise."""
    if len(phash_hex) != HASH_HEX_LENGTH:
        raise ValueError(f"perceptual hash must be {HASH_HEX_LENGTH} hex characters, got {phash_hex!r}")
    try:
        return int(phash_hex, 16)
    except ValueError as error:
        raise ValueError(f"perceptual hash is not hexadecimal: {phash_hex!r}") from error


def hamming_distance(first_hex: str, second_hex: str) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (parse_phash(first_hex) ^ parse_phash(second_hex)).bit_count()


def phash_hex(data: bytes) -> str:
    """The 64-bit DCT perceptual hash (imagehash.phash, hash_size 8) of encoded image bytes."""
    import imagehash
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        return str(imagehash.phash(image.convert("RGB")))


def _layout(substrings: int) -> list[tuple[int, int]]:
    """(shift, width) of each substring: `substrings` runs of nearly equal width covering the 64 bits."""
    base, extra = divmod(HASH_BITS, substrings)
    layout, shift = [], 0
    for index in range(substrings):
        width = base + (1 if index < extra else 0)
        layout.append((shift, width))
        shift += width
    return layout


@cache
def flip_masks(width: int, radius: int) -> tuple[int, ...]:
    """Every mask of `width` bits with at most `radius` bits set (0 first, then by popcount)."""
    masks = [0]
    for bits in range(1, min(radius, width) + 1):
        masks += [sum(1 << bit for bit in chosen) for chosen in combinations(range(width), bits)]
    return tuple(masks)


@cache
def substring_plan(radius: int, size: int) -> int:
    """How many substrings to cut the 64 bits into for `radius` and an index of about `size` hashes:
    the `m` minimising enumerated lookups plus expected candidates (`m * masks * (1 + size / 2^w)`)."""
    best, best_cost = 0, math.inf
    for substrings in range(1, 33):
        widths = [width for _, width in _layout(substrings)]
        if max(widths) > MAX_SUBSTRING_BITS:
            continue
        per_bits = radius // substrings
        cost = sum(
            sum(math.comb(width, bits) for bits in range(min(per_bits, width) + 1)) * (1 + size / 2**width)
            for width in widths
        )
        if cost < best_cost:
            best, best_cost = substrings, cost
    return best


def pairs_within(queries: np.ndarray, stored: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (query index, stored index) whose uint64 hashes differ in at most `radius` bits, each once.

    Sub-quadratic: per substring and flip mask, one gather from a direct-address table of the stored
    substrings, then exact distances of the proposed pairs with a vectorised popcount."""
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    stored = np.ascontiguousarray(stored, dtype=np.uint64)
    empty = np.zeros(0, dtype=np.int64)
    if queries.size == 0 or stored.size == 0:
        return empty, empty
    if radius >= HASH_BITS:
        every_left, every_right = np.meshgrid(np.arange(queries.size), np.arange(stored.size), indexing="ij")
        return every_left.ravel(), every_right.ravel()
    substrings = substring_plan(radius, int(stored.size))
    found: list[np.ndarray] = []
    for shift, width in _layout(substrings):
        mask = np.uint64((1 << width) - 1)
        keys = ((stored >> np.uint64(shift)) & mask).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << width)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        query_keys = ((queries >> np.uint64(shift)) & mask).astype(np.int64)
        for flip in flip_masks(width, radius // substrings):
            probe = query_keys ^ flip
            hits = counts[probe]
            total = int(hits.sum())
            if total == 0:
                continue
            left = np.repeat(np.arange(queries.size, dtype=np.int64), hits)
            first = np.repeat(starts[probe] - np.concatenate(([0], np.cumsum(hits)[:-1])), hits)
            right = order[first + np.arange(total, dtype=np.int64)]
            close = np.bitwise_count(queries[left] ^ stored[right]) <= radius
            found.append(left[close] * stored.size + right[close])
    if not found:
        return empty, empty
    pairs = np.unique(np.concatenate(found))
    return pairs // stored.size, pairs % stored.size


class PerceptualHashIndex:
    """Ids by perceptual hash; `query` returns every id within `max_distance` bits."""

    def __init__(self, max_distance: int) -> None:
        if max_distance < 0:
            raise ValueError("max_distance must be >= 0")
        self.max_distance = max_distance
        self._ids_by_value: defaultdict[int, list[str]] = defaultdict(list)
        self._hashes: dict[str, int] = {}
        self._plan_size = 0
        self._plan: list[tuple[int, int, tuple[int, ...]]] = []  # (shift, width, flip masks)
        self._buckets: list[defaultdict[int, set[int]]] = []  # substring value -> hash values
        self._neighbours: dict[int, list[int]] = {}  # prefetched: hash value -> values within reach
        self._universe: set[int] = set()  # the values `_neighbours` was computed over
        self._replan()

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._hashes

    def _replan(self) -> None:
        """Plan the substrings for the current size (re-planned as the index grows 4x). The buckets
        are built lazily, on the first query that was not prefetched: a prefetched pass never needs them."""
        self._plan_size = max(1024, 4 * len(self._ids_by_value))
        self._buckets = []
        if self.max_distance >= HASH_BITS:
            self._plan = []
            return
        substrings = substring_plan(self.max_distance, self._plan_size)
        self._plan = [
            (shift, width, flip_masks(width, self.max_distance // substrings))
            for shift, width in _layout(substrings)
        ]

    def _bucket(self, value: int) -> None:
        for (shift, width, _), buckets in zip(self._plan, self._buckets, strict=True):
            buckets[(value >> shift) & ((1 << width) - 1)].add(value)

    def add(self, item_id: str, phash: str) -> None:
        value = parse_phash(phash)
        known = self._hashes.get(item_id)
        if known is not None:
            if known != value:
                raise ValueError(f"id {item_id!r} is already indexed with another hash")
            return
        self._hashes[item_id] = value
        if value not in self._ids_by_value:
            if self._neighbours and value not in self._universe:
                self._neighbours, self._universe = {}, set()  # answers would miss this value
            if self._buckets:
                self._bucket(value)
        self._ids_by_value[value].append(item_id)
        if len(self._ids_by_value) > self._plan_size:
            self._replan()

    def prefetch(self, phashes: Iterable[str]) -> None:
        """Answer the coming queries for `phashes` in one vectorised pass (see the module docstring).
        Hashes already answered by an earlier, still valid prefetch are not computed again, so a
        curation pass can prefetch all its candidates once and each batch's call costs nothing."""
        wanted = {parse_phash(phash) for phash in phashes}
        if wanted <= self._neighbours.keys():
            return
        universe = np.fromiter(set(self._ids_by_value) | wanted, dtype=np.uint64)
        queries = np.fromiter(wanted, dtype=np.uint64)
        left, right = pairs_within(queries, universe, self.max_distance)
        neighbours: dict[int, list[int]] = {int(value): [] for value in queries}
        for query_value, stored_value in zip(queries[left].tolist(), universe[right].tolist(), strict=True):
            neighbours[query_value].append(stored_value)
        self._neighbours = neighbours
        self._universe = {int(value) for value in universe}

    def _candidates(self, value: int) -> set[int]:
        """Hash values that may lie within reach of `value` (all of them when no substring can help)."""
        if not self._plan:
            return set(self._ids_by_value)
        if not self._buckets:
            self._buckets = [defaultdict(set) for _ in self._plan]
            for known in self._ids_by_value:
                self._bucket(known)
        found: set[int] = set()
        for (shift, width, masks), buckets in zip(self._plan, self._buckets, strict=True):
            key = (value >> shift) & ((1 << width) - 1)
            for flip in masks:
                found.update(buckets.get(key ^ flip, ()))
        return found

    def query(self, phash: str) -> list[tuple[str, int]]:
        """Every (id, distance) with distance <= max_distance, nearest first (ties by id)."""
        value = parse_phash(phash)
        prefetched = self._neighbours.get(value)
        candidates = prefetched if prefetched is not None else self._candidates(value)
        matches: list[tuple[str, int]] = []
        for other in candidates:
            ids = self._ids_by_value.get(other)
            if not ids:
                continue
            distance = (other ^ value).bit_count()
            if distance <= self.max_distance:
                matches.extend((item_id, distance) for item_id in ids)
        matches.sort(key=lambda match: (match[1], match[0]))
        return matches


class ExactDuplicateFilter(Filter):
    """Drops a candidate whose ground-truth image bytes (sha256) equal a kept sample's."""

    name = "exact_duplicate"

    def __init__(self, kept_by_sha256: dict[str, str]) -> None:
        super().__init__()
        self.kept_by_sha256 = kept_by_sha256  # sha256 -> kept trajectory id (shared, updated by curate)

    def check(self, candidate: Candidate) -> Decision:
        if candidate.image is None:
            return Decision.accept()
        kept = self.kept_by_sha256.get(candidate.image.sha256)
        return Decision.drop("exact_duplicate", kept) if kept is not None else Decision.accept()


class PerceptualDuplicateFilter(Filter):
    """Drops a candidate whose ground-truth image is within the index's distance of a kept one."""

    name = "phash_duplicate"

    def __init__(self, index: PerceptualHashIndex) -> None:
        super().__init__()
        self.index = index

    def check(self, candidate: Candidate) -> Decision:
        if candidate.image is None:
            return Decision.accept()
        matches = self.index.query(candidate.image.phash)
        return Decision.drop("phash_duplicate", matches[0][0]) if matches else Decision.accept()
