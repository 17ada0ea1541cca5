"""LLMJudge against the scripted OpenAI-compatible server (real HTTP, real openai SDK)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image as PILImage

from filters.llm_judge import KnowGenScores, LLMJudge, overall_score
from schemas.config import JudgeConfig, LLMEndpointConfig
from schemas.errors import ModelOutputError
from schemas.protocols import JudgeInput
from schemas.rows import ChosenReference, Image, Message, Prompt, ReferenceImage, Trajectory
from testkit.servers.openai_server import Completion, ScriptedOpenAIServer
from warehouse.blobs import BlobStore


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def scores(f=1, v=1, t=0.5, a=1, explanation="ok") -> str:
    return json.dumps(
        {
            "faithfulness": f,
            "visual_correctness": v,
            "text_accuracy": t,
            "aesthetics": a,
            "explanation": explanation,
        }
    )


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as scripted:
        yield scripted


@pytest.fixture
def item_and_blobs(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    reference_sha = blobs.put(png((200, 10, 10)))
    unused_sha = blobs.put(png((10, 200, 10)))
    image_sha = blobs.put(png((10, 10, 200), (640, 480)))
    prompt = Prompt(
        id="p1",
        topic_ids=["t1"],
        category="architecture",
        difficulty="medium",
        prompt="Draw the Eiffel Tower with its height in metres written below it.",
        required_facts=["height 330 m"],
        writer="w",
    )
    trajectory = Trajectory(
        id="tr1",
        prompt_id="p1",
        teacher="t",
        messages=[Message(role="user", content=prompt.prompt)],
        references=[
            ReferenceImage(img_id="IMG_001", sha256=reference_sha, url="http://example.test/a.png"),
            ReferenceImage(img_id="IMG_002", sha256=unused_sha, url="http://example.test/b.png"),
        ],
        ending="answer",
        gen_prompt="The Eiffel Tower as in the first reference image, caption '330 m'.",
        chosen_references=[ChosenReference(img_id="IMG_001", note="tower")],
    )
    image = Image(
        id="img1", kind="ground_truth", sha256=image_sha, width=640, height=480, format="PNG", phash="0" * 16
    )
    return JudgeInput(prompt=prompt, trajectory=trajectory, image=image), blobs


def make_judge(server, blobs, threshold=0.5) -> LLMJudge:
    endpoint = LLMEndpointConfig(base_url=server.base_url, model="judge-vlm", max_retries=1)
    return LLMJudge(endpoint, JudgeConfig(kind="llm", keep_threshold=threshold), blobs, fingerprint="judgefp")


def test_overall_is_the_knowgen_weighting():
    value = KnowGenScores(
        faithfulness=1, visual_correctness=0.5, text_accuracy=0, aesthetics=1, explanation=""
    )
    assert overall_score(value) == 0.4
    with pytest.raises(ValueError):
        KnowGenScores(faithfulness=0.7, visual_correctness=1, text_accuracy=1, aesthetics=1, explanation="")
    schema = KnowGenScores.model_json_schema()
    assert schema["properties"]["faithfulness"]["enum"] == [0, 0.5, 1]
    assert schema["additionalProperties"] is False


@pytest.mark.slow
def test_judge_scores_keeps_and_sends_texts_and_images(server, item_and_blobs):
    item, blobs = item_and_blobs
    server.reply(scores())
    judgement = asyncio.run(make_judge(server, blobs).judge(item))
    assert judgement.model_dump() == {
        "id": judgement.id,
        "image_id": "img1",
        "trajectory_id": "tr1",
        "judge": "judgefp",
        "faithfulness": 1.0,
        "visual_correctness": 1.0,
        "text_accuracy": 0.5,
        "aesthetics": 1.0,
        "overall": 0.8,
        "keep": True,
        "reason": "",
        # the deterministic scores are filled by the judge stage (filters.quality_scores), not the VLM
        "grounding": None,
        "facts": 0,
        "supported_facts": 0,
        "subject_match": None,
        "reference_relevance": None,
        "image_std": None,
    }
    (request,) = server.requests
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["response_format"]["json_schema"]["name"] == "knowgen_scores"
    user = request.messages[1]["content"]
    text = user[0]["text"]
    assert item.prompt.prompt in text and item.trajectory.gen_prompt in text and "- height 330 m" in text
    images = [part["image_url"]["url"] for part in user if part["type"] == "image_url"]
    assert len(images) == 2  # the one chosen reference, then the judged image
    decoded = [PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) for url in images]
    assert decoded[0].getpixel((0, 0)) == (200, 10, 10)
    assert decoded[1].getpixel((0, 0)) == (10, 10, 200) and decoded[1].size == (640, 480)


@pytest.mark.slow
def test_low_score_is_dropped_with_reason(server, item_and_blobs):
    item, blobs = item_and_blobs
    server.reply(scores(f=1, v=0, t=0.5, a=1))  # 0.1 + 0 + 0.2 + 0.1 = 0.4
    judgement = asyncio.run(make_judge(server, blobs, threshold=0.5).judge(item))
    assert (judgement.overall, judgement.keep, judgement.reason) == (0.4, False, "judge_low_score")


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad",
    [
        "The image looks great, I would give it full marks.",  # prose instead of JSON
        '{"faithfulness": 1, "visual_correctness": 1, "text_acc',  # truncated JSON
        scores(v=0.7),  # a score that is not 0, 0.5 or 1
        '{"faithfulness": 1}',  # missing dimensions
    ],
    ids=["prose", "truncated_json", "bad_score", "missing_fields"],
)
def test_bad_output_is_repaired_once(server, item_and_blobs, bad):
    item, blobs = item_and_blobs
    server.reply(bad, "```json\n" + scores(t=1) + "\n```")
    judgement = asyncio.run(make_judge(server, blobs).judge(item))
    assert judgement.overall == 1.0
    first, second = server.requests
    assert second.messages[:2] == first.messages
    assert second.messages[2] == {"role": "assistant", "content": bad}
    assert second.messages[3]["content"].startswith("Your last reply could not be used: ")


@pytest.mark.slow
def test_two_bad_outputs_raise_model_output_error(server, item_and_blobs):
    item, blobs = item_and_blobs
    server.reply("no JSON here", Completion('{"faithfulness": 1, "vis', finish_reason="length"))
    with pytest.raises(ModelOutputError, match="knowgen_scores: no valid JSON after one repair .*cut off"):
        asyncio.run(make_judge(server, blobs).judge(item))
    assert len(server.requests) == 2
