"""The offline teacher: a deterministic policy that writes real protocol text, as a model would.

search (the prompt's subject and named entities) -> browse the hit about the subject -> one
image_search per subject -> answer with a grounded gen_prompt and 0-3 references.
The policy reads only the conversation (the same text an LLM sees), and every turn it writes goes
through the shared episode loop and parser. Same prompt + same backends => identical trajectory.

What it writes is meant to be clean training data:
- subjects are what the prompt names (its lead phrase, "a poster of <subject> ...", and search-hit
  titles found in the prompt outside parentheses), never a neighbouring article the search returned;
- the gen_prompt is the task followed by facts as plain sentences taken from the browsed article's
  prose (headings, short descriptions, captions and page furniture are left out), preferring the
  sentence that defines the subject and sentences with numbers;
- a reference is chosen for a subject only when the image's title names that subject; with no such
  image the answer chooses none and the painter works from the text alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

from extractors.local_search import split_sentences, tokenize
from schemas.config import TeacherConfig
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import ModelClient, TeacherResult, Tools
from schemas.rows import Message, Prompt
from synthesis.agent_protocol import IMG_ID, final_answer_message, parse_model_turn
from synthesis.episode import ModelReply, run_episode
from synthesis.toolbox import Toolbox

POLICY_VERSION = "scripted-v2"
MAX_SUBJECTS = 3
MAX_FACT_SENTENCES = 3
MAX_FACT_CHARS = 420
MIN_PROSE_WORDS = 6
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
# the subject a task names: "a poster of <subject> (...)", "an infographic about the <subject>: ..."
_SUBJECT_LEAD = re.compile(
    r"\b(?:about|of|featuring|for|showing|depicting)\s+(?:the\s+)?"
    r"(?P<subject>[^()\n,.:;!?\"]+?)"
    r"(?=\s*\(|[,.:;!?\"]|\s+(?:with|together|and|in|as|drawn|from|on|at|showing|that|which|where|beside|"
    r"next|who|whose|while|to|for|by)\b|\s*$)"
)
_PARENTHESES = re.compile(r"\([^()]*\)")
# a sentence split after an initial or a common abbreviation ("C.N. Yang", "T. E. Lawrence", "St. Paul")
_ABBREVIATION_END = re.compile(
    r"(?:\b[A-Z]|\b(?:St|Dr|Mr|Mrs|Ms|Jr|Sr|Prof|Gen|Mt|No|Vol|ca|c|vs|e\.g|i\.e))\.$"
)
_PROSE_END = re.compile(r"[.!?][\"'’”)\]]?$")


def prompt_subject(prompt: str) -> str:
    """The subject a task's lead phrase names ("... a poster of Stefan Banach (...)" -> "Stefan Banach"),
    or '' when no lead phrase starts with a capital letter or a digit."""
    for match in _SUBJECT_LEAD.finditer(prompt):
        subject = " ".join(match["subject"].split())
        if subject and (subject[0].isupper() or subject[0].isdigit()):
            return subject
    return ""


def _parenthesised_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _PARENTHESES.finditer(text)]


def _find_title(title: str, prompt: str, spans: list[tuple[int, int]]) -> int:
    """Where a title occurs in the prompt as whole words (case-sensitive), not inside parentheses; -1."""
    for match in re.finditer(rf"(?<!\w){re.escape(title)}(?!\w)", prompt):
        if not any(start < match.start() < end for start, end in spans):
            return match.start()
    return -1


def names_subject(title: str, subject: str) -> bool:
    """Whether an image title names the subject: every search term of the subject (without a
    parenthesised qualifier such as "(tool)") occurs in the title."""
    core = set(tokenize(_PARENTHESES.sub(" ", subject))) or set(tokenize(subject))
    return bool(core) and core <= set(tokenize(title))


def prose_sentences(text: str) -> list[str]:
    """The sentences of a page's prose paragraphs: headings, list items, and short lines without a
    final full stop (a short description, "From the ... collection", captions, menus) are left out."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith(("#", "- ", "* ", "|", ">")):
            continue
        if len(line.split()) < MIN_PROSE_WORDS or not _PROSE_END.search(line):
            continue
        for sentence in split_sentences(line):
            if sentences and _ABBREVIATION_END.search(sentences[-1]) and sentences[-1] in line:
                sentences[-1] = f"{sentences[-1]} {sentence}"
            else:
                sentences.append(sentence)
    return sentences


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
                queries = self._queries(state.prompt, entities)
                return self._turn(
                    f"I need verified facts about {', '.join(queries)}. I will search first.",
                    _call("search", {"queries": queries, "top_k": self.top_k}),
                )
            subjects = self._subjects(state, entities)
            hit = self._best_hit(state, subjects)
            if not state.called("browse") and hit is not None:
                title, url, _ = hit
                return self._turn(
                    f"The result '{title}' is about {subjects[0]}. I will read it for the exact facts.",
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

    def _queries(self, prompt: str, entities: list[str]) -> list[str]:
        """The prompt's subject first, then other named entities it does not contain."""
        subject = prompt_subject(prompt)
        queries = [subject] if subject else []
        for entity in entities:
            if not any(entity.lower() in query.lower() for query in queries):
                queries.append(entity)
        return queries[: self.queries_per_search] or [" ".join(prompt.split()[:10])]

    @staticmethod
    def _subjects(state: _Conversation, entities: list[str]) -> list[str]:
        """What the prompt names: its lead subject and the search-hit titles it contains (outside
        parentheses), in prompt order; a title inside a longer subject is not a subject of its own."""
        prompt = state.prompt
        spans = _parenthesised_spans(prompt)
        found: dict[str, int] = {}
        for title, _, _ in state.hits:
            position = _find_title(title, prompt, spans) if title else -1
            if position >= 0:
                found.setdefault(title, position)
        lead = prompt_subject(prompt)
        if lead:
            lead_position = prompt.find(lead)
            longer = [title for title, at in found.items() if at == lead_position and len(title) >= len(lead)]
            if not longer:
                found.setdefault(lead, lead_position)
        subjects = sorted(found, key=lambda title: (found[title], -len(title)))
        subjects = [
            subject
            for subject in subjects
            if not any(subject != other and subject.lower() in other.lower() for other in subjects)
        ]
        if not subjects:
            subjects = entities[:1] or [" ".join(prompt.split()[:6])]
        return subjects[:MAX_SUBJECTS]

    @staticmethod
    def _best_hit(state: _Conversation, subjects: list[str]) -> tuple[str, str, str] | None:
        """The hit about the main subject: its title is a subject, else it names the main subject;
        None when no hit is about it (nothing to read is better than a neighbouring article)."""
        for hit in state.hits:
            if hit[0] == subjects[0]:
                return hit
        for hit in state.hits:
            if hit[0] in subjects:
                return hit
        main = subjects[0].lower()
        for hit in state.hits:
            if main in hit[0].lower() or main in hit[2].lower():
                return hit
        return None

    def _answer(self, state: _Conversation, subjects: list[str]) -> str:
        chosen: list[tuple[str, str]] = []  # (IMG id, subject)
        for subject in subjects:
            for img_id, title in state.images.get(subject, []):
                if img_id not in {c[0] for c in chosen} and names_subject(title, subject):
                    chosen.append((img_id, subject))
                    break
        chosen.sort()
        parts = [" ".join(state.prompt.split()), *self._facts(state, subjects[0])]
        for position, (_, subject) in enumerate(chosen):
            parts.append(f"Depict {subject} as in the {_ORDINALS[position]} reference image.")
        gen_prompt = IMG_ID.sub("", _URLISH.sub("", " ".join(parts)))
        answer = {
            "gen_prompt": " ".join(gen_prompt.split()),
            "reference_images": [{"img_id": img_id, "note": subject} for img_id, subject in chosen],
        }
        if chosen:
            think = (
                f"I have facts about {', '.join(subjects)} and {len(chosen)} reference image(s) that show "
                "them. I will write the grounded prompt."
            )
        else:
            think = (
                f"I have facts about {', '.join(subjects)}, but no returned image shows them, so I choose "
                "no reference image. I will write the grounded prompt."
            )
        return f"<think>{think}</think>\n<answer>{json.dumps(answer, ensure_ascii=False)}</answer>"

    @staticmethod
    def _facts(state: _Conversation, subject: str) -> list[str]:
        """Up to three prose sentences of what was browsed: the first one (it defines the subject),
        then those with numbers, in page order, within MAX_FACT_CHARS."""
        sentences = [s for text in state.browsed for s in prose_sentences(text)]
        if not sentences:  # nothing browsed: the snippets of hits about the subject
            sentences = [
                s
                for title, _, snippet in state.hits
                if subject.lower() in f"{title} {snippet}".lower()
                for s in prose_sentences(snippet.rstrip("…"))
            ]
        wanted = [index for index, s in enumerate(sentences) if index == 0 or re.search(r"\d", s)]
        picked: list[str] = []
        for index in wanted:
            sentence = sentences[index]
            if len(picked) >= MAX_FACT_SENTENCES or sum(map(len, picked)) + len(sentence) > MAX_FACT_CHARS:
                continue
            picked.append(sentence)
        return picked


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

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: the offline default calls no model."""
        return {}

    async def run(self, prompt: Prompt, tools: Tools) -> TeacherResult:
        return await run_episode(
            prompt, self.policy, Toolbox(tools, self.blobs), teacher=self.fingerprint, config=self.config
        )
