"""Structured output over the LLM client: a pydantic model in, a validated instance out.

The request carries the model's JSON schema as `response_format` (servers that enforce it: OpenAI,
vLLM, SGLang; others at least see it). The reply is parsed leniently (code fences and prose around
one JSON object are tolerated), validated, and on failure the model gets one repair turn quoting the
error. A second failure raises `ModelOutputError` (the flow records it); both unusable answers are
evicted from the response cache so a later attempt asks again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import ModelOutputError
from synthesis.agent_protocol import load_template
from synthesis.llm_client import LLMClient, Usage

M = TypeVar("M", bound=BaseModel)


def json_schema_format(model: type[BaseModel], name: str, strict: bool = False) -> dict[str, Any]:
    """The `response_format` asking for JSON that matches `model`'s schema. `strict` only for schemas
    within OpenAI's strict subset (every field required, no string-length keywords)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": model.model_json_schema(), "strict": strict},
    }


def extract_json(text: str) -> Any:
    """The JSON value in a reply: the whole text, a fenced block, or the outermost {...}."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0].strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        try:
            return json.loads(stripped[start : end + 1])
        except ValueError as error:
            raise ModelOutputError(f"reply is not valid JSON ({error})") from None
    raise ModelOutputError("reply contains no JSON object")


def _describe(error: Exception | None) -> str:
    if isinstance(error, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in item['loc']) or 'value'}: {item['msg']}" for item in error.errors()
        ]
        return "; ".join(parts[:8])
    return str(error)


@dataclass(frozen=True)
class StructuredResult(Generic[M]):
    value: M
    usage: Usage
    repaired: bool


async def structured_chat(
    client: LLMClient,
    messages: list[dict[str, Any]],
    model: type[M],
    *,
    name: str,
    check: Callable[[M], None] | None = None,
    strict: bool = False,
) -> StructuredResult[M]:
    """Ask, validate (`check` may raise ValueError/ModelOutputError for rules beyond the schema),
    repair once, or raise ModelOutputError."""
    response_format = json_schema_format(model, name, strict)
    conversation = list(messages)
    usage = Usage()
    error: Exception | None = None
    for attempt in range(2):
        result = await client.chat(conversation, response_format=response_format)
        usage = usage + result.usage
        try:
            value = model.model_validate(extract_json(result.content))
            if check is not None:
                check(value)
            return StructuredResult(value=value, usage=usage, repaired=attempt > 0)
        except (ModelOutputError, ValidationError, ValueError) as caught:
            error = caught
            client.forget(result)
            if result.finish_reason == "length":
                error = ModelOutputError(f"reply was cut off at max_tokens ({_describe(caught)})")
        repair = Template(load_template("llm_repair.txt")).substitute(
            error=_describe(error), schema=json.dumps(model.model_json_schema(), ensure_ascii=False)
        )
        conversation = [
            *messages,
            {"role": "assistant", "content": result.content[:4000]},
            {"role": "user", "content": repair},
        ]
    raise ModelOutputError(f"{name}: no valid JSON after one repair ({_describe(error)})")
