"""The LLM prompt writer: topics in, search-demanding image-generation prompts out.

For each topic (and, for a share of topics, one linked topic: a two-hop task) the model is asked
for prompts with category, difficulty and the facts the image must show, as JSON matching
`WrittenPrompts`' schema. Invalid output gets one repair turn, then `ModelOutputError` (the flow
records a failure row for the topic). Prompt ids depend on the writer fingerprint, the topics and
the prompt's position, not on the text, so a rerun replaces nothing it already wrote.
"""

from __future__ import annotations

from string import Template
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.categories import CATEGORIES
from schemas.config import LLMEndpointConfig, WriterConfig
from schemas.errors import ModelOutputError
from schemas.ids import content_id
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import ModelClient
from schemas.rows import Prompt, Topic
from synthesis.agent_protocol import IMG_ID, load_template
from synthesis.llm_client import LLMClient, Usage
from synthesis.llm_structured import structured_chat
from synthesis.response_cache import ResponseCache

SOURCE_CHARS = 3_000  # of each topic's text shown to the model
MULTI_SUBJECT = {"celebrities": "multi_celebrities", "anime": "multi_anime", "game": "multi_game"}
Category = Literal[CATEGORIES]  # type: ignore[valid-type]


class WrittenPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=30, max_length=2000)
    category: Category
    difficulty: Literal["easy", "medium", "hard"]
    required_facts: list[str] = Field(min_length=1, max_length=8)


class WrittenPrompts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[WrittenPrompt] = Field(min_length=1)


def _fraction(*parts: object) -> float:
    return int(content_id(*parts)[:8], 16) / 0xFFFFFFFF


def pick_partner(topic: Topic, linked: list[Topic], share: float, seed: int) -> Topic | None:
    """The linked topic of a two-hop task, for a deterministic `share` of topics; else None."""
    others = [other for other in linked if other.id != topic.id]
    if not others or _fraction(seed, "multi_hop", topic.id) >= share:
        return None
    return others[int(content_id(seed, "partner", topic.id)[:8], 16) % len(others)]


def _source_block(topic: Topic) -> str:
    lines = [f"Title: {topic.title}"]
    if topic.description:
        lines.append(f"Description: {topic.description}")
    lines.append(f"Text: {' '.join(topic.text.split())[:SOURCE_CHARS]}")
    return "\n".join(lines)


def writer_messages(topic: Topic, partner: Topic | None, count: int) -> list[dict[str, Any]]:
    """The writer's messages (pure)."""
    category = topic.category
    if partner is not None:
        category = MULTI_SUBJECT.get(category, category)
        sources = (
            "Source 1:\n"
            + _source_block(topic)
            + "\n\nSource 2 (a linked subject; each task must need both):\n"
        ) + _source_block(partner)
    else:
        sources = _source_block(topic)
    user = Template(load_template("llm_writer_user.txt")).substitute(
        count=count, plural="s" if partner else "", category=category, sources=sources
    )
    system = Template(load_template("llm_writer_system.txt")).substitute(categories=", ".join(CATEGORIES))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def check_written(written: WrittenPrompts) -> None:
    for item in written.prompts:
        if "http://" in item.prompt or "https://" in item.prompt or IMG_ID.search(item.prompt):
            raise ModelOutputError("a prompt contains a URL or an image id")
        if not all(fact.strip() for fact in item.required_facts):
            raise ModelOutputError("required_facts contains an empty fact")


class LLMWriter:
    """`PromptWriter` backend over an OpenAI-compatible chat model."""

    def __init__(
        self,
        endpoint: LLMEndpointConfig,
        config: WriterConfig | None = None,
        *,
        fingerprint: str | None = None,
        prompts_per_topic: int = 1,
        client: LLMClient | None = None,
        cache: ResponseCache | None = None,
    ):
        self.endpoint = endpoint
        self.config = config or WriterConfig(kind="llm")
        self.fingerprint = fingerprint or config_fingerprint({"writer": self.config, "llm": endpoint})
        self.prompts_per_topic = prompts_per_topic
        self.client = client or LLMClient(endpoint, cache=cache)
        self.usage = Usage()

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: this backend's model client, under the role its usage is recorded as."""
        return {"writer": self.client}

    async def write(self, topic: Topic, linked: list[Topic]) -> list[Prompt]:
        partner = pick_partner(topic, linked, self.config.multi_hop_share, self.config.seed)
        messages = writer_messages(topic, partner, self.prompts_per_topic)
        result = await structured_chat(
            self.client, messages, WrittenPrompts, name="image_generation_tasks", check=check_written
        )
        self.usage = self.usage + result.usage
        topic_ids = [topic.id] if partner is None else [topic.id, partner.id]
        return [
            Prompt(
                id=content_id(self.fingerprint, topic_ids, index),
                topic_ids=topic_ids,
                category=item.category,
                difficulty=item.difficulty,
                prompt=" ".join(item.prompt.split()),
                required_facts=[" ".join(fact.split()) for fact in item.required_facts],
                writer=self.fingerprint,
                hops=len(topic_ids),
            )
            for index, item in enumerate(result.value.prompts[: self.prompts_per_topic])
        ]
