"""The Gen-Searcher agent protocol as pure functions: prompts, turn parsing, answer parsing, tool responses.

Model-agnostic: the scripted teacher and any LLM teacher produce the same text and go through the same
parser. Nothing here does I/O except reading the package's template files.

A model turn is `<think>...</think>` followed by exactly one `<tool_call>{"name": ..., "arguments":
{...}}</tool_call>` or `<answer>{...}</answer>`. Tool results come back as a *user* turn wrapped in
`<tool_response>...</tool_response>`; images returned by `image_search` are attached to that turn, one
`<image>` placeholder per image, and named `IMG_001`, `IMG_002`, ... per trajectory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from schemas.config import TeacherConfig
from schemas.errors import ModelOutputError
from schemas.protocols import SearchHit
from schemas.rows import ChosenReference, Message, ReferenceImage

MAX_MODEL_CALLS = 9
MAX_TOOL_CALLS = 8
MAX_REFERENCES = 5
MAX_IMAGE_RESULTS = 5
TOOL_NAMES = ("search", "image_search", "browse")

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Web search. Returns, per query, results as markdown lines [title](url) snippet.",
            "parameters": {
                "type": "object",
                "properties": {
                    "queries": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "one or more search queries",
                    },
                    "top_k": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 10,
                        "description": "results per query",
                    },
                },
                "required": ["queries"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "image_search",
            "description": "Image search. Returns up to 5 images, each with an id IMG_###, title, url, "
            "local path and source page; the images are attached to the response.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what the images should show"},
                    "top_k": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 10,
                        "description": "images wanted (at most 5 are returned)",
                    },
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "browse",
            "description": "Read a web page. Returns the page content relevant to the query, or says that "
            "the page has nothing relevant.",
            "parameters": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "description": "the page to read"},
                    "query": {"type": "string", "description": "what to look for on the page"},
                },
                "required": ["url", "query"],
            },
        },
    },
]


# --- templates -------------------------------------------------------------------------------------


@cache
def load_template(name: str) -> str:
    """The text of `synthesis/templates/<name>` (package data), without its final newline."""
    return resources.files("synthesis").joinpath("templates", name).read_text(encoding="utf-8").rstrip("\n")


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def system_prompt(
    date: str, *, max_model_calls: int = MAX_MODEL_CALLS, max_tool_calls: int = MAX_TOOL_CALLS
) -> str:
    """The system prompt: tool schemas, rules and today's date (YYYY-MM-DD)."""
    if not _DATE.match(date):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
    tools = "\n".join(json.dumps(schema, ensure_ascii=False) for schema in TOOL_SCHEMAS)
    return Template(load_template("system_prompt.txt")).substitute(
        date=date, tools=tools, max_model_calls=max_model_calls, max_tool_calls=max_tool_calls
    )


def opening_messages(prompt: str, config: TeacherConfig) -> list[Message]:
    """How every trajectory begins: the system prompt (tool schemas, rules, date), then the task.

    The teacher's episodes start with these two messages, and so do the RL prompts exported for
    trainers (`warehouse.verl_format`), so a policy trained on both sees one protocol."""
    return [
        Message(
            role="system",
            content=system_prompt(
                config.date, max_model_calls=config.max_model_calls, max_tool_calls=config.max_tool_calls
            ),
        ),
        Message(role="user", content=prompt),
    ]


def final_answer_message() -> str:
    """The user message appended when the budget is spent: no more tools, answer now."""
    return load_template("final_answer.txt")


def format_error_message(error: str) -> str:
    """The user message sent back after a response that could not be parsed."""
    return Template(load_template("format_error.txt")).substitute(error=error)


# --- parsing model turns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedToolCall:
    """A tool call as the model wrote it. `arguments` is None when they are not a JSON object;
    `error` then says why (the toolbox answers it with a ToolError response)."""

    name: str
    arguments: dict[str, Any] | None
    arguments_json: str
    error: str = ""


@dataclass(frozen=True)
class ModelTurn:
    think: str
    tool_call: ParsedToolCall | None = None
    answer_json: str | None = None
    error: str = ""  # non-empty: the turn is not a valid protocol turn

    @property
    def ok(self) -> bool:
        return not self.error


_TAG = re.compile(r"<(/?)(think|tool_call|answer)>")


def _parse_tool_call(body: str) -> ParsedToolCall:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as error:
        return ParsedToolCall("", None, body, f"tool_call is not valid JSON ({error.msg})")
    if not isinstance(value, dict):
        return ParsedToolCall("", None, body, "tool_call must be a JSON object with name and arguments")
    name = value.get("name")
    name = name if isinstance(name, str) else ""
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models send the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    arguments_json = json.dumps(arguments, ensure_ascii=False)
    if not name:
        return ParsedToolCall("", None, arguments_json, "tool_call has no tool name")
    if not isinstance(arguments, dict):
        return ParsedToolCall(name, None, arguments_json, "tool_call arguments must be a JSON object")
    return ParsedToolCall(name, arguments, arguments_json)


def parse_model_turn(text: str, *, require_think: bool = True) -> ModelTurn:
    """Split one model response into its think block and its single tool call or answer."""
    stripped = text.strip()
    tags = [(m.group(1) == "/", m.group(2), m.start(), m.end()) for m in _TAG.finditer(stripped)]
    blocks: list[tuple[str, str, int, int]] = []  # name, body, start, end
    index = 0
    while index < len(tags):
        closing, name, start, end = tags[index]
        if closing or index + 1 >= len(tags) or tags[index + 1][:2] != (True, name):
            return ModelTurn(think="", error=f"unbalanced <{name}> tag")
        blocks.append((name, stripped[end : tags[index + 1][2]].strip(), start, tags[index + 1][3]))
        index += 2
    think = ""
    if blocks and blocks[0][0] == "think":
        think = blocks[0][1]
        if blocks[0][2] != 0:
            return ModelTurn(think=think, error="text before <think>")
        blocks = blocks[1:]
    elif require_think:
        return ModelTurn(think="", error="missing <think> block at the start")
    actions = [block for block in blocks if block[0] != "think"]
    if len(blocks) != len(actions):
        return ModelTurn(think=think, error="more than one <think> block")
    if not actions:
        return ModelTurn(think=think, error="no <tool_call> or <answer>")
    if len(actions) > 1:
        return ModelTurn(think=think, error="more than one <tool_call>/<answer>; give exactly one")
    name, body, _, end = actions[0]
    if stripped[end:].strip():
        return ModelTurn(think=think, error=f"text after </{name}>")
    if name == "answer":
        return ModelTurn(think=think, answer_json=body)
    return ModelTurn(think=think, tool_call=_parse_tool_call(body))


# --- parsing the answer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedAnswer:
    gen_prompt: str
    chosen: list[ChosenReference]


IMG_ID = re.compile(r"\bIMG_\d{3,}\b")
_URL = re.compile(
    r"(?i)\b(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|html?)\b(?:/\S*)?"
)


def parse_answer(answer_json: str, known_ids: set[str] | list[str]) -> ParsedAnswer:
    """Validate the `<answer>` JSON. Raises ModelOutputError on anything the caller cannot use."""
    try:
        value = json.loads(answer_json)
    except json.JSONDecodeError as error:
        raise ModelOutputError(f"answer is not valid JSON ({error.msg})") from error
    if not isinstance(value, dict):
        raise ModelOutputError("answer must be a JSON object")
    gen_prompt = value.get("gen_prompt")
    if not isinstance(gen_prompt, str) or not gen_prompt.strip():
        raise ModelOutputError("answer has no gen_prompt string")
    gen_prompt = gen_prompt.strip()
    if _URL.search(gen_prompt):
        raise ModelOutputError("gen_prompt contains a URL")
    if IMG_ID.search(gen_prompt):
        raise ModelOutputError("gen_prompt contains an image id; refer to references by order")
    references = value.get("reference_images")
    if not isinstance(references, list):
        raise ModelOutputError("answer has no reference_images list")
    known = set(known_ids)
    chosen: dict[str, ChosenReference] = {}
    for reference in references:
        if not isinstance(reference, dict) or not isinstance(reference.get("img_id"), str):
            raise ModelOutputError("each reference image must be an object with an img_id string")
        img_id = reference["img_id"].strip()
        if img_id not in known:
            raise ModelOutputError(f"unknown image id {img_id!r}")
        note = reference.get("note", "")
        chosen.setdefault(img_id, ChosenReference(img_id=img_id, note=note if isinstance(note, str) else ""))
    if len(chosen) > MAX_REFERENCES:  # none is an answer: no returned image shows the subject
        raise ModelOutputError(
            f"answer must choose at most {MAX_REFERENCES} reference images, got {len(chosen)}"
        )
    return ParsedAnswer(gen_prompt=gen_prompt, chosen=[chosen[key] for key in sorted(chosen)])


# --- image ids -------------------------------------------------------------------------------------


@dataclass
class ImageRegistry:
    """Per-trajectory image ids: IMG_001, IMG_002, ... in order of first sight; same sha256, same id."""

    references: list[ReferenceImage] = field(default_factory=list)
    _by_sha: dict[str, str] = field(default_factory=dict)

    def register(
        self, sha256: str, *, url: str, title: str = "", page_url: str = "", width: int = 0, height: int = 0
    ) -> tuple[ReferenceImage, bool]:
        """The image's entry and whether it is new to this trajectory."""
        if sha256 in self._by_sha:
            return self.get(self._by_sha[sha256]), False
        img_id = f"IMG_{len(self.references) + 1:03d}"
        entry = ReferenceImage(
            img_id=img_id, sha256=sha256, url=url, title=title, page_url=page_url, width=width, height=height
        )
        self.references.append(entry)
        self._by_sha[sha256] = img_id
        return entry, True

    def get(self, img_id: str) -> ReferenceImage:
        for entry in self.references:
            if entry.img_id == img_id:
                return entry
        raise KeyError(img_id)

    @property
    def ids(self) -> list[str]:
        return [entry.img_id for entry in self.references]


# --- tool responses --------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 0) -> str:
    text = " ".join(text.split())
    return text[: limit - 1].rstrip() + "…" if limit and len(text) > limit else text


def normalize_query(query: str) -> str:
    """The form under which repeated queries are detected."""
    return " ".join(query.lower().split())


def wrap_tool_response(body: str) -> str:
    return f"<tool_response>\n{body.strip()}\n</tool_response>"


def format_search_results(blocks: list[tuple[str, list[SearchHit]]], notes: Sequence[str] = ()) -> str:
    """Per query a header line naming the query, then one markdown line `[title](url) snippet` per hit."""
    parts = []
    for query, hits in blocks:
        lines = [f'### Results for "{_one_line(query)}"']
        for hit in hits:
            title = _one_line(hit.title).replace("[", "(").replace("]", ")") or hit.url
            snippet = _one_line(hit.snippet, 300)
            lines.append(f"[{title}]({hit.url}) {snippet}".rstrip())
        if not hits:
            lines.append("No results.")
        parts.append("\n".join(lines))
    parts.extend(notes)
    return wrap_tool_response("\n\n".join(parts))


@dataclass(frozen=True)
class ImageResultEntry:
    reference: ReferenceImage
    local_path: str
    new: bool  # first sight in this trajectory: the image is attached


def format_image_results(
    query: str, entries: list[ImageResultEntry], notes: Sequence[str] = ()
) -> tuple[str, list[str]]:
    """The image_search response text and the ids of the images attached to it, in `<image>` order."""
    lines = [f'### Images for "{_one_line(query)}"']
    attached: list[str] = []
    for entry in entries:
        ref = entry.reference
        seen = "" if entry.new else " (already shown earlier)"
        lines.append(f"{ref.img_id}: {_one_line(ref.title) or 'untitled'}{seen}")
        lines.append(f"url: {ref.url}")
        lines.append(f"local path: {entry.local_path}")
        lines.append(f"source page: {ref.page_url or 'unknown'}")
        lines.append(f"size: {ref.width}x{ref.height}")
        if entry.new:
            lines.append("<image>")
            attached.append(ref.img_id)
        lines.append("")
    if not entries:
        lines.append("No images found.")
    lines.extend(notes)
    return wrap_tool_response("\n".join(lines)), attached


def format_browse_result(url: str, query: str, content: str) -> str:
    """The page content relevant to the query, or a refusal line when there is none."""
    if not content.strip():
        return wrap_tool_response(f'The page {url} has no content relevant to "{_one_line(query)}".')
    return wrap_tool_response(f'### Content of {url} relevant to "{_one_line(query)}"\n{content.strip()}')


def format_tool_error(message: str) -> str:
    return wrap_tool_response(f"ToolError: {message}")
