"""The LLM claim extractor: a backend for `evidence` rows when `[llm.claims]` is configured.

A model splits the gen_prompt into atomic factual claims (`templates/claims_*.txt`, JSON-schema
output through `synthesis.llm_structured`). The lookup stays deterministic and stricter than the
default extractor's: a claim is supported only when ONE passage of the tool responses states every
checkable fact of it (`filters.facts`), so "born in 1930 in Paris" needs a source saying both. A claim
with no checkable fact (no number, date, quantity or name) cannot be looked up and is left out. Its
rows carry kind "claim" and the extractor's fingerprint, so they sit beside the default rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from filters.evidence import tool_passages
from filters.facts import extract_facts, supports
from schemas.config import LLMEndpointConfig
from schemas.ids import content_id
from schemas.ids import fingerprint as config_fingerprint
from schemas.protocols import ModelClient
from schemas.rows import Evidence, Trajectory
from synthesis.llm_client import LLMClient, Usage
from synthesis.llm_structured import structured_chat
from synthesis.response_cache import ResponseCache

MAX_CLAIMS = 40


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)


class Claims(BaseModel):
    model_config = ConfigDict(extra="forbid")

    claims: list[Claim]


@cache
def load_template(name: str) -> str:
    return resources.files("filters").joinpath("templates", name).read_text(encoding="utf-8").rstrip("\n")


def claim_messages(gen_prompt: str, task_prompt: str) -> list[dict[str, Any]]:
    """The extractor's messages (pure)."""
    user = Template(load_template("claims_user.txt")).substitute(
        task_prompt=task_prompt, gen_prompt=gen_prompt
    )
    return [
        {"role": "system", "content": load_template("claims_system.txt")},
        {"role": "user", "content": user},
    ]


def claim_evidence(
    trajectory: Trajectory,
    task_prompt: str,
    claims: Sequence[str],
    subjects: Sequence[str],
    extractor: str,
) -> list[Evidence]:
    """One row per checkable claim (pure): supported when one passage states all of its facts."""
    given = extract_facts(task_prompt)
    passages = tool_passages(trajectory)
    rows: dict[str, Evidence] = {}
    for claim in claims[:MAX_CLAIMS]:
        facts = [fact for fact in extract_facts(claim).facts if not supports(given, fact)]
        if not facts:
            continue
        supporting = [p for p in passages if all(supports(p.sheet, fact) for fact in facts)]
        about = [p for p in supporting if subjects and p.mentions(subjects)]
        ranked = about or supporting
        best = ranked[0] if ranked else None
        row_id = content_id(trajectory.id, extractor, "claim", " ".join(claim.split()).casefold())
        rows.setdefault(
            row_id,
            Evidence(
                id=row_id,
                trajectory_id=trajectory.id,
                fact=claim.strip(),
                kind="claim",
                supported=best is not None,
                source_url=best.url if best is not None else "",
                tool_call_index=best.tool_call_index if best is not None else -1,
                extractor=extractor,
                about_subject=bool(about),
            ),
        )
    return list(rows.values())


class LLMClaimExtractor:
    """Evidence rows from an OpenAI-compatible model's claims (the `[llm.claims]` endpoint)."""

    def __init__(
        self,
        endpoint: LLMEndpointConfig,
        *,
        client: LLMClient | None = None,
        cache: ResponseCache | None = None,
    ):
        self.endpoint = endpoint
        self.fingerprint = "llm-claims-" + config_fingerprint({"claims": endpoint, "version": 1})
        self.client = client or LLMClient(endpoint, cache=cache)
        self.usage = Usage()

    def model_clients(self) -> dict[str, ModelClient]:
        """`Metered`: this backend's model client, under the role its usage is recorded as."""
        return {"claims": self.client}

    async def evidence(
        self, trajectory: Trajectory, task_prompt: str, subjects: Sequence[str]
    ) -> list[Evidence]:
        """Raises ModelCallError / ModelOutputError like every model backend (a failure row)."""
        if not trajectory.gen_prompt.strip():
            return []
        result = await structured_chat(
            self.client, claim_messages(trajectory.gen_prompt, task_prompt), Claims, name="claims"
        )
        self.usage = self.usage + result.usage
        claims = [claim.text for claim in result.value.claims]
        return claim_evidence(trajectory, task_prompt, claims, subjects, self.fingerprint)
