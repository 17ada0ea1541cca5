"""Rule filters: cheap checks on a trajectory and its ground-truth image, no model involved.

Reasons: `teacher_<ending>` (the episode did not end with an answer), `rule_answer_unparsed`,
`rule_no_search`, `rule_no_image_search`, `rule_unknown_reference`, `rule_no_image`,
`rule_image_undecodable`, `rule_image_blank`, and the judge's own reason (default `judge_low_score`).
"""

from __future__ import annotations

import io

import numpy as np

from filters.base import Candidate, Decision, Filter

JUDGE_LOW_SCORE = "judge_low_score"


class AnsweredFilter(Filter):
    """The teacher's episode ended with an answer."""

    name = "answered"

    def check(self, candidate: Candidate) -> Decision:
        ending = candidate.trajectory.ending
        return Decision.accept() if ending == "answer" else Decision.drop(f"teacher_{ending}")


class AnswerParsedFilter(Filter):
    """The answer carried a non-empty grounded generation prompt."""

    name = "answer_parsed"

    def check(self, candidate: Candidate) -> Decision:
        if candidate.trajectory.gen_prompt.strip():
            return Decision.accept()
        return Decision.drop("rule_answer_unparsed")


class UsedSearchFilter(Filter):
    """At least one successful `search` call and one successful `image_search` call."""

    name = "used_search"

    def check(self, candidate: Candidate) -> Decision:
        used = {call.name for call in candidate.trajectory.tool_calls if call.ok}
        if "search" not in used:
            return Decision.drop("rule_no_search")
        if "image_search" not in used:
            return Decision.drop("rule_no_image_search")
        return Decision.accept()


class ReferencesKnownFilter(Filter):
    """Every chosen reference id is one of the images the episode saw."""

    name = "references_known"

    def check(self, candidate: Candidate) -> Decision:
        seen = {reference.img_id for reference in candidate.trajectory.references}
        if all(chosen.img_id in seen for chosen in candidate.trajectory.chosen_references):
            return Decision.accept()
        return Decision.drop("rule_unknown_reference")


def pixel_std(data: bytes) -> float:
    """Standard deviation of an image's RGB pixel values. Raises on bytes Pillow cannot decode."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        image.load()
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    if pixels.size == 0:
        return 0.0
    return float(pixels.std())


# `Judgement.image_std` is rounded to 4 decimal places (filters/quality_scores.py `image_std`).
STORED_STD_PRECISION = 1e-3


class ImageFilter(Filter):
    """A ground-truth image exists, decodes with Pillow and is not blank (pixel std >= min_std)."""

    name = "image"

    def __init__(self, min_std: float) -> None:
        super().__init__()
        self.min_std = min_std

    def check(self, candidate: Candidate) -> Decision:
        if candidate.image is None:
            return Decision.drop("rule_no_image")
        stored = candidate.judgement.image_std if candidate.judgement is not None else None
        if stored is not None and abs(stored - self.min_std) > STORED_STD_PRECISION:
            # the judge stage decoded these bytes and stored their std (rounded to 4 places): the same
            # decision without decoding the image again; too close to the threshold, decode and see
            return Decision.accept() if stored >= self.min_std else Decision.drop("rule_image_blank")
        data = candidate.image_bytes()
        if data is None:
            return Decision.drop("rule_no_image")
        try:
            std = pixel_std(data)
        except Exception:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError...)
            return Decision.drop("rule_image_undecodable")
        if std < self.min_std:
            return Decision.drop("rule_image_blank")
        return Decision.accept()


class JudgementFilter(Filter):
    """A judge's keep=False becomes a drop with the judge's reason. No judgement (rules-only) keeps."""

    name = "judgement"

    def check(self, candidate: Candidate) -> Decision:
        judgement = candidate.judgement
        if judgement is None or judgement.keep:
            return Decision.accept()
        return Decision.drop(judgement.reason or JUDGE_LOW_SCORE)


def rule_filters(min_image_std: float) -> list[Filter]:
    """The rule filters in the order curation runs them (cheap text checks before image decoding)."""
    return [
        AnsweredFilter(),
        AnswerParsedFilter(),
        UsedSearchFilter(),
        ReferencesKnownFilter(),
        ImageFilter(min_image_std),
    ]
