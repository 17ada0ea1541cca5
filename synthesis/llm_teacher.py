"""The LLM teacher: the Gen-Searcher agent loop driven by an OpenAI-compatible (vision) model.

The loop itself is `synthesis.episode.run_episode`, shared with the scripted teacher: the same
system prompt, parser, toolbox, budgets (model calls / tool calls, forced final answer) and endings.
This module only adapts the model:

- protocol messages -> chat messages: images a tool response attached (`Message.image_ids`, one
  `<image>` placeholder each) become data-URL image parts in place of their placeholders,
  downscaled to about 160k pixels (`Toolbox.model_image`);
- a reply -> `ModelReply` (text, tokens, `truncated` when cut off at max_tokens or larger than
  `max_response_bytes`);
- optionally native OpenAI tool calling (`TeacherConfig.native_tool_calling`): the tool schemas go
  in `tools=`, history is sent with `tool_calls` / `tool` messages, and a native call is written back
  into the trajectory as protocol text (`<think>..</think><tool_call>..</tool_call>`), so SFT rows
  look the same either way;
- the server's separate reasoning field (`reasoning_content` or `reasoning` on the message, as vLLM,
  SGLang and DeepSeek-style APIs return it) becomes the `<think>` text of a reply that has no think
  block of its own; a turn with no reasoning at all keeps an empty `<think></think>` and the episode
  counts it (`Trajectory.empty_think_turns`);
- a reply the episode cannot use (not a protocol turn, cut off, an unusable answer) is evicted from
  the response cache (`LLMClient.forget`), so a retry or a rerun asks the model again;
- optionally a browse summary (`TeacherConfig.browse_summary`): a (possibly different) summary model
  answers the browse query from the page text, part by part, as Gen-Searcher's reader did.

ModelCallError (retries exhausted) propagates: the flow records a retryable failure for the prompt.
"""

from __future__ import annotations

import base64
import json
from string import Template
from typing import Any

from schemas.config import LLMEndpointConfig, TeacherConfig
from schemas.errors import ModelOutputError
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import ModelClient, Page, TeacherResult, Tools
from schemas.rows import Message, Prompt
from synthesis.agent_protocol import TOOL_SCHEMAS, final_answer_message, load_template, parse_model_turn
from synthesis.episode import ModelReply, run_episode
from synthesis.llm_client import ChatResult, LLMClient, NativeToolCall, Usage
from synthesis.response_cache import ResponseCache
from synthesis.toolbox import EpisodeMemory, Toolbox, ToolOutcome

IMAGE_PLACEHOLDER = "<image>"
SUMMARY_PART_CHARS = 12_000
SUMMARY_MAX_PARTS = 4


class _RecordingToolbox(Toolbox):
    """The shared toolbox, remembering the episode's image registry so the model adapter can attach
    the images a tool response names."""

    memory: EpisodeMemory | None = None

    async def execute(self, call: Any, round: int, memory: EpisodeMemory) -> ToolOutcome:
        self.memory = memory
        return await super().execute(call, round, memory)


REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_text(result: ChatResult) -> str:
    """The reasoning a server returned beside the content (vLLM/SGLang `reasoning_content`, OpenRouter
    and newer vLLM `reasoning`), or ''."""
    try:
        message = result.raw["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return ""
    for key in REASONING_FIELDS:
        value = message.get(key) if isinstance(message, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def with_reasoning(content: str, reasoning: str) -> str:
    """A text reply with the server's separate reasoning as its think block, unless it has one."""
    content = content.strip()
    if not reasoning or content.startswith("<think>"):
        return content
    return f"<think>{reasoning}</think>\n{content}"


def protocol_text(content: str, calls: list[NativeToolCall], reasoning: str = "") -> str:
    """A native reply written as protocol text: the reasoning and the content become the think block
    (unless the content has one)."""
    content = content.strip()
    if content.startswith("<think>"):
        think = content
    else:
        thought = "\n".join(part for part in (reasoning.strip(), content) if part)
        think = f"<think>{thought}</think>"
    blocks = []
    for call in calls:
        try:
            arguments: Any = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            arguments = call.arguments  # kept verbatim; the parser reports the malformed arguments
        blocks.append(
            f"<tool_call>{json.dumps({'name': call.name, 'arguments': arguments}, ensure_ascii=False)}</tool_call>"
        )
    return "\n".join([think, *blocks])


def _split_tool_response(content: str) -> tuple[str, str]:
    """(the <tool_response> part, any user text appended after it)."""
    marker = "</tool_response>"
    if marker not in content:
        return content, ""
    head, tail = content.split(marker, 1)
    return head + marker, tail.strip()


class EpisodeModel:
    """The `Model` of `run_episode` for one trajectory: messages in, one model reply out."""

    def __init__(self, client: LLMClient, toolbox: _RecordingToolbox, native_tools: bool):
        self.client = client
        self.toolbox = toolbox
        self.native_tools = native_tools
        self.usage = Usage()
        self._urls: dict[str, str] = {}

    def image_url(self, img_id: str) -> str:
        if img_id not in self._urls:
            memory = self.toolbox.memory
            if memory is None:
                raise ModelOutputError(f"image {img_id} was attached before any tool ran")
            png = self.toolbox.model_image(memory.registry.get(img_id))
            self._urls[img_id] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return self._urls[img_id]

    def user_content(self, text: str, image_ids: list[str]) -> str | list[dict[str, Any]]:
        """Text with each `<image>` placeholder replaced by the next attached image."""
        if not image_ids:
            return text
        pieces = text.split(IMAGE_PLACEHOLDER)
        parts: list[dict[str, Any]] = []
        for index, piece in enumerate(pieces):
            if piece:
                parts.append({"type": "text", "text": piece})
            if index < len(pieces) - 1 and index < len(image_ids):
                parts.append({"type": "image_url", "image_url": {"url": self.image_url(image_ids[index])}})
        for img_id in image_ids[len(pieces) - 1 :]:  # more images than placeholders
            parts.append({"type": "image_url", "image_url": {"url": self.image_url(img_id)}})
        return parts

    def chat_messages(self, messages: list[Message]) -> list[dict[str, Any]]:
        if self.native_tools:
            return self._native_messages(messages)
        result: list[dict[str, Any]] = []
        for message in messages:
            if message.role == "user":
                result.append(
                    {"role": "user", "content": self.user_content(message.content, message.image_ids)}
                )
            else:
                result.append({"role": message.role, "content": message.content})
        return result

    def _native_messages(self, messages: list[Message]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        pending_call: str | None = None
        for index, message in enumerate(messages):
            if message.role == "assistant":
                turn = parse_model_turn(message.content)
                if turn.ok and turn.tool_call is not None:
                    pending_call = f"call_{index}"
                    function = {"name": turn.tool_call.name, "arguments": turn.tool_call.arguments_json}
                    result.append(
                        {
                            "role": "assistant",
                            "content": turn.think,
                            "tool_calls": [{"id": pending_call, "type": "function", "function": function}],
                        }
                    )
                else:
                    result.append({"role": "assistant", "content": message.content})
                    pending_call = None
            elif message.role == "user" and pending_call is not None:
                response, extra = _split_tool_response(message.content)
                result.append({"role": "tool", "tool_call_id": pending_call, "content": response})
                if message.image_ids:
                    intro = "The images returned by image_search, in order:"
                    content = self.user_content(intro, message.image_ids)
                    result.append({"role": "user", "content": content})
                if extra:
                    result.append({"role": "user", "content": extra})
                pending_call = None
            else:
                result.append({"role": message.role, "content": message.content})
        return result

    async def __call__(self, messages: list[Message]) -> ModelReply:
        chat = self.chat_messages(messages)
        kwargs: dict[str, Any] = {}
        if self.native_tools:
            forced = final_answer_message() in messages[-1].content
            kwargs = {"tools": TOOL_SCHEMAS, "tool_choice": "none" if forced else "auto"}
        try:
            result = await self.client.chat(chat, **kwargs)
        except ModelOutputError:  # larger than max_response_bytes: an overrun, recorded as an ending
            return ModelReply(text="", truncated=True)
        self.usage = self.usage + result.usage
        reasoning = reasoning_text(result)
        if result.tool_calls:
            text = protocol_text(result.content, result.tool_calls, reasoning)
        else:
            text = with_reasoning(result.content, reasoning)
        return ModelReply(
            text=text,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            truncated=result.finish_reason == "length",
            discard=lambda: self.client.forget(result),
        )


class SummarizingBrowser:
    """A `Browser` whose page text is a summary model's answer to the browse query ("" = nothing
    relevant, which the toolbox turns into a refusal). The answer is one paragraph that restates the
    query, so the toolbox's relevance filter keeps it whole."""

    def __init__(
        self,
        inner: Any,
        client: LLMClient,
        *,
        part_chars: int = SUMMARY_PART_CHARS,
        max_parts: int = SUMMARY_MAX_PARTS,
    ):
        self.inner = inner
        self.client = client
        self.part_chars = part_chars
        self.max_parts = max_parts

    async def browse(self, url: str, query: str) -> Page:
        page = await self.inner.browse(url, query)
        text = page.text
        parts = [text[start : start + self.part_chars] for start in range(0, len(text), self.part_chars)]
        parts = parts[: self.max_parts]
        answers = []
        for number, part in enumerate(parts, start=1):
            user = Template(load_template("llm_summary_user.txt")).substitute(
                query=query, url=page.final_url or url, part=number, parts=len(parts), text=part
            )
            messages = [
                {"role": "system", "content": load_template("llm_summary_system.txt")},
                {"role": "user", "content": user},
            ]
            answer = " ".join((await self.client.chat(messages)).content.split())
            if answer and answer.rstrip(".").upper() != "NONE":
                answers.append(answer)
        summary = f"{query}: {' '.join(answers)}" if answers else ""
        return page.model_copy(update={"text": summary})


class LLMTeacher:
    """`Teacher` backend over an OpenAI-compatible chat model (a vision model for image turns)."""

    def __init__(
        self,
        endpoint: LLMEndpointConfig,
        config: TeacherConfig | None = None,
        *,
        fingerprint: str | None = None,
        blobs: Any = None,
        summary_endpoint: LLMEndpointConfig | None = None,
        client: LLMClient | None = None,
        summary_client: LLMClient | None = None,
        cache: ResponseCache | None = None,
    ):
        self.endpoint = endpoint
        self.config = config or TeacherConfig(kind="llm")
        self.fingerprint = fingerprint or config_fingerprint(
            {"teacher": self.config, "llm": endpoint, "summary": summary_endpoint}
        )
        self.blobs = blobs
        self.client = client or LLMClient(endpoint, cache=cache)
        self.summary_client: LLMClient | None = None
        if self.config.browse_summary:
            if summary_client is not None:
                self.summary_client = summary_client
            elif summary_endpoint is not None:
                self.summary_client = LLMClient(summary_endpoint, cache=cache)
            else:
                self.summary_client = self.client
        self.usage = Usage()

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: the teacher's client, and the browse-summary client when summaries are on (the
        teacher's own client, recorded once under "teacher", when no `[llm.summary]` is set)."""
        clients: dict[str, ModelClient] = {"teacher": self.client}
        if self.summary_client is not None:
            clients["summary"] = self.summary_client
        return clients

    async def run(self, prompt: Prompt, tools: Tools) -> TeacherResult:
        if self.summary_client is not None:
            tools = Tools(
                search=tools.search,
                browser=SummarizingBrowser(tools.browser, self.summary_client),
                images=tools.images,
            )
        toolbox = _RecordingToolbox(tools, self.blobs)
        model = EpisodeModel(self.client, toolbox, self.config.native_tool_calling)
        try:
            return await run_episode(prompt, model, toolbox, teacher=self.fingerprint, config=self.config)
        finally:
            self.usage = self.usage + model.usage
