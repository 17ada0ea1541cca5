"""groundgen's three agent tools (`search`, `image_search`, `browse`) as tools for verl's multi-turn agent.

`groundgen export --format verl` writes a `tool_config.yaml` whose entries name
`flows.verl_tools.GroundgenTool`; verl instantiates the class once per tool with that entry's `config`
and `tool_schema`, and its tool agent loop calls `create` -> `execute` -> `release` for every single
tool call. Each call runs through the same `Toolbox` as the teacher (`synthesis/toolbox.py`), on the
backends of a groundgen config (`config.groundgen_config`: a TOML path; empty = the offline default),
so the policy trained on the verl data sees the tool responses the SFT trajectories saw. What the
protocol remembers within a trajectory (image ids IMG_001, ...; queries already used) lives in one
`EpisodeMemory` per rollout, shared by the three tools and keyed by the rollout's `request_id` (verl
passes its `agent_data` to `execute`); the most recent `MAX_EPISODES` rollouts are kept. Images found
by `image_search` come back as the response's images (downscaled as for the teacher's model) instead
of `<image>` lines in the text.

The class follows verl's `BaseTool` interface without importing verl at module level; `execute`
builds verl's own `ToolResponse` (installed with verl).
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from uuid import uuid4

from schemas.protocols import Tools
from synthesis.agent_protocol import ParsedToolCall
from synthesis.toolbox import EpisodeMemory, Toolbox

MAX_EPISODES = 10_000

_WRAPPER = re.compile(r"^<tool_response>\n?(.*?)\n?</tool_response>$", re.DOTALL)
_IMAGE_LINE = re.compile(r"^<image>(?:\n|$)", re.MULTILINE)


def _schema_dict(tool_schema: Any) -> dict[str, Any]:
    if tool_schema is None:
        return {}
    if hasattr(tool_schema, "model_dump"):
        return tool_schema.model_dump(exclude_unset=True, exclude_none=True)
    return dict(tool_schema)


def response_text(content: str) -> str:
    """A groundgen tool response as verl's tool message text: no `<tool_response>` wrapper (the chat
    template adds it around tool messages) and no `<image>` lines (the images travel as images)."""
    match = _WRAPPER.match(content.strip())
    body = match.group(1) if match else content
    return _IMAGE_LINE.sub("", body).strip()


def _tool_response(text: str, images: list[Any]) -> Any:
    try:
        from verl.tools.schemas import ToolResponse
    except ImportError as error:  # pragma: no cover - only without verl installed
        raise ImportError("flows.verl_tools is used by verl's agent loop: pip install verl") from error
    return ToolResponse(text=text, image=images) if images else ToolResponse(text=text)


ToolsOpener = Callable[[], AbstractAsyncContextManager[tuple[Tools, Any]]]


def groundgen_tools(config_path: str) -> ToolsOpener:
    """Opens the backends of a groundgen config (and its blob store) for one tool call."""
    lock = threading.Lock()
    built: dict[str, Any] = {}

    def resources() -> Any:
        with lock:
            if "resources" not in built:
                from pathlib import Path

                from flows.resources import resources_for
                from schemas.config import load_config

                built["resources"] = resources_for(load_config(Path(config_path) if config_path else None))
            return built["resources"]

    @asynccontextmanager
    async def open_tools() -> AsyncIterator[tuple[Tools, Any]]:
        backends = resources()
        async with backends.tools() as tools:
            yield tools, backends.blobs

    return open_tools


class GroundgenTool:
    """One of groundgen's tools, with verl's `BaseTool` interface (`create`, `execute`, `calc_reward`,
    `release`, `get_openai_tool_schema`)."""

    def __init__(self, config: dict[str, Any], tool_schema: Any, *, open_tools: ToolsOpener | None = None):
        self.config = config
        self.tool_schema = tool_schema
        self.name: str = _schema_dict(tool_schema).get("function", {}).get("name", "")
        if not self.name:
            raise ValueError(
                "GroundgenTool needs a tool_schema naming the tool (search, image_search, browse)"
            )
        self._open_tools = open_tools or groundgen_tools(str(config.get("groundgen_config", "") or ""))

    def get_openai_tool_schema(self) -> Any:
        return self.tool_schema

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, Any]:
        return instance_id or uuid4().hex, _tool_response("", [])

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[Any, float, dict[str, Any]]:
        rollout = getattr(kwargs.get("agent_data"), "request_id", None)
        memory, round_number = _EPISODES.next_round(str(rollout) if rollout else f"instance:{instance_id}")
        arguments = dict(parameters) if isinstance(parameters, dict) else None
        call = ParsedToolCall(
            self.name,
            arguments,
            json.dumps(parameters, ensure_ascii=False, default=str),
            "" if arguments is not None else "tool arguments must be a JSON object",
        )
        async with self._open_tools() as (tools, blobs):
            toolbox = Toolbox(tools, blobs)
            outcome = await toolbox.execute(call, round_number, memory)
            images = [_pil(toolbox.model_image(reference)) for reference in outcome.new_references]
        metrics = {"ok": outcome.record.ok, "error": outcome.record.error, "images": len(images)}
        return _tool_response(response_text(outcome.message.content), images), 0.0, metrics

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0  # the reward is the model-judged image score (`reward_model` in the data), not a tool's

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        _EPISODES.forget(f"instance:{instance_id}")  # rollouts keyed by request_id outlive one call


class EpisodeStore:
    """Per-rollout protocol memory shared by the tools of one process, the newest `limit` kept."""

    def __init__(self, limit: int = MAX_EPISODES):
        self.limit = limit
        self._lock = threading.Lock()
        self._episodes: OrderedDict[str, tuple[EpisodeMemory, int]] = OrderedDict()

    def next_round(self, key: str) -> tuple[EpisodeMemory, int]:
        with self._lock:
            memory, rounds = self._episodes.pop(key, (EpisodeMemory(), 0))
            self._episodes[key] = (memory, rounds + 1)
            while len(self._episodes) > self.limit:
                self._episodes.popitem(last=False)
            return memory, rounds + 1

    def forget(self, key: str) -> None:
        with self._lock:
            self._episodes.pop(key, None)


_EPISODES = EpisodeStore()


def _pil(data: bytes) -> Any:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
