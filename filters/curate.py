"""The curation stage core: candidates in, one `Sample` (kept with a split, or dropped with a
reason) per candidate out.

Order: rules -> quality rules (split limits, grounding, subject, references) -> judgement -> exact
duplicate -> perceptual duplicate -> prompt near-duplicate -> benchmark decontamination -> split. Dedup compares against ALREADY KEPT samples only, held in a
`CurationState` that the caller carries from batch to batch (or rebuilds from the warehouse with
`CurationState.from_kept`). Candidates are processed in sorted trajectory-id order, so cutting the
sorted work into consecutive batches gives the same samples as one big batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from filters.base import Candidate, Filter, first_drop
from filters.decontamination import BenchmarkIndex, DecontaminationFilter
from filters.image_dedup import ExactDuplicateFilter, PerceptualDuplicateFilter, PerceptualHashIndex
from filters.prompt_dedup import PromptDedupIndex, PromptNearDuplicateFilter
from filters.quality_rules import quality_filters
from filters.rules import JudgementFilter, rule_filters
from filters.split import SPLIT_QUOTA_FULL, SplitAssigner
from schemas.config import CurationConfig, SizesConfig
from schemas.ids import content_id
from schemas.rows import Sample


class KeptRow(NamedTuple):
    """A previously kept sample with what dedup needs: its image's phash and sha256, its prompt."""

    sample: Sample
    phash: str
    sha256: str
    prompt_text: str


@dataclass
class CurationState:
    """Indexes of the samples kept so far (by this curator) and the split counts."""

    phash_index: PerceptualHashIndex
    prompt_index: PromptDedupIndex
    kept_by_sha256: dict[str, str] = field(default_factory=dict)  # sha256 -> kept trajectory id
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> split -> n
    kept_trajectories: set[str] = field(default_factory=set)
    benchmark: BenchmarkIndex | None = None

    @classmethod
    def empty(cls, config: CurationConfig, benchmark: BenchmarkIndex | None = None) -> CurationState:
        """A state with nothing kept. Reads `config.decontamination_files` unless `benchmark` is given."""
        if benchmark is None and config.decontamination_files:
            benchmark = BenchmarkIndex.from_files(config.decontamination_files, config.decontamination_ngram)
        return cls(
            phash_index=PerceptualHashIndex(config.phash_max_distance),
            prompt_index=PromptDedupIndex(config.prompt_jaccard_threshold),
            benchmark=benchmark,
        )

    @classmethod
    def from_kept(
        cls,
        rows: Iterable[KeptRow | tuple[Sample, str, str, str]],
        config: CurationConfig,
        benchmark: BenchmarkIndex | None = None,
    ) -> CurationState:
        """Rebuild the state from kept samples, given as (sample, image phash, image sha256, prompt text)."""
        state = cls.empty(config, benchmark)
        for row in sorted((KeptRow(*row) for row in rows), key=lambda row: row.sample.trajectory_id):
            if row.sample.status != "kept" or row.sample.split not in ("sft", "rl"):
                raise ValueError(f"sample {row.sample.id} is not a kept sample with a split")
            state.remember(row)
        return state

    def remember(self, row: KeptRow) -> None:
        """Add one kept sample to every index and to the split counts."""
        trajectory_id = row.sample.trajectory_id
        if trajectory_id in self.kept_trajectories:
            raise ValueError(f"trajectory {trajectory_id} is already kept")
        self.kept_trajectories.add(trajectory_id)
        self.kept_by_sha256.setdefault(row.sha256, trajectory_id)
        self.phash_index.add(trajectory_id, row.phash)
        self.prompt_index.add(trajectory_id, row.prompt_text)
        per_split = self.split_counts.setdefault(row.sample.category, {"sft": 0, "rl": 0})
        per_split[row.sample.split] = per_split.get(row.sample.split, 0) + 1

    def check_matches(self, config: CurationConfig) -> None:
        if self.phash_index.max_distance != config.phash_max_distance:
            raise ValueError("state's perceptual-hash distance differs from config.phash_max_distance")
        if self.prompt_index.threshold != config.prompt_jaccard_threshold:
            raise ValueError("state's prompt threshold differs from config.prompt_jaccard_threshold")
        if self.benchmark is None and config.decontamination_files:
            raise ValueError("config names decontamination files but the state has no benchmark index")


def curation_filters(state: CurationState, config: CurationConfig) -> list[Filter]:
    """Every filter before the split, in curation order, bound to the state's indexes."""
    filters: list[Filter] = [
        *rule_filters(config.min_image_std),
        *quality_filters(config),
        JudgementFilter(),
        ExactDuplicateFilter(state.kept_by_sha256),
        PerceptualDuplicateFilter(state.phash_index),
        PromptNearDuplicateFilter(state.prompt_index),
    ]
    if state.benchmark is not None:
        filters.append(DecontaminationFilter(state.benchmark, config.decontamination_threshold))
    return filters


def curate(
    candidates: list[Candidate],
    state: CurationState,
    config: CurationConfig,
    sizes: SizesConfig,
    curator_fingerprint: str,
) -> list[Sample]:
    """One `Sample` per candidate, in sorted trajectory-id order; kept ones are added to `state`."""
    state.check_matches(config)
    ordered = sorted(candidates, key=lambda candidate: candidate.id)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.id == after.id:
            raise ValueError(f"trajectory {after.id} appears twice in one curation batch")
    for candidate in ordered:
        if candidate.id in state.kept_trajectories:
            raise ValueError(f"trajectory {candidate.id} was already kept; curate only pending ones")

    filters = curation_filters(state, config)
    # every candidate's perceptual neighbours in one vectorised pass; answers stay the sequential ones
    state.phash_index.prefetch([c.image.phash for c in ordered if c.image is not None])
    assigner = SplitAssigner(sizes.sft, sizes.rl, state.split_counts)
    samples: list[Sample] = []
    for candidate in ordered:
        decision = first_drop(filters, candidate)
        reason, duplicate_of = decision.reason, decision.duplicate_of
        split: Literal["sft", "rl", ""] = ""
        if decision.keep:
            chosen = assigner.assign(candidate.category, decision.splits)
            if chosen is not None:
                split, reason = chosen, ""
            elif decision.limited and assigner.choose(candidate.category) is not None:
                pass  # a split it may not join has room: dropped for the limit's reason
            else:
                reason = SPLIT_QUOTA_FULL
        sample = Sample(
            id=content_id(candidate.trajectory.id, curator_fingerprint),
            trajectory_id=candidate.trajectory.id,
            prompt_id=candidate.prompt.id,
            image_id=candidate.image.id if candidate.image is not None else "",
            category=candidate.category,
            status="kept" if split else "dropped",
            reason=reason,
            duplicate_of=duplicate_of,
            split=split,
            curator=curator_fingerprint,
        )
        if split:
            assert candidate.image is not None  # the image rule drops candidates without one
            state.remember(
                KeptRow(sample, candidate.image.phash, candidate.image.sha256, candidate.prompt.prompt)
            )
        samples.append(sample)
    return samples
