"""The one small base of curation: a `Filter` writes only `check(candidate) -> Decision`.

Every drop carries a machine-readable reason (`rule_no_search`, `phash_duplicate`, ...) that ends up
in the `samples` table and the funnel; nothing is silently gone (datatrove's `dropped_{reason}`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas.rows import Image, Judgement, Prompt, Trajectory

ALL_SPLITS: tuple[str, ...] = ("sft", "rl")


@dataclass(frozen=True)
class Decision:
    """A filter's verdict. `duplicate_of` names the kept trajectory a duplicate collided with.

    A keep may be limited to some splits (`Decision.only`): the row is sound but not for every use,
    e.g. a trajectory that needed a protocol correction is no SFT row but its answer can be an RL
    row. `reason` then says why; it becomes the drop reason when none of those splits has room."""

    keep: bool
    reason: str = ""
    duplicate_of: str = ""
    splits: tuple[str, ...] = ALL_SPLITS

    @classmethod
    def accept(cls) -> Decision:
        return cls(keep=True)

    @classmethod
    def drop(cls, reason: str, duplicate_of: str = "") -> Decision:
        if not reason:
            raise ValueError("a drop needs a machine-readable reason")
        return cls(keep=False, reason=reason, duplicate_of=duplicate_of)

    @classmethod
    def only(cls, splits: tuple[str, ...], reason: str) -> Decision:
        """Keep, but only in `splits` (a subset of "sft", "rl"), because of `reason`."""
        if not reason:
            raise ValueError("a split limit needs a machine-readable reason")
        if not set(splits) <= set(ALL_SPLITS):
            raise ValueError(f"unknown split in {splits!r}")
        return cls(keep=True, reason=reason, splits=tuple(split for split in ALL_SPLITS if split in splits))

    @property
    def limited(self) -> bool:
        return self.keep and self.splits != ALL_SPLITS


@dataclass(frozen=True)
class Candidate:
    """Everything curation needs to decide on one trajectory.

    `image` is the ground-truth `Image` row (None when none was painted, e.g. the teacher did not
    answer); `blob` is its bytes or a zero-argument callable returning them (read lazily, only by
    the filters that decode the image).
    """

    prompt: Prompt
    trajectory: Trajectory
    image: Image | None = None
    judgement: Judgement | None = None
    blob: bytes | Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.trajectory.id

    @property
    def category(self) -> str:
        return self.prompt.category

    def image_bytes(self) -> bytes | None:
        """The ground-truth image's bytes, or None when there is no image or no accessor."""
        if self.blob is None:
            return None
        if callable(self.blob):
            return self.blob()
        return self.blob


class Filter:
    """Base of every curation filter. Subclasses set `name` and write `check`; curation runs them in
    order through `first_drop` (`filters/curate.py`), and the outcome of each candidate is its
    `Sample` row (the warehouse's `funnel` view counts them)."""

    name: str = "filter"

    def check(self, candidate: Candidate) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, candidate: Candidate) -> Decision:
        return self.check(candidate)


def first_drop(filters: Iterable[Filter], candidate: Candidate) -> Decision:
    """Run `filters` in order and return the first drop, or a keep when every filter keeps.

    The keep carries every split limit met on the way: the splits all of them allow, and the first
    limiting filter's reason."""
    splits, reason = ALL_SPLITS, ""
    for item in filters:
        decision = item(candidate)
        if not decision.keep:
            return decision
        if decision.limited:
            splits = tuple(split for split in splits if split in decision.splits)
            reason = reason or decision.reason
    return Decision(keep=True, reason=reason, splits=splits)
