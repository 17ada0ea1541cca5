"""The deterministic scores every judgement carries, whatever the judge: grounding, subject match,
reference relevance and the image check; and the `evidence` rows grounding is computed from.

`score_judgement` is what the judge stage (`flows.tasks.judge_images`) calls after the configured
judge (rules or VLM) returned its verdict: it fills the score fields of that `Judgement` and returns
the evidence rows to write next to it, so the warehouse has numbers even with no VLM and curation
(`filters.quality_rules`) reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from filters.evidence import evidence_for, grounding
from filters.rules import pixel_std
from filters.subject import reference_relevance, subject_aliases, subject_match
from schemas.rows import Evidence, Judgement, Trajectory


@dataclass(frozen=True)
class QualityScores:
    grounding: float
    facts: int
    supported_facts: int
    subject_match: float | None
    reference_relevance: float | None
    evidence: list[Evidence]


def quality_scores(
    trajectory: Trajectory,
    task_prompt: str,
    subjects: Sequence[str],
    evidence: Sequence[Evidence] | None = None,
) -> QualityScores:
    """Evidence rows and the text scores of one answered trajectory (pure). `evidence` replaces the
    deterministic extractor's rows (the LLM claim extractor's, `filters.claim_extractor`)."""
    rows = (
        list(evidence)
        if evidence is not None
        else evidence_for(trajectory, task_prompt, subject_aliases(subjects))
    )
    return QualityScores(
        grounding=grounding(rows),
        facts=len(rows),
        supported_facts=sum(row.supported for row in rows),
        subject_match=subject_match(trajectory, task_prompt, subjects, rows),
        reference_relevance=reference_relevance(trajectory, subjects),
        evidence=rows,
    )


def image_std(image: bytes | None) -> float | None:
    if image is None:
        return None
    try:
        return round(pixel_std(image), 4)
    except Exception:  # undecodable: the image rule in curation drops it with its own reason
        return None


def score_judgement(
    judgement: Judgement,
    trajectory: Trajectory,
    task_prompt: str,
    subjects: Sequence[str],
    image: bytes | None = None,
    evidence: Sequence[Evidence] | None = None,
) -> tuple[Judgement, list[Evidence]]:
    """`judgement` with its deterministic scores filled in, and the evidence rows behind them."""
    scores = quality_scores(trajectory, task_prompt, subjects, evidence)
    filled = judgement.model_copy(
        update={
            "grounding": scores.grounding,
            "facts": scores.facts,
            "supported_facts": scores.supported_facts,
            "subject_match": scores.subject_match,
            "reference_relevance": scores.reference_relevance,
            "image_std": image_std(image),
        }
    )
    return filled, scores.evidence
