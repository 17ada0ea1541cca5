"""Image dedup: exact (sha256) and near-duplicate (64-bit perceptual hash within a Hamming distance).

`PerceptualHashIndex` is a multi-index hash: the 64 bits are cut into `max_distance + 1` bands, and
by the pigeonhole principle two hashes within `max_distance` bits agree exactly on at least one band.
A query looks up only the ids sharing a band with it and checks their true distance, so it never
scans the whole index.
"""

from __future__ import annotations

import io
from collections import defaultdict

from filters.base import Candidate, Decision, Filter

HASH_BITS = 64
HASH_HEX_LENGTH = HASH_BITS // 4


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


def _band_layout(bands: int) -> list[tuple[int, int]]:
    """(shift, mask) of each band: `bands` runs of nearly equal width covering the 64 bits."""
    base, extra = divmod(HASH_BITS, bands)
    layout: list[tuple[int, int]] = []
    shift = 0
    for index in range(bands):
        width = base + (1 if index < extra else 0)
        layout.append((shift, (1 << width) - 1))
        shift += width
    return layout


class PerceptualHashIndex:
    """Ids by perceptual hash; `query` returns every id within `max_distance` bits."""

    def __init__(self, max_distance: int) -> None:
        if max_distance < 0:
            raise ValueError("max_distance must be >= 0")
        self.max_distance = max_distance
        # With max_distance >= 64 every hash matches every other: no band can narrow the search.
        self._layout = _band_layout(max_distance + 1) if max_distance < HASH_BITS else []
        self._buckets: list[defaultdict[int, list[str]]] = [defaultdict(list) for _ in self._layout]
        self._hashes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._hashes

    def add(self, item_id: str, phash: str) -> None:
        value = parse_phash(phash)
        known = self._hashes.get(item_id)
        if known is not None:
            if known != value:
                raise ValueError(f"id {item_id!r} is already indexed with another hash")
            return
        self._hashes[item_id] = value
        for (shift, mask), buckets in zip(self._layout, self._buckets, strict=True):
            buckets[(value >> shift) & mask].append(item_id)

    def _candidates(self, value: int) -> set[str]:
        if not self._layout:
            return set(self._hashes)
        found: set[str] = set()
        for (shift, mask), buckets in zip(self._layout, self._buckets, strict=True):
            found.update(buckets.get((value >> shift) & mask, ()))
        return found

    def query(self, phash: str) -> list[tuple[str, int]]:
        """Every (id, distance) with distance <= max_distance, nearest first (ties by id)."""
        value = parse_phash(phash)
        matches = []
        for item_id in self._candidates(value):
            distance = (self._hashes[item_id] ^ value).bit_count()
            if distance <= self.max_distance:
                matches.append((item_id, distance))
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
