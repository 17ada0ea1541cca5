"""LLMTeacher against the scripted OpenAI-compatible server: the Gen-Searcher loop over real HTTP and
the real openai SDK, with the shared protocol, toolbox and in-memory tool backends."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging

import pytest
from PIL import Image as PILImage

from schemas.config import LLMEndpointConfig, TeacherConfig
from schemas.errors import ModelCallError
from schemas.rows import Prompt
from synthesis.agent_protocol import final_answer_message, system_prompt
from synthesis.llm_client import NativeToolCall
from synthesis.llm_teacher import LLMTeacher, protocol_text
from testkit.servers.openai_server import Completion, RawBody, ScriptedOpenAIServer, Status, tool_call
from testkit.synthesis_fakes import MemoryBlobs, fake_tools

KEY = "sk-teacher-secret-0c7d1"
PROMPT = Prompt(
    id="p-eiffel",
    topic_ids=["t1"],
    category="architecture",
    difficulty="medium",
    prompt="Draw the Eiffel Tower with a plaque stating its height in metres and the year it was completed.",
    writer="w",
)


def call(name: str, arguments: dict, think: str = "Next step.") -> str:
    return (
        f"<think>{think}</think>\n<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"
    )


def answer(value: dict, think: str = "I have what I need.") -> str:
    return f"<think>{think}</think>\n<answer>{json.dumps(value)}</answer>"


SEARCH = call("search", {"queries": ["Eiffel Tower height"], "top_k": 3})
BROWSE = call("browse", {"url": "http://corpus.test/wiki/Eiffel_Tower", "query": "height completion year"})
IMAGES = call("image_search", {"query": "Eiffel Tower", "top_k": 2})
GOOD_ANSWER = answer(
    {
        "gen_prompt": "The Eiffel Tower as in the first reference image, with a plaque reading '330 m, completed 1889'.",
        "reference_images": [{"img_id": "IMG_001", "note": "the tower"}],
    }
)


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as scripted:
        yield scripted


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", KEY)


def make_teacher(server, blobs, **teacher_options) -> LLMTeacher:
    endpoint = LLMEndpointConfig(
        base_url=server.base_url,
        model="teacher-vlm",
        api_key_env="TEACHER_KEY",
        max_retries=2,
        max_response_bytes=20_000,
    )
    config = TeacherConfig(kind="llm", **teacher_options)
    return LLMTeacher(endpoint, config, fingerprint="tfp", blobs=blobs)


def run_teacher(server, *replies, **teacher_options):
    server.reply(*replies)
    blobs = MemoryBlobs()
    teacher = make_teacher(server, blobs, **teacher_options)
    return asyncio.run(teacher.run(PROMPT, fake_tools(blobs))), teacher


def test_protocol_text_of_a_native_call():
    calls = [NativeToolCall(id="c1", name="search", arguments='{"queries": ["a"]}')]
    assert (
        protocol_text("Looking.", calls)
        == '<think>Looking.</think>\n<tool_call>{"name": "search", "arguments": {"queries": ["a"]}}</tool_call>'
    )
    broken = [NativeToolCall(id="c1", name="search", arguments='{"queries": [')]
    assert (
        protocol_text("", broken)
        == '<think></think>\n<tool_call>{"name": "search", "arguments": "{\\"queries\\": ["}</tool_call>'
    )


@pytest.mark.slow
def test_full_episode_with_images_attached_as_data_urls(server):
    result, teacher = run_teacher(
        server,
        Completion(SEARCH, prompt_tokens=100, completion_tokens=10),
        Completion(BROWSE, prompt_tokens=200, completion_tokens=10),
        Completion(IMAGES, prompt_tokens=300, completion_tokens=10),
        Completion(GOOD_ANSWER, prompt_tokens=400, completion_tokens=30),
    )
    trajectory = result.trajectory
    assert trajectory.ending == "answer"
    assert trajectory.gen_prompt.startswith("The Eiffel Tower as in the first reference image")
    assert [c.img_id for c in trajectory.chosen_references] == ["IMG_001"]
    assert [(c.name, c.ok) for c in trajectory.tool_calls] == [
        ("search", True),
        ("browse", True),
        ("image_search", True),
    ]
    assert [r.img_id for r in trajectory.references] == ["IMG_001", "IMG_002"]
    assert (trajectory.model_calls, trajectory.prompt_tokens, trajectory.completion_tokens) == (4, 1000, 60)
    assert [m.role for m in trajectory.messages] == ["system", "user"] + ["assistant", "user"] * 3 + [
        "assistant"
    ]
    assert trajectory.messages[0].content == system_prompt("2026-11-25")
    assert trajectory.messages[7].image_ids == ["IMG_001", "IMG_002"]
    assert len(result.reference_images) == 2
    assert teacher.usage.calls == 4 and teacher.usage.prompt_tokens == 1000

    requests = server.chat_requests()
    assert requests[0].messages == [
        {"role": "system", "content": system_prompt("2026-11-25")},
        {"role": "user", "content": PROMPT.prompt},
    ]
    assert (
        requests[1]
        .messages[3]["content"]
        .startswith('<tool_response>\n### Results for "Eiffel Tower height"')
    )
    image_turn = requests[3].messages[7]["content"]
    kinds = [part["type"] for part in image_turn]
    assert kinds.count("image_url") == 2 and "<image>" not in json.dumps(image_turn)
    assert kinds.index("image_url") > 0  # placed where the placeholder was, after the IMG_001 lines
    url = next(part for part in image_turn if part["type"] == "image_url")["image_url"]["url"]
    decoded = PILImage.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
    assert decoded.format == "PNG" and decoded.size == (48, 48)
    assert requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.slow
def test_native_tool_calling_round_trip(server):
    result, _ = run_teacher(
        server,
        Completion(
            "I will look up the height.",
            tool_calls=[tool_call("search", {"queries": ["Eiffel Tower height"]})],
        ),
        Completion(
            "<think>Now images.</think>",
            tool_calls=[tool_call("image_search", {"query": "Eiffel Tower"}, "c2")],
        ),
        Completion(GOOD_ANSWER),
        native_tool_calling=True,
    )
    trajectory = result.trajectory
    assert trajectory.ending == "answer"
    assert trajectory.messages[2].content == (
        '<think>I will look up the height.</think>\n<tool_call>{"name": "search", "arguments": {"queries": ["Eiffel Tower height"]}}</tool_call>'
    )
    first, second, third = server.chat_requests()
    assert first.body["tools"][0]["function"]["name"] == "search" and first.body["tool_choice"] == "auto"
    assert second.messages[2] == {
        "role": "assistant",
        "content": "I will look up the height.",
        "tool_calls": [
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "search", "arguments": '{"queries": ["Eiffel Tower height"]}'},
            }
        ],
    }
    assert second.messages[3]["role"] == "tool" and second.messages[3]["tool_call_id"] == "call_2"
    roles = [m["role"] for m in third.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "user"]
    assert sum(part["type"] == "image_url" for part in third.messages[6]["content"]) == 2


@pytest.mark.slow
def test_unknown_tool_and_malformed_arguments_become_tool_errors(server):
    result, _ = run_teacher(
        server,
        call("weather", {"city": "Paris"}),
        call("search", {"queries": "not a list"}),
        '<think>again</think>\n<tool_call>{"name": "search", "arguments": {"queries": [</tool_call>',
        IMAGES,
        GOOD_ANSWER,
    )
    trajectory = result.trajectory
    assert trajectory.ending == "answer"
    records = [(c.name, c.ok) for c in trajectory.tool_calls]
    assert records == [("weather", False), ("search", False), ("", False), ("image_search", True)]
    assert "unknown tool 'weather'" in trajectory.tool_calls[0].error
    assert "queries must be a non-empty list" in trajectory.tool_calls[1].error
    second = server.chat_requests()[1]
    assert second.messages[-1]["content"].startswith("<tool_response>\nToolError: unknown tool 'weather'")


@pytest.mark.slow
@pytest.mark.parametrize(
    "final",
    [
        answer(
            {
                "gen_prompt": "The tower.",
                "reference_images": [{"img_id": "IMG_009", "note": "never returned"}],
            }
        ),
        answer({"reference_images": [{"img_id": "IMG_001", "note": "tower"}]}),
        '<think>done</think>\n<answer>{"gen_prompt": "The tower", "reference_images": [</answer>',
    ],
    ids=["unknown_img_id", "no_gen_prompt", "truncated_answer_json"],
)
def test_unusable_answers_end_answer_parse_failed(server, final):
    result, _ = run_teacher(server, IMAGES, final)
    assert result.trajectory.ending == "answer_parse_failed"
    assert result.trajectory.gen_prompt == "" and result.trajectory.chosen_references == []


@pytest.mark.slow
@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
def test_endless_tool_calls_hit_the_budget_and_forced_answer(server, native):
    counter = iter(range(100))

    def respond(request):
        query = f"Eiffel Tower fact {next(counter)}"
        if native:
            return Completion("more", tool_calls=[tool_call("search", {"queries": [query]})])
        return call("search", {"queries": [query]})

    server.respond_with(respond)
    result, _ = run_teacher(server, native_tool_calling=native)
    trajectory = result.trajectory
    assert trajectory.ending == "no_answer"
    assert len(trajectory.tool_calls) == 8
    assert trajectory.model_calls == 9
    last = server.chat_requests()[-1]
    assert (
        final_answer_message() in json.dumps(last.messages[-1]["content"])
        or final_answer_message() in last.messages[-1]["content"]
    )
    if native:
        assert last.body["tool_choice"] == "none"
    assert len(server.chat_requests()) == 9


@pytest.mark.slow
def test_response_larger_than_limit_ends_max_response_length_exceeded(server):
    huge = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x" * 50_000}}]}).encode()
    result, _ = run_teacher(server, SEARCH, RawBody(huge))
    assert result.trajectory.ending == "max_response_length_exceeded"
    assert len(server.chat_requests()) == 2


@pytest.mark.slow
def test_cut_off_reply_ends_max_response_length_exceeded(server):
    result, _ = run_teacher(server, Completion("<think>I will keep thinking and", finish_reason="length"))
    assert result.trajectory.ending == "max_response_length_exceeded"


@pytest.mark.slow
def test_prose_twice_ends_error_and_repeats_end_repeated_response(server):
    result, _ = run_teacher(server, "I think the tower is 330 m tall.", "Still prose, no tags.")
    assert result.trajectory.ending == "error"
    assert "could not be used" in server.chat_requests()[1].messages[-1]["content"]
    result, _ = run_teacher(server, SEARCH, SEARCH)
    assert result.trajectory.ending == "repeated_response"


@pytest.mark.slow
def test_transient_faults_mid_episode_are_retried_and_exhaustion_raises(server, caplog):
    caplog.set_level(logging.DEBUG)
    result, _ = run_teacher(server, Status(429, retry_after="0"), IMAGES, Status(503), GOOD_ANSWER)
    assert result.trajectory.ending == "answer"
    with pytest.raises(ModelCallError):
        run_teacher(server, IMAGES, Status(503), Status(503), Status(503))
    assert all(KEY not in record.getMessage() for record in caplog.records)


@pytest.mark.slow
def test_browse_summary_by_the_summary_endpoint(server):
    with ScriptedOpenAIServer() as summary_server:
        summary_server.reply("The tower is 330 metres tall and was completed in 1889.", "NONE")
        blobs = MemoryBlobs()
        endpoint = LLMEndpointConfig(base_url=server.base_url, model="teacher-vlm", max_retries=0)
        summary = LLMEndpointConfig(base_url=summary_server.base_url, model="summary-llm", max_retries=0)
        teacher = LLMTeacher(
            endpoint,
            TeacherConfig(kind="llm", browse_summary=True),
            fingerprint="tfp",
            blobs=blobs,
            summary_endpoint=summary,
        )
        second_browse = call(
            "browse", {"url": "http://corpus.test/wiki/Gustave_Eiffel", "query": "tower height"}
        )
        server.reply(BROWSE, second_browse, IMAGES, GOOD_ANSWER)
        result = asyncio.run(teacher.run(PROMPT, fake_tools(blobs)))
    messages = result.trajectory.messages
    assert messages[3].content == (
        '<tool_response>\n### Content of http://corpus.test/wiki/Eiffel_Tower relevant to "height completion year"\n'
        "height completion year: The tower is 330 metres tall and was completed in 1889.\n</tool_response>"
    )
    assert (
        messages[5].content
        == '<tool_response>\nThe page http://corpus.test/wiki/Gustave_Eiffel has no content relevant to "tower height".\n</tool_response>'
    )
    asked = summary_server.chat_requests()[0].messages[1]["content"]
    assert asked.startswith(
        "Query: height completion year\n\nPage: http://corpus.test/wiki/Eiffel_Tower (part 1 of 1)"
    )
    assert "The tower is 330 metres tall" in asked
