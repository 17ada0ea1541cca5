"""Rule filters: one test per reason, exact reasons; plus builders the curation tests reuse."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from filters.base import Candidate, Decision, Filter, first_drop
from filters.image_dedup import phash_hex
from filters.rules import AnsweredFilter, ImageFilter, JudgementFilter, pixel_std, rule_filters
from schemas.ids import sha256_bytes
from schemas.rows import (
    ChosenReference,
    Image,
    Judgement,
    Message,
    Prompt,
    ReferenceImage,
    ToolCall,
    Trajectory,
)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def picture(seed: int, size: int = 64) -> bytes:
    """A structured, non-blank PNG that differs clearly (in pHash) from other seeds."""
    generator = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    canvas = np.zeros((size, size, 3))
    for _ in range(4):
        fx, fy, phase = generator.uniform(0.5, 3.0, size=2).tolist() + [generator.uniform(0, 6.3)]
        canvas += generator.uniform(20, 60, size=3) * np.sin(2 * np.pi * (fx * x + fy * y) + phase)[..., None]
    canvas -= canvas.min()
    return png(canvas / canvas.max() * 255)


def make_prompt(
    prompt_id: str, text: str = "Draw the Eiffel Tower", category: str = "architecture"
) -> Prompt:
    return Prompt(
        id=prompt_id, topic_ids=["t1"], category=category, difficulty="easy", prompt=text, writer="w"
    )


def make_trajectory(trajectory_id: str, prompt_id: str, **changes: object) -> Trajectory:
    fields: dict[str, object] = {
        "id": trajectory_id,
        "prompt_id": prompt_id,
        "teacher": "teacher",
        "messages": [
            Message(role="system", content="protocol"),
            Message(role="user", content="task"),
            Message(role="assistant", content="<think>Search it.</think>\n<tool_call>{}</tool_call>"),
            Message(
                role="user",
                content='<tool_response>\n### Results for "x"\n[Eiffel Tower](http://127.0.0.1/wiki/'
                "Eiffel_Tower) The Eiffel Tower is a lattice tower in Paris.\n</tool_response>",
            ),
        ],
        "tool_calls": [
            ToolCall(round=1, name="search", arguments_json='{"queries": ["x"]}', ok=True),
            ToolCall(round=2, name="image_search", arguments_json='{"query": "x"}', ok=True),
        ],
        "references": [ReferenceImage(img_id="IMG_001", sha256="a" * 64, url="http://127.0.0.1/1.png")],
        "ending": "answer",
        "gen_prompt": "The Eiffel Tower, as in the first reference image",
        "chosen_references": [ChosenReference(img_id="IMG_001")],
    }
    fields.update(changes)
    return Trajectory.model_validate(fields)


def make_image(image_id: str, trajectory_id: str, data: bytes) -> Image:
    try:
        phash = phash_hex(data)
    except OSError:  # broken test bytes: the rules must catch them, the row still needs a hash
        phash = "0" * 16
    return Image(
        id=image_id,
        kind="ground_truth",
        sha256=sha256_bytes(data),
        width=64,
        height=64,
        format="PNG",
        phash=phash,
        trajectory_id=trajectory_id,
    )


def make_candidate(
    number: int,
    *,
    text: str | None = None,
    category: str = "architecture",
    data: bytes | None = None,
    judgement: Judgement | None = None,
    with_image: bool = True,
    **trajectory_changes: object,
) -> Candidate:
    """Candidate `traj{number:03d}` of prompt `prompt{number:03d}`; a distinct picture per number."""
    trajectory_id, prompt_id = f"traj{number:03d}", f"prompt{number:03d}"
    data = picture(number) if data is None else data
    text = (
        f"Draw landmark number {number} " + " ".join(f"fact{number}x{word}" for word in range(8))
        if text is None
        else text
    )
    image = make_image(f"img{number:03d}", trajectory_id, data) if with_image else None
    return Candidate(
        prompt=make_prompt(prompt_id, text, category),
        trajectory=make_trajectory(trajectory_id, prompt_id, **trajectory_changes),
        image=image,
        judgement=judgement,
        blob=(lambda: data) if with_image else None,
    )


def reason(candidate: Candidate, min_std: float = 2.0) -> str:
    filters = [*rule_filters(min_std), JudgementFilter()]
    return first_drop(filters, candidate).reason


def judgement(keep: bool, why: str = "") -> Judgement:
    return Judgement(id="j", image_id="img", trajectory_id="traj", judge="judge", keep=keep, reason=why)


def test_a_good_candidate_passes_every_rule() -> None:
    assert first_drop([*rule_filters(2.0), JudgementFilter()], make_candidate(1)) == Decision(keep=True)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ending": "no_answer", "gen_prompt": ""}, "teacher_no_answer"),
        ({"ending": "answer_parse_failed"}, "teacher_answer_parse_failed"),
        ({"ending": "max_response_length_exceeded"}, "teacher_max_response_length_exceeded"),
        ({"gen_prompt": "   "}, "rule_answer_unparsed"),
        ({"tool_calls": []}, "rule_no_search"),
        (
            {"tool_calls": [ToolCall(round=1, name="search", arguments_json="{}", ok=False),
                            ToolCall(round=2, name="image_search", arguments_json="{}", ok=True)]},
            "rule_no_search",
        ),
        ({"tool_calls": [ToolCall(round=1, name="search", arguments_json="{}", ok=True)]}, "rule_no_image_search"),
        ({"chosen_references": [ChosenReference(img_id="IMG_009")]}, "rule_unknown_reference"),
    ],
)  # fmt: skip
def test_trajectory_rules(changes: dict[str, object], expected: str) -> None:
    assert reason(make_candidate(1, **changes)) == expected


def test_image_rules() -> None:
    assert reason(make_candidate(1, with_image=False)) == "rule_no_image"
    assert reason(make_candidate(1, data=b"\x89PNG\r\n\x1a\nnot really a png")) == "rule_image_undecodable"
    truncated = picture(1)[:100]
    assert reason(make_candidate(1, data=truncated)) == "rule_image_undecodable"
    flat = png(np.full((64, 64, 3), 200))
    assert pixel_std(flat) == 0.0
    assert reason(make_candidate(1, data=flat)) == "rule_image_blank"
    noise = png(np.random.default_rng(0).integers(199, 202, size=(64, 64, 3)))  # std ~0.8
    assert 0.5 < pixel_std(noise) < 2.0
    assert reason(make_candidate(1, data=noise), min_std=2.0) == "rule_image_blank"
    assert reason(make_candidate(1, data=noise), min_std=0.5) == ""


def test_judgement_rule() -> None:
    assert reason(make_candidate(1, judgement=judgement(True))) == ""
    assert reason(make_candidate(1, judgement=judgement(False))) == "judge_low_score"
    assert reason(make_candidate(1, judgement=judgement(False, "judge_wrong_text"))) == "judge_wrong_text"


def test_first_drop_reports_the_first_filter_in_curation_order() -> None:
    broken = make_candidate(2, ending="error", with_image=False)  # fails two rules
    assert AnsweredFilter()(broken).reason == "teacher_error"
    assert ImageFilter(2.0)(broken).reason == "rule_no_image"
    assert first_drop(rule_filters(2.0), broken) == Decision.drop("teacher_error")
    assert first_drop(rule_filters(2.0), make_candidate(1)) == Decision(keep=True)


def test_blob_may_be_bytes_and_drop_needs_a_reason() -> None:
    data = picture(5)
    candidate = Candidate(
        prompt=make_prompt("p"),
        trajectory=make_trajectory("t", "p"),
        image=make_image("i", "t", data),
        blob=data,
    )
    assert ImageFilter(2.0).check(candidate) == Decision(keep=True)
    with pytest.raises(ValueError):
        Decision.drop("")
    assert isinstance(ImageFilter(2.0), Filter)


def test_image_rule_decides_from_the_judges_stored_std_and_decodes_only_near_the_threshold() -> None:
    """The judge stage stored the image's pixel std (rounded): curation need not decode the image
    again, unless the rounded value is too close to the threshold to decide."""
    data = picture(5)
    true_std = pixel_std(data)

    def unread() -> bytes:
        raise AssertionError("the image was decoded although the judgement stores its std")

    def candidate(stored: float | None, blob: object) -> Candidate:
        scored = Judgement(id="j", image_id="i", trajectory_id="t", judge="J", keep=True, image_std=stored)
        return Candidate(
            prompt=make_prompt("p"),
            trajectory=make_trajectory("t", "p"),
            image=make_image("i", "t", data),
            judgement=scored,
            blob=blob,  # type: ignore[arg-type]
        )

    assert ImageFilter(2.0).check(candidate(true_std, unread)) == Decision(keep=True)
    assert ImageFilter(true_std + 1).check(candidate(true_std, unread)).reason == "rule_image_blank"
    # within the rounding's reach of the threshold: decoded, and the exact std decides
    assert (
        ImageFilter(true_std + 1e-5).check(candidate(round(true_std, 4), data)).reason == "rule_image_blank"
    )
    assert ImageFilter(true_std - 1e-5).check(candidate(round(true_std, 4), data)) == Decision(keep=True)
    with pytest.raises(AssertionError):
        ImageFilter(true_std).check(candidate(round(true_std, 4), unread))
    # no stored std (an old row, or the bytes did not decode at judge time): decoded as before
    assert ImageFilter(2.0).check(candidate(None, data)) == Decision(keep=True)
