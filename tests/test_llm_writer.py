"""LLMWriter against the scripted OpenAI-compatible server (real HTTP, real openai SDK)."""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas.config import LLMEndpointConfig, WriterConfig
from schemas.errors import ModelCallError, ModelOutputError
from schemas.ids import content_id
from schemas.rows import Topic
from synthesis.llm_writer import LLMWriter, WrittenPrompts, pick_partner, writer_messages
from testkit.servers.openai_server import ScriptedOpenAIServer, Status

TOWER = Topic(
    id="t-eiffel",
    source="wiki_offline",
    title="Eiffel Tower",
    text="The Eiffel Tower is a wrought-iron lattice tower in Paris. It is 330 metres tall and opened in 1889.",
    description="Tower in Paris",
    category="architecture",
)
ENGINEER = Topic(
    id="t-gustave",
    source="wiki_offline",
    title="Gustave Eiffel",
    text="Gustave Eiffel was a French civil engineer born in 1832.",
    category="engineering",
)
GOOD = {
    "prompts": [
        {
            "prompt": "Draw the Eiffel Tower at dusk with a plaque below it stating its height and opening year.",
            "category": "architecture",
            "difficulty": "medium",
            "required_facts": ["330 metres tall", "opened in 1889"],
        }
    ]
}


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as scripted:
        yield scripted


def make_writer(server, share=0.0, **kwargs) -> LLMWriter:
    endpoint = LLMEndpointConfig(base_url=server.base_url, model="writer-llm", max_retries=1)
    return LLMWriter(endpoint, WriterConfig(kind="llm", multi_hop_share=share), fingerprint="wfp", **kwargs)


def test_messages_carry_source_and_schema_categories():
    system, user = writer_messages(TOWER, None, 2)
    assert "astronomy, biology" in system["content"]
    assert user["content"].startswith(
        "Write 2 image-generation task(s) about the following source. Suggested category: architecture."
    )
    assert "Title: Eiffel Tower\nDescription: Tower in Paris\nText: The Eiffel Tower is" in user["content"]
    _, two_hop = writer_messages(TOWER, ENGINEER, 1)
    assert (
        "Source 2 (a linked subject; each task must need both):\nTitle: Gustave Eiffel" in two_hop["content"]
    )
    assert set(WrittenPrompts.model_json_schema()["$defs"]["WrittenPrompt"]["properties"]) == {
        "prompt",
        "category",
        "difficulty",
        "required_facts",
    }


def test_partner_choice_is_deterministic_and_follows_share():
    assert pick_partner(TOWER, [ENGINEER], 0.0, 0) is None
    assert pick_partner(TOWER, [ENGINEER], 1.0, 0) == ENGINEER
    assert pick_partner(TOWER, [TOWER], 1.0, 0) is None


@pytest.mark.slow
def test_writer_returns_validated_prompts(server):
    server.reply(json.dumps(GOOD))
    (prompt,) = asyncio.run(make_writer(server).write(TOWER, [ENGINEER]))
    assert prompt.model_dump() == {
        "id": content_id("wfp", ["t-eiffel"], 0),
        "topic_ids": ["t-eiffel"],
        "category": "architecture",
        "difficulty": "medium",
        "prompt": GOOD["prompts"][0]["prompt"],
        "required_facts": ["330 metres tall", "opened in 1889"],
        "writer": "wfp",
        "hops": 1,
    }
    request = server.requests[0].body
    assert request["response_format"]["json_schema"]["name"] == "image_generation_tasks"
    assert request["response_format"]["json_schema"]["schema"] == WrittenPrompts.model_json_schema()


@pytest.mark.slow
def test_two_hop_prompt_links_both_topics(server):
    two = {"prompts": [dict(GOOD["prompts"][0], category="engineering", difficulty="hard")]}
    server.reply(json.dumps(two))
    (prompt,) = asyncio.run(make_writer(server, share=1.0).write(TOWER, [ENGINEER]))
    assert (prompt.topic_ids, prompt.hops) == (["t-eiffel", "t-gustave"], 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad",
    [
        "Here are some ideas: draw the tower at night!",
        json.dumps(GOOD)[:60],
        json.dumps({"prompts": [dict(GOOD["prompts"][0], category="cooking")]}),
        json.dumps(
            {
                "prompts": [
                    dict(
                        GOOD["prompts"][0],
                        prompt="Draw it from https://example.com/tower please, with labels",
                    )
                ]
            }
        ),
        json.dumps({"prompts": []}),
    ],
    ids=["prose", "truncated_json", "unknown_category", "url_in_prompt", "empty"],
)
def test_invalid_output_is_repaired_once(server, bad):
    server.reply(bad, json.dumps(GOOD))
    (prompt,) = asyncio.run(make_writer(server).write(TOWER, []))
    assert prompt.category == "architecture"
    assert len(server.requests) == 2
    assert server.requests[1].messages[-1]["content"].startswith("Your last reply could not be used: ")


@pytest.mark.slow
def test_invalid_twice_raises_and_nothing_unusable_stays_cached(server):
    from synthesis.response_cache import MemoryResponseCache

    cache = MemoryResponseCache()
    server.reply("prose", "more prose")
    writer = make_writer(server, cache=cache)
    with pytest.raises(ModelOutputError, match="image_generation_tasks: no valid JSON after one repair"):
        asyncio.run(writer.write(TOWER, []))
    assert len(cache) == 0
    server.reply(json.dumps(GOOD))
    assert len(asyncio.run(writer.write(TOWER, []))) == 1  # the next attempt asks again
    assert len(cache) == 1


@pytest.mark.slow
def test_server_errors_surface_as_model_call_error(server):
    server.reply(Status(503), Status(503))
    with pytest.raises(ModelCallError):
        asyncio.run(make_writer(server).write(TOWER, []))
