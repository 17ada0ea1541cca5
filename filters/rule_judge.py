"""The offline judge: no model scores the image; the rule filters in curation do the checking.

It still writes a `Judgement` row per image (scores empty, keep=True), so the warehouse shows which
judge saw every image and swapping in the VLM judge (`filters.llm_judge`) changes nothing else.
"""

from __future__ import annotations

from schemas.config import JudgeConfig
from schemas.ids import content_id, fingerprint
from schemas.protocols import JudgeInput, ModelClient
from schemas.rows import Judgement


class RuleOnlyJudge:
    def __init__(self, config: JudgeConfig | None = None, *, judge_fingerprint: str = ""):
        self.config = config or JudgeConfig()
        self.fingerprint = judge_fingerprint or fingerprint({"judge": self.config, "llm": None})

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: the offline default calls no model."""
        return {}

    async def judge(self, item: JudgeInput) -> Judgement:
        return Judgement(
            id=content_id(item.image.id, self.fingerprint),
            image_id=item.image.id,
            trajectory_id=item.trajectory.id,
            judge=self.fingerprint,
            keep=True,
        )
