"""The example OpenAI-compatible config validates and builds every LLM backend (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from filters.llm_judge import LLMJudge
from schemas.config import load_config
from schemas.errors import ConfigurationError
from synthesis.llm_teacher import LLMTeacher
from synthesis.llm_writer import LLMWriter

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "openai-compatible.toml"


def test_example_config_validates_with_every_llm_section():
    config = load_config(EXAMPLE)
    assert (config.writer.kind, config.teacher.kind, config.judge.kind) == ("llm", "llm", "llm")
    for role in ("writer", "teacher", "judge", "summary"):
        endpoint = getattr(config.llm, role)
        assert endpoint is not None and endpoint.base_url.startswith("https://")
        assert endpoint.api_key_env == "OPENAI_API_KEY"
    assert config.teacher.browse_summary is True


def test_example_config_builds_backends_and_needs_the_key(monkeypatch, tmp_path):
    config = load_config(EXAMPLE)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        LLMWriter(config.llm.writer, config.writer, fingerprint=config.writer_fingerprint())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")
    writer = LLMWriter(config.llm.writer, config.writer, fingerprint=config.writer_fingerprint())
    teacher = LLMTeacher(
        config.llm.teacher,
        config.teacher,
        fingerprint=config.teacher_fingerprint(),
        blobs=None,
        summary_endpoint=config.llm.summary,
    )
    judge = LLMJudge(config.llm.judge, config.judge, None, fingerprint=config.judge_fingerprint())
    assert writer.fingerprint == config.writer_fingerprint()
    assert teacher.summary_client is not None and teacher.summary_client.config.model == "gpt-4.1-mini"
    assert judge.fingerprint == config.judge_fingerprint()
    assert "sk-example" not in repr(writer.client) + repr(teacher.client) + repr(judge.client)
