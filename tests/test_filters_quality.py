"""Evidence, grounding, subject and reference checks, protocol repairs and empty thinking: hand-built
trajectories in the real protocol text (built with synthesis.agent_protocol's formatters)."""

from __future__ import annotations

import json

import pytest

from filters.base import Decision, first_drop
from filters.curate import CurationState, curate
from filters.evidence import evidence_for, grounding, tool_passages
from filters.facts import extract_facts, supports
from filters.quality_rules import quality_filters, repair_turns
from filters.quality_scores import quality_scores, score_judgement
from filters.subject import added_text, irrelevant_references, subject_aliases
from schemas.config import CurationConfig, SizesConfig
from schemas.protocols import SearchHit
from schemas.rows import ChosenReference, Evidence, Judgement, Message, ReferenceImage, ToolCall, Trajectory
from synthesis.agent_protocol import (
    ImageResultEntry,
    format_browse_result,
    format_error_message,
    format_image_results,
    format_search_results,
)
from tests.test_filters_rules import make_candidate

TASK = (
    "Design a poster featuring Weekly Shōnen Jump (Japanese manga magazine) with the correct year of its "
    "first issue."
)
SUBJECTS = ["Weekly Shōnen Jump"]
JUMP_URL = "http://127.0.0.1/wiki/Weekly_Sh%C5%8Dnen_Jump"
PAGE = (
    "# Weekly Shōnen Jump\n\nWeekly Shōnen Jump is a weekly shōnen manga anthology published in Japan by "
    "Shueisha. It is one of the longest-running manga magazines, with the first issue being released on "
    "July 11, 1968. Its circulation peaked at 6,530,000 copies in 1995."
)
JUMP_IMAGE = ReferenceImage(
    img_id="IMG_001",
    sha256="a" * 64,
    url="http://127.0.0.1/images/jump_cover.png",
    title="Cover of the first issue of Weekly Shōnen Jump",
    page_url=JUMP_URL,
)
GRAVEL_IMAGE = ReferenceImage(
    img_id="IMG_002",
    sha256="b" * 64,
    url="http://127.0.0.1/images/gravel.png",
    title="A heap of gravel",
    page_url="http://127.0.0.1/wiki/Gravel",
)


def call(name: str, arguments: dict, think: str = "Next step.") -> Message:
    body = json.dumps({"name": name, "arguments": arguments})
    return Message(role="assistant", content=f"<think>{think}</think>\n<tool_call>{body}</tool_call>")


def trajectory(
    gen_prompt: str, *, chosen: tuple[str, ...] = ("IMG_001",), extra: list[Message] = (), **changes
) -> Trajectory:  # type: ignore[assignment]
    search = format_search_results(
        [
            (
                "Weekly Shōnen Jump",
                [
                    SearchHit(
                        title="Weekly Shōnen Jump", url=JUMP_URL, snippet="A manga magazine by Shueisha."
                    ),
                    SearchHit(
                        title="Dragon Ball",
                        url="http://127.0.0.1/wiki/Dragon_Ball",
                        snippet="Serialized in Weekly Shōnen Jump from 1984 to 1995, with 519 chapters.",
                    ),
                ],
            )
        ]
    )
    images, attached = format_image_results(
        "Weekly Shōnen Jump",
        [ImageResultEntry(JUMP_IMAGE, "blobs/aa", True), ImageResultEntry(GRAVEL_IMAGE, "blobs/bb", True)],
    )
    messages = [
        Message(role="system", content="protocol"),
        Message(role="user", content=TASK),
        *extra,
        call("search", {"queries": ["Weekly Shōnen Jump"]}),
        Message(role="user", content=search),
        call("browse", {"url": JUMP_URL, "query": "first issue"}),
        Message(role="user", content=format_browse_result(JUMP_URL, "first issue", PAGE)),
        call("image_search", {"query": "Weekly Shōnen Jump"}),
        Message(role="user", content=images, image_ids=attached),
        Message(role="assistant", content="<think>Done.</think>\n<answer>{}</answer>"),
    ]
    fields = {
        "id": "traj-jump",
        "prompt_id": "prompt-jump",
        "teacher": "teacher",
        "messages": messages,
        "tool_calls": [
            ToolCall(round=1, name="search", arguments_json="{}", ok=True),
            ToolCall(round=2, name="browse", arguments_json="{}", ok=True),
            ToolCall(round=3, name="image_search", arguments_json="{}", ok=True),
        ],
        "references": [JUMP_IMAGE, GRAVEL_IMAGE],
        "ending": "answer",
        "gen_prompt": gen_prompt,
        "chosen_references": [ChosenReference(img_id=img_id) for img_id in chosen],
    }
    fields.update(changes)
    return Trajectory.model_validate(fields)


GOOD = (
    "A poster of Weekly Shōnen Jump showing its first issue, released on 11 July 1968 by Shueisha, "
    "with 6530000 copies printed in the corner. Use the first reference image for the cover."
)


# --- facts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "source"),
    [
        ("July 11, 1968", "released on 11 July 1968"),
        ("1968-07-11", "July 11th, 1968"),
        ("6,530,000 copies", "6530000 copies were sold"),
        ("2,000\u00a0m", "about 2000 metres high"),
        ("1.5 million", "1,500,000 people"),
        ("35.5 tonnes", "35.50 t of ore"),
        ("in 3100 BC", "around 3100 BCE"),
        ("Genghis Khan's empire", "founded by Genghis Khan"),
        ("read Weekly Shōnen Jump", "Weekly Shonen Jump"),
    ],
)
def test_number_date_and_name_formats_compare_equal(claim: str, source: str) -> None:
    facts = extract_facts(claim).facts
    assert facts, claim
    assert all(supports(extract_facts(source), fact) for fact in facts)


@pytest.mark.parametrize(
    ("claim", "source"),
    [
        ("July 11, 1968", "released in July 1969"),
        ("2,000 m", "2,000 ft"),
        ("1968", "1986"),
        ("6,530,000 copies", "6,350,000 copies"),
        ("Louis Armstrong", "Neil Armstrong"),
    ],
)
def test_a_different_value_is_not_support(claim: str, source: str) -> None:
    (fact,) = extract_facts(claim).facts
    assert not supports(extract_facts(source), fact)


def test_fact_kinds_of_a_sentence() -> None:
    text = "Neil Alden Armstrong (1930–2012) walked on the Moon on July 21, 1969, 384,400 km from Earth."
    kinds = [(fact.kind, fact.key) for fact in extract_facts(text).facts]
    assert kinds == [
        ("name", "neil alden armstrong"),
        ("year", "1930"),
        ("year", "2012"),
        ("name", "moon"),
        ("date", "1969-07-21"),
        ("quantity", "384400 km"),
        ("name", "earth"),
    ]


# --- evidence --------------------------------------------------------------------------------------


def test_tool_passages_follow_the_protocol_text() -> None:
    passages = tool_passages(trajectory(GOOD))
    assert [(p.tool_call_index, p.url) for p in passages] == [
        (0, JUMP_URL),
        (0, "http://127.0.0.1/wiki/Dragon_Ball"),
        (1, JUMP_URL),
        (2, JUMP_URL),
        (2, "http://127.0.0.1/wiki/Gravel"),
    ]


def test_supported_facts_name_their_tool_call_and_source() -> None:
    rows = evidence_for(trajectory(GOOD), TASK, SUBJECTS)
    found = {(row.fact, row.kind): (row.supported, row.tool_call_index, row.source_url) for row in rows}
    assert found == {
        ("11 July 1968", "date"): (True, 1, JUMP_URL),
        ("Shueisha", "name"): (True, 0, JUMP_URL),
        ("6530000 copies", "quantity"): (True, 1, JUMP_URL),
    }  # "Weekly Shōnen Jump" is in the task prompt: given, not claimed
    assert grounding(rows) == 1.0
    assert len({row.id for row in rows}) == len(rows)


def test_an_unsupported_number_lowers_grounding() -> None:
    made_up = GOOD.replace("6530000", "7,100,000").replace("11 July 1968", "11 July 1986")
    rows = evidence_for(trajectory(made_up), TASK, SUBJECTS)
    unsupported = sorted((row.fact, row.tool_call_index, row.source_url) for row in rows if not row.supported)
    assert unsupported == [("11 July 1986", -1, ""), ("7,100,000 copies", -1, "")]
    assert grounding(rows) == pytest.approx(1 / 3, abs=1e-4)


def test_a_gen_prompt_that_claims_nothing_is_vacuously_grounded() -> None:
    rows = evidence_for(trajectory("A poster of Weekly Shōnen Jump, as in the first reference image."), TASK)
    assert rows == [] and grounding(rows) == 1.0


# --- subject and references ------------------------------------------------------------------------


def test_the_answer_about_another_subject_is_a_mismatch() -> None:
    wrong = (
        TASK + " Verified facts to show accurately: Dragon Ball has 519 chapters, serialized from 1984 "
        "to 1995. Depict Dragon Ball as in the first reference image."
    )
    scores = quality_scores(trajectory(wrong), TASK, SUBJECTS)
    assert scores.grounding == 1.0  # every fact is in a tool response...
    assert scores.subject_match == 0.0  # ...but the teacher's own text is about Dragon Ball
    assert added_text(wrong, TASK).startswith("Verified facts")
    right = quality_scores(trajectory(GOOD), TASK, SUBJECTS)
    assert right.subject_match == 1.0


def test_facts_only_from_sources_that_never_name_the_subject_are_off_subject() -> None:
    # names the subject, but its one fact comes from a passage about something else entirely
    text = "Weekly Shōnen Jump cover in the style of a heap of Gravel."
    scores = quality_scores(trajectory(text), TASK, SUBJECTS)
    assert scores.subject_match == 0.0


def test_an_irrelevant_reference_is_found_by_its_metadata() -> None:
    both = trajectory(GOOD, chosen=("IMG_001", "IMG_002"))
    assert irrelevant_references(both, SUBJECTS) == ["IMG_002"]
    assert quality_scores(both, TASK, SUBJECTS).reference_relevance == 0.5
    assert quality_scores(trajectory(GOOD), TASK, SUBJECTS).reference_relevance == 1.0
    assert quality_scores(trajectory(GOOD, chosen=()), TASK, SUBJECTS).reference_relevance is None


def test_aliases_drop_the_disambiguation() -> None:
    assert subject_aliases(["Peter Pan (character)", "Apollo 11"]) == [
        "Peter Pan (character)",
        "Peter Pan",
        "Apollo 11",
    ]


# --- judgement scores and rules ----------------------------------------------------------------


def judged(trajectory_row: Trajectory, subjects: list[str] = SUBJECTS) -> Judgement:
    plain = Judgement(id="j", image_id="img", trajectory_id=trajectory_row.id, judge="rules", keep=True)
    filled, evidence = score_judgement(plain, trajectory_row, TASK, subjects)
    assert all(isinstance(row, Evidence) for row in evidence)
    assert filled.facts == len(evidence)
    return filled


def candidate_for(trajectory_row: Trajectory, number: int = 1, **changes):
    """A candidate with this trajectory, judged against TASK; its prompt row keeps make_candidate's
    distinct text (so prompt dedup does not fire) unless number is 1."""
    base = make_candidate(number)
    prompt = base.prompt.model_copy(update={"prompt": TASK}) if number == 1 else base.prompt
    row = trajectory_row.model_copy(update={"id": base.trajectory.id, "prompt_id": prompt.id, **changes})
    return base.__class__(
        prompt=prompt, trajectory=row, image=base.image, judgement=judged(row), blob=base.blob
    )


def decision(candidate, config: CurationConfig = CurationConfig()) -> Decision:
    return first_drop(quality_filters(config), candidate)


def test_a_good_row_keeps_every_split() -> None:
    assert decision(candidate_for(trajectory(GOOD))) == Decision(keep=True)


def test_each_reason() -> None:
    made_up = GOOD.replace("6530000", "7,100,000").replace("11 July 1968", "11 July 1986")
    assert decision(candidate_for(trajectory(made_up))).reason == "rule_ungrounded_facts"
    assert decision(candidate_for(trajectory(made_up)), CurationConfig(min_grounding=0.3)).keep
    wrong = TASK + " Facts: Dragon Ball has 519 chapters. Depict Dragon Ball."
    assert decision(candidate_for(trajectory(wrong))).reason == "rule_subject_mismatch"
    gravel = candidate_for(trajectory(GOOD, chosen=("IMG_002",)))
    assert decision(gravel).reason == "rule_reference_irrelevant"


def prose_then_correction() -> list[Message]:
    return [
        Message(role="assistant", content="I think I should search, but here is some prose."),
        Message(role="user", content=format_error_message("missing <think> block at the start")),
    ]


def test_a_prose_turn_and_its_correction_limit_the_row_to_rl() -> None:
    repaired = trajectory(GOOD, extra=prose_then_correction())
    assert repair_turns(repaired) == 1  # seen in the messages even when the count was not recorded
    limited = decision(candidate_for(repaired))
    assert (limited.keep, limited.splits, limited.reason) == (True, ("rl",), "rule_protocol_repair")
    counted = decision(candidate_for(trajectory(GOOD), protocol_repairs=2))
    assert counted.splits == ("rl",)


def test_empty_thinking_is_rl_only_unless_allowed() -> None:
    silent = trajectory(GOOD, extra=[])
    messages = list(silent.messages)
    messages[2] = Message(role="assistant", content=messages[2].content.replace("Next step.", ""))
    empty = silent.model_copy(update={"messages": messages})
    assert decision(candidate_for(empty)) == Decision.only(("rl",), "rule_empty_thinking")
    assert decision(candidate_for(empty), CurationConfig(allow_empty_thinking=True)) == Decision(keep=True)
    recorded = decision(candidate_for(trajectory(GOOD), empty_think_turns=1))
    assert recorded.reason == "rule_empty_thinking"


def test_curate_sends_limited_rows_to_rl_and_drops_them_when_rl_is_full() -> None:
    config = CurationConfig()
    good = [candidate_for(trajectory(GOOD), number) for number in (2, 5)]
    repaired = [candidate_for(trajectory(GOOD, extra=prose_then_correction()), number) for number in (6, 7)]
    candidates = good + repaired
    samples = curate(candidates, CurationState.empty(config), config, SizesConfig(sft=3, rl=1), "curator")
    outcome = [(s.trajectory_id, s.status, s.split, s.reason) for s in samples]
    assert outcome == [
        ("traj002", "kept", "sft", ""),
        ("traj005", "kept", "sft", ""),
        ("traj006", "kept", "rl", ""),
        ("traj007", "dropped", "", "rule_protocol_repair"),  # SFT has room, but not for this row
    ]


# --- the hand-labelled sample of bench/quality.py ----------------------------------------------------


def test_the_labelled_sample_is_complete_and_says_how_it_was_labelled() -> None:
    from bench.quality import LABEL_OF, load_labels

    header, rows = load_labels()
    assert any("How I labelled" in line for line in header)
    assert len(rows) == 50 and len({row["trajectory"]["id"] for row in rows}) == 50
    for row in rows:
        assert set(row["labels"]) == set(LABEL_OF.values())
        Trajectory.model_validate(row["trajectory"])


def test_rules_on_the_labelled_sample_flag_only_labelled_rows() -> None:
    from bench.quality import labelled_precision

    table = {
        reason: (flagged, true, false, missed)
        for reason, flagged, true, false, missed in labelled_precision(CurationConfig())
    }
    assert table["rule_subject_mismatch"][0] > 0 and table["rule_reference_irrelevant"][0] > 0
    for reason, (flagged, true, false, missed) in table.items():
        assert false <= 0.1 * max(flagged, 1), reason  # precision >= 0.9
        assert missed <= 0.1 * max(true + missed, 1), reason  # recall >= 0.9


def test_a_multi_hop_partner_missing_from_topics_is_found_among_linked_titles() -> None:
    from filters.subject import prompt_subjects
    from schemas.rows import Prompt

    prompt = Prompt(
        id="p",
        topic_ids=["main", "partner"],
        category="history",
        difficulty="hard",
        prompt="A chart of Neil Armstrong and the crewed Moon landing connected to it.",
        required_facts=["1969", "Apollo 11", "Buzz Aldrin"],
        writer="w",
    )
    topics = {"main": ("Neil Armstrong", ["Apollo 11", "Buzz Aldrin", "Purdue University"])}
    assert prompt_subjects(prompt, topics) == ["Neil Armstrong", "Apollo 11", "Buzz Aldrin"]
    topics["partner"] = ("Apollo 11", [])
    assert prompt_subjects(prompt, topics) == ["Neil Armstrong", "Apollo 11"]


@pytest.mark.parametrize(
    ("subject", "own_text", "source_url"),
    [
        (
            "Charlie Chaplin",
            "Sir Charles Spencer Chaplin Jr. was an English comic actor in 1977.",
            "Charlie_Chaplin",
        ),
        (
            "D. W. Griffith",
            "David Wark Griffith was an American film director born in 1875.",
            "D._W._Griffith",
        ),
        (
            "Swallowtail butterfly",
            "Swallowtail butterflies include over 550 species.",
            "Swallowtail_butterfly",
        ),
        (
            "Quechuan languages",
            "Quechua is a language family; 13.9% of Peruvians speak it.",
            "Quechuan_languages",
        ),
    ],
)
def test_a_subject_named_another_way_still_matches(subject: str, own_text: str, source_url: str) -> None:
    task = f"Create a poster of {subject} with its key dates."
    url = f"http://127.0.0.1/wiki/{source_url}"
    row = trajectory(
        f"{task} {own_text}",
        chosen=(),
        messages=[
            Message(role="system", content="protocol"),
            Message(role="user", content=task),
            call("browse", {"url": url, "query": "facts"}),
            Message(role="user", content=format_browse_result(url, "facts", own_text)),
        ],
        tool_calls=[ToolCall(round=1, name="browse", arguments_json="{}", ok=True)],
    )
    assert quality_scores(row, task, [subject]).subject_match == 1.0
