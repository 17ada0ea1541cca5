"""Curation rules on how a trajectory was made and what its answer claims.

- `rule_protocol_repair`: the episode needed a correction (a reply that was not a protocol turn, an
  answer before any image search, a tool call that broke a rule). An SFT row teaches every turn it
  holds, so such a trajectory is no SFT row; its answer can still be an RL row (a split limit).
- `rule_empty_thinking`: a model turn with an empty `<think>` block (native tool calling with no
  reasoning). RL only, unless `curation.allow_empty_thinking`.
- `rule_ungrounded_facts`: the share of the gen_prompt's facts found in the tool responses
  (`Judgement.grounding`, from the `evidence` rows) is below `curation.min_grounding`.
- `rule_subject_mismatch`: the answer is about another subject than the prompt's.
- `rule_reference_irrelevant`: a chosen reference's title, source page and file name name no subject.

The scores come from the judgement (`filters.quality_scores`, filled by the judge stage). A judgement
written before the scores existed has None there: grounding is then computed from the trajectory
(pure, cheap), the subject and reference rules keep the row (the subject's titles are not at hand).
"""

from __future__ import annotations

import re

from filters.base import Candidate, Decision, Filter
from filters.evidence import evidence_for, grounding
from schemas.config import CurationConfig
from schemas.rows import Trajectory
from synthesis.agent_protocol import load_template

PROTOCOL_REPAIR = "rule_protocol_repair"
EMPTY_THINKING = "rule_empty_thinking"
UNGROUNDED_FACTS = "rule_ungrounded_facts"
SUBJECT_MISMATCH = "rule_subject_mismatch"
REFERENCE_IRRELEVANT = "rule_reference_irrelevant"
MIN_SUBJECT_MATCH = 0.5

_EMPTY_THINK = re.compile(r"^\s*<think>\s*</think>")
# the correction messages the episode sends (synthesis/templates/format_error.txt, synthesis.episode)
_CORRECTIONS = (
    load_template("format_error.txt").split("$error", 1)[0].strip(),
    "You have not called image_search yet.",
)


def repair_turns(trajectory: Trajectory) -> int:
    """Correction messages in the trajectory: the recorded count, or what its user turns show."""
    seen = sum(
        message.content.count(correction)
        for message in trajectory.messages[2:]
        if message.role == "user"
        for correction in _CORRECTIONS
    )
    return max(trajectory.protocol_repairs, seen)


def empty_think_turns(trajectory: Trajectory) -> int:
    """Assistant turns with an empty <think> block: the recorded count, or what the turns show."""
    seen = sum(
        1
        for message in trajectory.messages
        if message.role == "assistant" and _EMPTY_THINK.match(message.content)
    )
    return max(trajectory.empty_think_turns, seen)


class ProtocolRepairFilter(Filter):
    name = "protocol_repair"

    def check(self, candidate: Candidate) -> Decision:
        if repair_turns(candidate.trajectory):
            return Decision.only(("rl",), PROTOCOL_REPAIR)
        return Decision.accept()


class EmptyThinkingFilter(Filter):
    name = "empty_thinking"

    def check(self, candidate: Candidate) -> Decision:
        if empty_think_turns(candidate.trajectory):
            return Decision.only(("rl",), EMPTY_THINKING)
        return Decision.accept()


def grounding_of(candidate: Candidate) -> float:
    """The judgement's grounding score, or computed from the trajectory when the judgement has none."""
    judgement = candidate.judgement
    if judgement is not None and judgement.grounding is not None:
        return judgement.grounding
    return grounding(evidence_for(candidate.trajectory, candidate.prompt.prompt))


class UngroundedFactsFilter(Filter):
    name = "ungrounded_facts"

    def __init__(self, min_grounding: float) -> None:
        super().__init__()
        self.min_grounding = min_grounding

    def check(self, candidate: Candidate) -> Decision:
        if grounding_of(candidate) < self.min_grounding:
            return Decision.drop(UNGROUNDED_FACTS)
        return Decision.accept()


class SubjectMismatchFilter(Filter):
    name = "subject_mismatch"

    def check(self, candidate: Candidate) -> Decision:
        judgement = candidate.judgement
        if judgement is not None and judgement.subject_match is not None:
            if judgement.subject_match < MIN_SUBJECT_MATCH:
                return Decision.drop(SUBJECT_MISMATCH)
        return Decision.accept()


class ReferenceIrrelevantFilter(Filter):
    name = "reference_irrelevant"

    def check(self, candidate: Candidate) -> Decision:
        judgement = candidate.judgement
        if judgement is not None and judgement.reference_relevance is not None:
            if judgement.reference_relevance < 1.0:
                return Decision.drop(REFERENCE_IRRELEVANT)
        return Decision.accept()


def quality_filters(config: CurationConfig) -> list[Filter]:
    """The rules above in curation order: split limits first, then the drops."""
    filters: list[Filter] = [ProtocolRepairFilter()]
    if not config.allow_empty_thinking:
        filters.append(EmptyThinkingFilter())
    filters += [
        UngroundedFactsFilter(config.min_grounding),
        SubjectMismatchFilter(),
        ReferenceIrrelevantFilter(),
    ]
    return filters


QUALITY_REASONS = (PROTOCOL_REPAIR, EMPTY_THINKING, UNGROUNDED_FACTS, SUBJECT_MISMATCH, REFERENCE_IRRELEVANT)


def rule_hits(candidate: Candidate, config: CurationConfig) -> list[str]:
    """Every quality rule that drops or limits `candidate`, each checked on its own (not first-drop)."""
    hits = []
    for rule in quality_filters(config):
        decision = rule.check(candidate)
        if not decision.keep or decision.limited:
            hits.append(decision.reason)
    return hits
