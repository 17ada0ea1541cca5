"""The offline prompt writer: Gen-Searcher-style image briefs composed from corpus facts by templates.

A prompt names a specific real entity (the topic's title) and demands facts only a search supplies
(dates, counts, measured values, names) rendered as readable text, without giving them away. When
linked topics are given, a share of prompts (`multi_hop_share`) are two-hop: the second subject is
described, not named ("the French civil engineer linked to it"). Choices are deterministic hashes of
(seed, topic id), so the same topic always gets the same prompt under the same configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.categories import category_group
from schemas.config import WriterConfig
from schemas.ids import content_id
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import ModelClient
from schemas.rows import Prompt, Topic
from synthesis.agent_protocol import load_template

TEMPLATE_FILE = "writer_templates.txt"
MAX_REQUIRED_FACTS = 8
MULTI_SUBJECT = {"celebrities": "multi_celebrities", "anime": "multi_anime", "game": "multi_game"}

_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_MEASURE = re.compile(
    r"\b\d[\d,]*(?:\.\d+)?\s?(?:%|km2|km|kilometres|kilometers|metres|meters|m|cm|mm|kg|tonnes|tons|feet|ft|"
    r"miles|million|billion|°C|°F|K|light-years|AU|species|people|inhabitants|seats|storeys|floors)(?!\w)"
)
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+(?:(?:de|van|von|of|the|da|del|du|la|le)\s+)?[A-Z][a-z]+)+")
_PARENTHETICAL = re.compile(r"\s*\([^()]*\)")


@dataclass(frozen=True)
class WriterTemplate:
    group: str  # a category group, or "multi_hop"
    name: str
    difficulty: str
    text: str


def load_writer_templates() -> list[WriterTemplate]:
    templates = []
    for section in load_template(TEMPLATE_FILE).split("\n## ")[1:]:
        header, _, body = section.partition("\n")
        group, name, difficulty = header.split()
        templates.append(WriterTemplate(group, name, difficulty, " ".join(body.split())))
    return templates


def required_facts(text: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Years, measured values and multi-word names found in `text`, in order, without `exclude`d names."""
    found: list[tuple[int, str]] = []
    for pattern in (_YEAR, _MEASURE, _NAME):
        found.extend(
            (match.start(), re.sub(r"^The\s+", "", match.group(0).strip()))
            for match in pattern.finditer(text)
        )
    excluded = {item.lower() for item in exclude}
    facts: list[str] = []
    for _, fact in sorted(found):
        if fact.lower() in excluded or any(fact in kept or kept in fact for kept in facts):
            continue
        facts.append(fact)
    return facts[:MAX_REQUIRED_FACTS]


def describe(topic: Topic) -> str:
    """A topic's short description without parenthesized asides (which often give dates away)."""
    return " ".join(_PARENTHETICAL.sub("", topic.description).split()).strip(" ,;.")


def _fraction(*parts: object) -> float:
    return int(content_id(*parts)[:8], 16) / 0xFFFFFFFF


def _pick(templates: list[WriterTemplate], *parts: object) -> WriterTemplate:
    return templates[int(content_id(*parts)[:8], 16) % len(templates)]


class TemplateWriter:
    """`PromptWriter` backend for the offline default: one prompt per topic."""

    def __init__(self, config: WriterConfig | None = None, *, fingerprint: str | None = None):
        self.config = config or WriterConfig()
        # Same value as Config.writer_fingerprint() when no LLM writer is configured.
        self.fingerprint = fingerprint or config_fingerprint({"writer": self.config, "llm": None})
        self.templates = load_writer_templates()

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: the offline default calls no model."""
        return {}

    def _family(self, group: str) -> list[WriterTemplate]:
        return [template for template in self.templates if template.group == group]

    def compose(self, topic: Topic, linked: list[Topic]) -> Prompt:
        seed = self.config.seed
        linked = [other for other in linked if other.id != topic.id]
        description = describe(topic)
        about = f" ({description})" if description and description.lower() != topic.title.lower() else ""
        multi_hop = bool(linked) and _fraction(seed, "multi_hop", topic.id) < self.config.multi_hop_share
        if multi_hop:
            partner = linked[int(content_id(seed, "partner", topic.id)[:8], 16) % len(linked)]
            template = _pick(self._family("multi_hop"), seed, "template", topic.id)
            hint = describe(partner) or "related subject"
            text = template.text.format(title=topic.title, about="", linked_hint=hint)
            topics = [topic, partner]
            category = MULTI_SUBJECT.get(topic.category, topic.category)
            facts = [partner.title, *required_facts(partner.text, (partner.title,))[:3]]
            difficulty, hops = "hard", 2
        else:
            template = _pick(self._family(category_group(topic.category)), seed, "template", topic.id)
            text = template.text.format(title=topic.title, about=about, linked_hint="")
            topics, category, facts = [topic], topic.category, []
            difficulty, hops = template.difficulty, 1
        facts = required_facts(topic.text, (topic.title,)) + facts
        topic_ids = [item.id for item in topics]
        return Prompt(
            id=content_id(self.fingerprint, topic_ids, template.name),
            topic_ids=topic_ids,
            category=category,
            difficulty=difficulty,
            prompt=text,
            required_facts=list(dict.fromkeys(facts))[:MAX_REQUIRED_FACTS],
            writer=self.fingerprint,
            hops=hops,
        )

    async def write(self, topic: Topic, linked: list[Topic]) -> list[Prompt]:
        return [self.compose(topic, linked)]
