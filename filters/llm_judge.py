"""The VLM judge: scores a synthesized ground-truth image on the KnowGen dimensions.

The model sees the original task prompt, the grounded prompt, the facts the image must show, the
chosen reference images and the synthesized image (images as base64 data URLs), and answers JSON
with faithfulness, visual correctness, text accuracy and aesthetics, each exactly 0, 0.5 or 1.
overall = 0.1·faithfulness + 0.4·visual_correctness + 0.4·text_accuracy + 0.1·aesthetics;
keep = overall >= keep_threshold, else reason `judge_low_score`.

Unusable output gets one repair turn, then raises ModelOutputError; a failed call raises
ModelCallError (the flow records either as a failure row for the image).
"""

from __future__ import annotations

import base64
from string import Template
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.config import JudgeConfig, LLMEndpointConfig
from schemas.ids import content_id
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import JudgeInput, ModelClient
from schemas.rows import Judgement
from synthesis.agent_protocol import load_template
from synthesis.llm_client import LLMClient, Usage
from synthesis.llm_structured import structured_chat
from synthesis.response_cache import ResponseCache
from synthesis.toolbox import downscale_for_model

WEIGHTS = {"faithfulness": 0.1, "visual_correctness": 0.4, "text_accuracy": 0.4, "aesthetics": 0.1}
REFERENCE_PIXELS = 160_000
JUDGED_IMAGE_PIXELS = 1_048_576  # the judged image keeps more detail (readable text)
LOW_SCORE = "judge_low_score"
ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _one_of_three(value: float) -> float:
    if value not in (0, 0.5, 1):
        raise ValueError("must be exactly 0, 0.5 or 1")
    return float(value)


Score = Annotated[float, AfterValidator(_one_of_three), Field(json_schema_extra={"enum": [0, 0.5, 1]})]


class KnowGenScores(BaseModel):
    model_config = ConfigDict(extra="forbid")

    faithfulness: Score
    visual_correctness: Score
    text_accuracy: Score
    aesthetics: Score
    explanation: str


def overall_score(scores: KnowGenScores) -> float:
    return round(sum(weight * getattr(scores, name) for name, weight in WEIGHTS.items()), 4)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def judge_messages(item: JudgeInput, reference_images: list[bytes], image: bytes) -> list[dict[str, Any]]:
    """The judge's messages (pure): instructions, the texts, the references, then the judged image."""
    count = len(reference_images)
    if count:
        names = ", ".join(ORDINALS[i] if i < len(ORDINALS) else f"#{i + 1}" for i in range(count))
        reference_note = (
            f"The {count} reference image(s) follow in order ({names}); the last image is the one to judge."
        )
    else:
        reference_note = "There are no reference images; the only image is the one to judge."
    facts = "\n".join(f"- {fact}" for fact in item.prompt.required_facts) or "(none listed)"
    text = Template(load_template("llm_judge_user.txt")).substitute(
        task_prompt=item.prompt.prompt,
        gen_prompt=item.trajectory.gen_prompt or "(none)",
        required_facts=facts,
        reference_note=reference_note,
    )
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for index, png in enumerate(reference_images):
        parts.append({"type": "text", "text": f"Reference image {index + 1}:"})
        parts.append({"type": "image_url", "image_url": {"url": data_url(png)}})
    parts.append({"type": "text", "text": "The synthesized image to judge:"})
    parts.append({"type": "image_url", "image_url": {"url": data_url(image)}})
    return [
        {"role": "system", "content": load_template("llm_judge_system.txt")},
        {"role": "user", "content": parts},
    ]


class LLMJudge:
    """`Judge` backend over an OpenAI-compatible vision model."""

    def __init__(
        self,
        endpoint: LLMEndpointConfig,
        config: JudgeConfig | None = None,
        blobs: Any = None,
        *,
        fingerprint: str | None = None,
        client: LLMClient | None = None,
        cache: ResponseCache | None = None,
    ):
        self.endpoint = endpoint
        self.config = config or JudgeConfig(kind="llm")
        self.blobs = blobs
        self.fingerprint = fingerprint or config_fingerprint({"judge": self.config, "llm": endpoint})
        self.client = client or LLMClient(endpoint, cache=cache)
        self.usage = Usage()

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: this backend's model client, under the role its usage is recorded as."""
        return {"judge": self.client}

    def _reference_pngs(self, item: JudgeInput) -> list[bytes]:
        by_id = {reference.img_id: reference for reference in item.trajectory.references}
        pngs = []
        for chosen in item.trajectory.chosen_references:
            reference = by_id.get(chosen.img_id)
            if reference is not None:
                pngs.append(downscale_for_model(self.blobs.read(reference.sha256), REFERENCE_PIXELS))
        return pngs

    async def judge(self, item: JudgeInput) -> Judgement:
        image = downscale_for_model(self.blobs.read(item.image.sha256), JUDGED_IMAGE_PIXELS)
        messages = judge_messages(item, self._reference_pngs(item), image)
        result = await structured_chat(
            self.client, messages, KnowGenScores, name="knowgen_scores", strict=True
        )
        self.usage = self.usage + result.usage
        scores = result.value
        overall = overall_score(scores)
        keep = overall >= self.config.keep_threshold
        return Judgement(
            id=content_id(item.image.id, self.fingerprint),
            image_id=item.image.id,
            trajectory_id=item.trajectory.id,
            judge=self.fingerprint,
            faithfulness=scores.faithfulness,
            visual_correctness=scores.visual_correctness,
            text_accuracy=scores.text_accuracy,
            aesthetics=scores.aesthetics,
            overall=overall,
            keep=keep,
            reason="" if keep else LOW_SCORE,
        )
