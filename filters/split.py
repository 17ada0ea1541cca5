"""SFT/RL split assignment: deterministic, disjoint, stratified by category, incremental.

Each kept candidate goes to the split whose share in the candidate's category lags most behind the
global target ratio sft:rl (largest deficit; ties go to SFT), so every category is split in the
proportion of the targets. When one split's global target is reached the other takes everything;
when both are reached the candidate is dropped with reason `split_quota_full`. Counts already
assigned in earlier runs are the starting point, so a later run continues the same assignment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

SplitName = Literal["sft", "rl"]
SPLITS: tuple[SplitName, SplitName] = ("sft", "rl")
SPLIT_QUOTA_FULL = "split_quota_full"


class SplitAssigner:
    """Assigns categories' candidates to "sft"/"rl" given global targets and counts so far."""

    def __init__(self, sft: int, rl: int, counts: Mapping[str, Mapping[str, int]] | None = None) -> None:
        if sft < 0 or rl < 0:
            raise ValueError("split targets must be >= 0")
        self.targets: dict[SplitName, int] = {"sft": sft, "rl": rl}
        self.counts: dict[str, dict[SplitName, int]] = {}
        for category, per_split in (counts or {}).items():
            self.counts[category] = {split: int(per_split.get(split, 0)) for split in SPLITS}

    def total(self, split: SplitName) -> int:
        return sum(per_split[split] for per_split in self.counts.values())

    def is_full(self, split: SplitName) -> bool:
        return self.total(split) >= self.targets[split]

    def choose(self, category: str, allowed: Collection[str] = SPLITS) -> SplitName | None:
        """The split the next candidate of `category` would get (None when every allowed one is full).

        `allowed` limits the candidate to some splits; the others are treated as full for it."""
        open_splits = [split for split in SPLITS if split in allowed and not self.is_full(split)]
        if not open_splits:
            return None
        if len(open_splits) == 1:
            return open_splits[0]
        per_split = self.counts.get(category, {"sft": 0, "rl": 0})
        after = per_split["sft"] + per_split["rl"] + 1
        whole = self.targets["sft"] + self.targets["rl"]
        # deficit of a split, times `whole`: what its share should be after this one, minus what it has.
        sft_deficit = after * self.targets["sft"] - per_split["sft"] * whole
        rl_deficit = after * self.targets["rl"] - per_split["rl"] * whole
        return "sft" if sft_deficit >= rl_deficit else "rl"

    def assign(self, category: str, allowed: Collection[str] = SPLITS) -> SplitName | None:
        """Choose a split for one candidate of `category` and count it; None when no allowed split has room."""
        split = self.choose(category, allowed)
        if split is not None:
            self.counts.setdefault(category, {"sft": 0, "rl": 0})[split] += 1
        return split
