"""The LLM claim extractor ([llm.claims]) against the scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json

import pytest

from filters.claim_extractor import LLMClaimExtractor, claim_evidence, claim_messages
from filters.quality_scores import score_judgement
from schemas.config import Config, LLMConfig, LLMEndpointConfig
from schemas.rows import Judgement
from testkit.servers.openai_server import Completion, ScriptedOpenAIServer
from tests.test_filters_quality import GOOD, JUMP_URL, SUBJECTS, TASK, trajectory

MIXED = "The first issue of 11 July 1968 had 519 chapters."  # both facts exist, never in one passage


def test_a_claim_is_supported_only_when_one_passage_states_all_its_facts() -> None:
    claims = ["The first issue was released on 11 July 1968.", MIXED, "It is a poster."]
    rows = claim_evidence(trajectory(GOOD), TASK, claims, SUBJECTS, "llm-claims-x")
    found = [(row.fact, row.kind, row.supported, row.tool_call_index, row.source_url) for row in rows]
    assert found == [
        ("The first issue was released on 11 July 1968.", "claim", True, 1, JUMP_URL),
        (MIXED, "claim", False, -1, ""),
    ]  # "It is a poster." has nothing to check: no row


def test_the_prompt_names_the_task_and_the_gen_prompt() -> None:
    system, user = claim_messages(GOOD, TASK)
    assert "factual claims" in system["content"]
    assert TASK in user["content"] and GOOD in user["content"]


def test_configuring_claims_changes_only_the_judge_fingerprint() -> None:
    plain = Config()
    endpoint = LLMEndpointConfig(base_url="http://127.0.0.1:9/v1", model="claims")
    with_claims = Config(llm=LLMConfig(claims=endpoint))
    assert "claims" not in plain.model_dump(mode="json")["llm"]
    assert with_claims.judge_fingerprint() != plain.judge_fingerprint()
    assert with_claims.curation_fingerprint() == plain.curation_fingerprint()
    assert with_claims.teacher_fingerprint() == plain.teacher_fingerprint()


@pytest.mark.slow
def test_extractor_asks_the_model_and_scores_the_judgement_from_its_claims() -> None:
    with ScriptedOpenAIServer() as server:
        server.reply(
            Completion(
                content=json.dumps({"claims": [{"text": "released on July 11, 1968"}, {"text": MIXED}]})
            )
        )
        endpoint = LLMEndpointConfig(base_url=server.base_url, model="claims-model", max_retries=0)
        extractor = LLMClaimExtractor(endpoint)
        rows = asyncio.run(extractor.evidence(trajectory(GOOD), TASK, SUBJECTS))
        (request,) = server.chat_requests()
        assert request.body["model"] == "claims-model"
        assert request.body["response_format"]["json_schema"]["name"] == "claims"
    assert [(row.supported, row.extractor == extractor.fingerprint) for row in rows] == [
        (True, True),
        (False, True),
    ]
    plain = Judgement(id="j", image_id="i", trajectory_id="traj-jump", judge="rules", keep=True)
    judgement, written = score_judgement(plain, trajectory(GOOD), TASK, SUBJECTS, evidence=rows)
    assert written == rows
    assert (judgement.grounding, judgement.facts, judgement.supported_facts) == (0.5, 2, 1)
