"""Toolbox, episode loop and the scripted teacher, against in-memory backends."""

from __future__ import annotations

import asyncio
import json

from schemas.config import TeacherConfig
from schemas.ids import content_id
from schemas.rows import Prompt
from synthesis.agent_protocol import ParsedToolCall, final_answer_message, parse_model_turn
from synthesis.episode import ModelReply, run_episode
from synthesis.scripted_teacher import ScriptedTeacher, named_entities
from synthesis.toolbox import EpisodeMemory, Toolbox
from testkit.synthesis_fakes import MemoryBlobs, fake_tools

PROMPT = Prompt(
    id="p1",
    topic_ids=["t1"],
    category="architecture",
    difficulty="medium",
    prompt="Design a museum poster about the Eiffel Tower showing its height in metres and the years it was "
    "built, with Gustave Eiffel beside it.",
    writer="w",
)


def run(coroutine):
    return asyncio.run(coroutine)


def call(name: str, **arguments) -> ParsedToolCall:
    return parse_model_turn(
        f"<think>x</think><tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"
    ).tool_call


# --- toolbox ---------------------------------------------------------------------------------------


def test_toolbox_rejects_bad_calls_with_tool_errors():
    toolbox, memory = Toolbox(fake_tools()), EpisodeMemory()
    cases = [
        (call("fly", to="moon"), "unknown tool 'fly'; the tools are search, image_search and browse"),
        (call("search", query="x"), "missing argument(s): queries"),
        (call("search", queries=["x"], top_k=11), "top_k must be an integer from 1 to 10"),
        (call("search", queries=[], top_k=3), "queries must be a non-empty list of non-empty strings"),
        (call("image_search", query="x", size="big"), "unexpected argument(s): size"),
        (call("browse", url="ftp://x", query="q"), "url must start with http:// or https://"),
        (parse_model_turn("<think>x</think><tool_call>{oops</tool_call>").tool_call,
         "tool_call is not valid JSON (Expecting property name enclosed in double quotes)"),
    ]  # fmt: skip
    for parsed, error in cases:
        outcome = run(toolbox.execute(parsed, 2, memory))
        assert outcome.message.content == f"<tool_response>\nToolError: {error}\n</tool_response>"
        assert (outcome.record.ok, outcome.record.error, outcome.record.round) == (False, error, 2)
    assert memory.seen_queries == set()


def test_toolbox_search_skips_repeats_and_reports_backend_failures():
    toolbox, memory = Toolbox(fake_tools()), EpisodeMemory()
    first = run(toolbox.execute(call("search", queries=["Gustave Eiffel"], top_k=1), 1, memory))
    assert first.message.content == (
        "<tool_response>\n"
        '### Results for "Gustave Eiffel"\n'
        "[Gustave Eiffel](http://corpus.test/wiki/Gustave_Eiffel) Gustave Eiffel was a French civil engineer born "
        "in 1832 in Dijon.\n"
        "</tool_response>"
    )
    second = run(toolbox.execute(call("search", queries=["gustave  EIFFEL", "fail"], top_k=1), 2, memory))
    assert second.message.content == (
        "<tool_response>\n"
        'Skipped "gustave  EIFFEL": this query was already used.\n\n'
        'Search for "fail" failed: search backend down\n'
        "</tool_response>"
    )
    assert (second.record.ok, second.record.error) == (False, "fail: search backend down")
    repeated = run(toolbox.execute(call("search", queries=["Gustave Eiffel"]), 3, memory))
    assert repeated.repeated and not repeated.record.ok


def test_toolbox_image_search_registers_images_and_skips_broken_ones():
    blobs = MemoryBlobs()
    toolbox, memory = Toolbox(fake_tools(blobs), blobs), EpisodeMemory()
    outcome = run(toolbox.execute(call("image_search", query="Gustave Eiffel", top_k=5), 1, memory))
    assert outcome.message.image_ids == ["IMG_001"]
    assert outcome.message.content.count("<image>") == 1
    assert (
        "Skipped an image that could not be used (http://corpus.test/img/broken.png): image is undecodable"
        in (outcome.message.content)
    )
    [reference] = outcome.new_references
    assert (reference.img_id, reference.url, reference.page_url) == (
        "IMG_001",
        "http://corpus.test/img/gustave.png",
        "http://corpus.test/wiki/Gustave_Eiffel",
    )
    [row] = outcome.new_images
    assert (row.kind, row.sha256, row.id) == (
        "reference",
        reference.sha256,
        content_id("reference", reference.sha256),
    )
    assert f"local path: blobs/{reference.sha256[:2]}/{reference.sha256}" in outcome.message.content
    assert outcome.record.ok
    assert toolbox.model_image(reference)[:4] == b"\x89PNG"


def test_toolbox_browse_returns_relevant_passages_or_refuses():
    toolbox, memory = Toolbox(fake_tools()), EpisodeMemory()
    outcome = run(
        toolbox.execute(
            call("browse", url="http://corpus.test/wiki/Eiffel_Tower", query="how tall metres"), 1, memory
        )
    )
    assert outcome.message.content == (
        "<tool_response>\n"
        '### Content of http://corpus.test/wiki/Eiffel_Tower relevant to "how tall metres"\n'
        # a page that fits the budget comes back whole when any of it is relevant
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.\n"
        "It was designed by the company of Gustave Eiffel and built from 1887 to 1889.\n"
        "The tower is 330 metres tall and was the tallest man-made structure until 1930.\n"
        "Tickets are sold at the base.\n"
        "</tool_response>"
    )
    refused = run(
        toolbox.execute(call("browse", url="http://corpus.test/wiki/Eiffel_Tower", query="opera"), 2, memory)
    )
    assert 'has no content relevant to "opera"' in refused.message.content and refused.record.ok
    missing = run(toolbox.execute(call("browse", url="http://corpus.test/nope", query="x"), 3, memory))
    assert not missing.record.ok and "could not read http://corpus.test/nope" in missing.message.content


# --- episode loop ----------------------------------------------------------------------------------


class Replay:
    """A 'model' replaying fixed responses; records what it was shown."""

    def __init__(self, *texts: str, truncated_at: int = -1):
        self.texts = list(texts)
        self.seen: list[list] = []
        self.truncated_at = truncated_at

    async def __call__(self, messages):
        self.seen.append(messages)
        index = len(self.seen) - 1
        return ModelReply(
            self.texts[index], prompt_tokens=10, completion_tokens=2, truncated=index == self.truncated_at
        )


def episode(model, config=TeacherConfig()):
    return run(run_episode(PROMPT, model, Toolbox(fake_tools()), teacher="T", config=config)).trajectory


def tool(name, **arguments):
    return f"<think>{name} {arguments}</think><tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


ANSWER = '<think>done</think><answer>{"gen_prompt": "A poster.", "reference_images": [{"img_id": "IMG_001"}]}</answer>'


def test_episode_answer_requires_image_search_first():
    trajectory = episode(
        Replay(ANSWER.replace("done", "early"), tool("image_search", query="Eiffel Tower"), ANSWER)
    )
    assert trajectory.ending == "answer" and trajectory.gen_prompt == "A poster."
    assert trajectory.messages[3].content == (
        "You have not called image_search yet. Call image_search at least once (one search per subject) before "
        "you answer."
    )
    assert (trajectory.model_calls, trajectory.prompt_tokens, trajectory.completion_tokens) == (3, 30, 6)
    assert [m.role for m in trajectory.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


def test_episode_forces_the_answer_when_the_budget_is_spent():
    model = Replay(tool("image_search", query="Eiffel Tower"), tool("search", queries=["a"]), ANSWER)
    trajectory = episode(model, TeacherConfig(max_tool_calls=2))
    assert trajectory.ending == "answer"
    last_user = model.seen[2][-1]
    assert last_user.role == "user" and last_user.content.endswith("\n\n" + final_answer_message())
    assert last_user.content.startswith("<tool_response>")


def test_episode_tool_call_after_the_final_message_is_no_answer():
    trajectory = episode(
        Replay(tool("search", queries=["a"]), tool("search", queries=["b"])), TeacherConfig(max_model_calls=2)
    )
    assert (trajectory.ending, trajectory.model_calls, len(trajectory.tool_calls)) == ("no_answer", 2, 1)


def test_episode_endings():
    assert (
        episode(Replay(tool("search", queries=["a"]), tool("search", queries=["a"]))).ending
        == "repeated_response"
    )
    assert episode(Replay("nonsense", "more nonsense")).ending == "error"
    assert (
        episode(Replay(tool("search", queries=["a"]), truncated_at=0)).ending
        == "max_response_length_exceeded"
    )
    bad_id = ANSWER.replace("IMG_001", "IMG_007")
    assert episode(Replay(tool("image_search", query="Eiffel Tower"), bad_id)).ending == "answer_parse_failed"
    repeats = Replay(
        tool("image_search", query="Eiffel Tower"),
        tool("image_search", query="eiffel tower"),
        tool("image_search", query="EIFFEL TOWER"),
    )
    assert episode(repeats).ending == "repeated_response"


def test_episode_format_error_gets_one_correction():
    trajectory = episode(Replay("no tags", tool("image_search", query="Eiffel Tower"), ANSWER))
    assert trajectory.ending == "answer"
    assert trajectory.messages[3].content.startswith(
        "Your last response could not be used: missing <think> block"
    )


# --- scripted teacher ------------------------------------------------------------------------------


def test_named_entities():
    assert named_entities(PROMPT.prompt) == ["Eiffel Tower", "Gustave Eiffel"]
    assert named_entities("Create a poster of The Battle of Hastings in 1066. Show King Harold.") == [
        "Battle of Hastings",
        "King Harold",
    ]
    assert named_entities("a chart of Apollo 11 and Apollo 11") == ["Apollo 11"]


def test_scripted_teacher_full_trajectory():
    result = run(ScriptedTeacher().run(PROMPT, fake_tools()))
    trajectory = result.trajectory
    teacher = ScriptedTeacher()
    assert (
        trajectory.id == content_id("p1", teacher.fingerprint) and trajectory.teacher == teacher.fingerprint
    )
    assert trajectory.ending == "answer"
    assert [(c.name, c.ok) for c in trajectory.tool_calls] == [
        ("search", True),
        ("browse", True),
        ("image_search", True),
        ("image_search", True),
    ]
    assert json.loads(trajectory.tool_calls[0].arguments_json) == {
        "queries": ["Eiffel Tower", "Gustave Eiffel"],
        "top_k": 5,
    }
    assert trajectory.gen_prompt == (
        "Design a museum poster about the Eiffel Tower showing its height in metres and the years it was built, with "
        "Gustave Eiffel beside it. The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed "
        "by the company of Gustave Eiffel and built from 1887 to 1889. The tower is 330 metres tall and was the "
        "tallest man-made structure until 1930. Depict Eiffel Tower as in the first reference image. Depict Gustave "
        "Eiffel as in the second reference image."
    )
    assert (trajectory.protocol_repairs, trajectory.empty_think_turns) == (0, 0)
    assert [(c.img_id, c.note) for c in trajectory.chosen_references] == [
        ("IMG_001", "Eiffel Tower"),
        ("IMG_003", "Gustave Eiffel"),
    ]
    assert [r.img_id for r in trajectory.references] == ["IMG_001", "IMG_002", "IMG_003"]
    assert [image.kind for image in result.reference_images] == ["reference"] * 3
    assert (
        trajectory.messages[0].role == "system"
        and "Today's date is 2026-11-25." in trajectory.messages[0].content
    )
    for message in trajectory.messages:
        assert message.content.count("<image>") == len(message.image_ids)
        if message.role == "assistant":
            assert parse_model_turn(message.content).ok


def test_scripted_teacher_is_deterministic():
    first = run(ScriptedTeacher().run(PROMPT, fake_tools()))
    second = run(ScriptedTeacher().run(PROMPT, fake_tools()))
    assert first == second
    other = run(ScriptedTeacher(TeacherConfig(date="2027-01-01")).run(PROMPT, fake_tools()))
    assert other.trajectory.id != first.trajectory.id
