"""The offline teacher: a deterministic policy that writes real protocol text, as a model would.

search (queries from the prompt's named entities) -> browse the best hit -> one image_search per
subject -> answer with a grounded gen_prompt built from the browsed facts and 1-3 references.
The policy reads only the conversation (the same text an LLM sees), and every turn it writes goes
through the shared episode loop and parser. Same prompt + same backends => identical trajectory.
"""

from __future__ import annotations

import json
import re
from typing import Any

from schemas.config import TeacherConfig
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import TeacherResult, Tools
from schemas.rows import Message, Prompt
from synthesis.agent_protocol import IMG_ID, final_answer_message, parse_model_turn
from synthesis.episode import ModelReply, run_episode
from synthesis.toolbox import Toolbox

POLICY_VERSION = "scripted-v1"
MAX_SUBJECTS = 3
_ORDINALS = ("first", "second", "third", "fourth", "fifth")
_CONNECTORS = {"of", "the", "de", "von", "van", "da", "del", "du", "la", "le"}
_STARTERS = {
    "a", "an", "the", "create", "design", "draw", "make", "generate", "render", "produce", "show", "illustrate",
    "paint", "depict", "include", "label", "all", "every", "each", "use", "add", "it", "its", "this",
    "these", "in", "on", "at", "for", "with", "and", "one", "two", "three", "both", "next", "below", "above",
}  # fmt: skip
# a markdown link whose URL may hold balanced parentheses (Wikipedia: /wiki/Peter_Pan_(character))
_HIT = re.compile(r"^\[(?P<title>[^\]]*)\]\((?P<url>(?:[^()\s]|\([^()\s]*\))+)\) ?(?P<snippet>.*)$")
_URLISH = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\(\S+\.(?:html?|php)\)")


def named_entities(text: str) -> list[str]:
    """Runs of capitalized words (joined by small connectors), in order of first appearance, de-duplicated."""
    runs: list[str] = []
    current: list[str] = []
    for token in re.findall(r"[\w'’.-]+|[^\w\s]", text):
        word = token.strip(".")
        capital = (
            bool(word)
            and (word[0].isupper() or word[0].isdigit() and bool(current))
            and word.lower() not in (_STARTERS if not current else set())
        )
        if capital:
            current.append(word)
        elif current and word.lower() in _CONNECTORS and token == word:
            current.append(word)
        else:
            while current and current[-1].lower() in _CONNECTORS:
                current.pop()
            if current:
                runs.append(" ".join(current))
            current = []
        if token.endswith(".") and current:
            runs.append(" ".join(current))
            current = []
    while current and current[-1].lower() in _CONNECTORS:
        current.pop()
    if current:
        runs.append(" ".join(current))
    seen: dict[str, str] = {}
    for run in runs:
        seen.setdefault(run.lower(), run)
    return list(seen.values())


def _call(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


class _Conversation:
    """What the policy has learned so far, read back from the protocol text."""

    def __init__(self, messages: list[Message]):
        self.prompt = messages[1].content
        self.forced = final_answer_message() in messages[-1].content
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.hits: list[tuple[str, str, str]] = []  # title, url, snippet
        self.browsed: list[str] = []
        self.images: dict[str, list[tuple[str, str]]] = {}  # image query -> [(IMG id, title)]
        for message in messages[2:]:
            if message.role == "assistant":
                turn = parse_model_turn(message.content)
                if turn.tool_call and turn.tool_call.arguments is not None:
                    self.calls.append((turn.tool_call.name, turn.tool_call.arguments))
            elif "<tool_response>" in message.content:
                self._read_response(message.content)

    def _read_response(self, content: str) -> None:
        body = content.split("<tool_response>", 1)[1].split("</tool_response>", 1)[0]
        lines = body.strip().splitlines()
        header = lines[0] if lines else ""
        if header.startswith("### Results for"):
            for line in lines[1:]:
                match = _HIT.match(line)
                if match:
                    self.hits.append((match["title"], match["url"], match["snippet"]))
        elif header.startswith("### Content of"):
            self.browsed.append("\n".join(lines[1:]))
        elif header.startswith("### Images for"):
            query = header.split('"', 1)[1].rsplit('"', 1)[0]
            found = []
            for line in lines[1:]:
                match = re.match(r"^(IMG_\d{3,}): (.*?)( \(already shown earlier\))?$", line)
                if match:
                    found.append((match[1], match[2]))
            self.images[query] = found

    def called(self, name: str) -> list[dict[str, Any]]:
        return [arguments for tool, arguments in self.calls if tool == name]


class ScriptedPolicy:
    """The deterministic 'model': messages in, one protocol turn out."""

    def __init__(self, queries_per_search: int = 2, top_k: int = 5, images_per_subject: int = 3):
        self.queries_per_search = queries_per_search
        self.top_k = top_k
        self.images_per_subject = images_per_subject

    async def __call__(self, messages: list[Message]) -> ModelReply:
        return ModelReply(text=self.respond(messages))

    def respond(self, messages: list[Message]) -> str:
        state = _Conversation(messages)
        entities = named_entities(state.prompt)
        if not state.forced:
            if not state.called("search"):
                queries = entities[: self.queries_per_search] or [" ".join(state.prompt.split()[:10])]
                return self._turn(
                    f"I need verified facts about {', '.join(queries)}. I will search first.",
                    _call("search", {"queries": queries, "top_k": self.top_k}),
                )
            subjects = self._subjects(state, entities)
            if not state.called("browse") and state.hits:
                title, url, _ = self._best_hit(state, subjects)
                return self._turn(
                    f"The result '{title}' looks most relevant. I will read it for the exact facts.",
                    _call("browse", {"url": url, "query": f"{title} facts dates numbers names"}),
                )
            searched = {arguments.get("query") for arguments in state.called("image_search")}
            for subject in subjects:
                if subject not in searched:
                    return self._turn(
                        f"I need a reference image of {subject}.",
                        _call("image_search", {"query": subject, "top_k": self.images_per_subject}),
                    )
        return self._answer(state, self._subjects(state, entities))

    @staticmethod
    def _turn(think: str, call: str) -> str:
        return f"<think>{think}</think>\n<tool_call>{call}</tool_call>"

    @staticmethod
    def _subjects(state: _Conversation, entities: list[str]) -> list[str]:
        prompt = state.prompt.lower()
        titles = [title for title, _, _ in state.hits if title and title.lower() in prompt]
        titles.sort(key=lambda title: prompt.index(title.lower()))
        subjects = list(dict.fromkeys(titles))
        if not subjects:
            subjects = [state.hits[0][0]] if state.hits and state.hits[0][0] else entities[:1]
        return subjects[:MAX_SUBJECTS] or [" ".join(state.prompt.split()[:6])]

    @staticmethod
    def _best_hit(state: _Conversation, subjects: list[str]) -> tuple[str, str, str]:
        for hit in state.hits:
            if hit[0] in subjects:
                return hit
        return state.hits[0]

    def _answer(self, state: _Conversation, subjects: list[str]) -> str:
        chosen: list[tuple[str, str]] = []  # (IMG id, subject)
        for subject in subjects:
            for img_id, _ in state.images.get(subject, []):
                if img_id not in {c[0] for c in chosen}:
                    chosen.append((img_id, subject))
                    break
        chosen.sort()
        facts = self._facts(state)
        parts = [" ".join(state.prompt.split())]
        if facts:
            parts.append(f"Verified facts to show accurately: {facts}")
        for position, (_, subject) in enumerate(chosen):
            parts.append(f"Depict {subject} as in the {_ORDINALS[position]} reference image.")
        gen_prompt = IMG_ID.sub("", _URLISH.sub("", " ".join(parts)))
        answer = {
            "gen_prompt": " ".join(gen_prompt.split()),
            "reference_images": [{"img_id": img_id, "note": subject} for img_id, subject in chosen],
        }
        think = (
            f"I have facts about {', '.join(subjects)} and {len(chosen)} reference image(s). "
            "I will write the grounded prompt."
        )
        return f"<think>{think}</think>\n<answer>{json.dumps(answer, ensure_ascii=False)}</answer>"

    @staticmethod
    def _facts(state: _Conversation, max_sentences: int = 3) -> str:
        text = " ".join(" ".join(state.browsed).split())
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", text)
        picked = [s for s in sentences if re.search(r"\d", s)][:max_sentences] or sentences[:max_sentences]
        return " ".join(s for s in picked if s)


class ScriptedTeacher:
    """`Teacher` backend for the offline default (no model, no key)."""

    def __init__(
        self, config: TeacherConfig | None = None, *, fingerprint: str | None = None, blobs: Any = None
    ):
        self.config = config or TeacherConfig()
        self.fingerprint = fingerprint or config_fingerprint(
            {"teacher": self.config.model_dump(mode="json"), "policy": POLICY_VERSION}
        )
        self.blobs = blobs
        self.policy = ScriptedPolicy()

    async def run(self, prompt: Prompt, tools: Tools) -> TeacherResult:
        return await run_episode(
            prompt, self.policy, Toolbox(tools, self.blobs), teacher=self.fingerprint, config=self.config
        )
