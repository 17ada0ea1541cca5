"""LLMClient against the scripted OpenAI-compatible server: real HTTP, real openai SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from extractors.rate_limit import TokenBucket
from schemas.config import LLMEndpointConfig
from schemas.errors import ConfigurationError, ModelCallError, ModelOutputError
from schemas.retry import RetryPolicy, parse_retry_after
from synthesis.llm_client import LLMClient, redact_url
from synthesis.response_cache import MemoryResponseCache, SqliteResponseCache, cache_key, endpoint_cache_path
from testkit.servers.openai_server import Completion, Delay, RawBody, Reset, ScriptedOpenAIServer, Status

KEY = "sk-test-DO-NOT-LOG-4f1c9e"
MESSAGES = [{"role": "user", "content": "Say hi."}]


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as scripted:
        yield scripted


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GROUNDGEN_TEST_KEY", KEY)


def endpoint(server: ScriptedOpenAIServer, **overrides) -> LLMEndpointConfig:
    values = dict(
        base_url=server.base_url, model="scripted-model", api_key_env="GROUNDGEN_TEST_KEY", max_retries=3
    )
    values.update(overrides)
    return LLMEndpointConfig(**values)


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def make_client(server, *, sleep=None, cache=None, **overrides) -> LLMClient:
    return LLMClient(
        endpoint(server, **overrides), sleep=sleep or SleepRecorder(), cache=cache, rng=random.Random(0)
    )


def run(coroutine):
    return asyncio.run(coroutine)


# --- pure helpers -----------------------------------------------------------------------------------


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == 7.0
    assert (
        parse_retry_after(
            {"retry-after": format_datetime(now - timedelta(seconds=5), usegmt=True)}, now=now.timestamp()
        )
        == 0.0
    )


def test_backoff_is_full_jitter_within_exponential_cap():
    rng = random.Random(1)
    for attempt in range(8):
        delay = RetryPolicy(base_s=0.5, cap_s=4.0).backoff(attempt, rng)
        assert 0.0 <= delay <= min(4.0, 0.5 * 2**attempt)
    assert RetryPolicy(base_s=0.5, cap_s=30.0).backoff(2, random.Random(0)) == random.Random(0).uniform(
        0, 2.0
    )


def test_redact_url_drops_credentials_and_query():
    assert (
        redact_url("https://user:pw@api.example.com:8443/v1?api-key=secret")
        == "https://api.example.com:8443/v1"
    )


def test_token_bucket_reserves_in_order_and_refunds():
    now = [0.0]
    bucket = TokenBucket(per_minute=60, burst_s=2.0, clock=lambda: now[0])  # 1/s, holds 2
    assert [bucket.reserve(1) for _ in range(4)] == [0.0, 0.0, 1.0, 2.0]
    now[0] = 10.0
    assert bucket.reserve(1) == 0.0
    big = TokenBucket(per_minute=600, burst_s=1.0, clock=lambda: now[0])  # 10/s, holds 10
    assert big.reserve(25) == 0.0  # larger than the bucket: passes, leaves a debt of 15
    assert big.reserve(5) == 2.0  # (5 - (-15)) / 10
    big.refund(20)
    assert big.level == 0.0  # -20 + 20, capped at the capacity


def test_cache_key_depends_on_model_messages_and_parameters():
    base = cache_key("m", MESSAGES, {"temperature": 0.7})
    assert base == cache_key("m", [dict(MESSAGES[0])], {"temperature": 0.7})
    assert base != cache_key("m2", MESSAGES, {"temperature": 0.7})
    assert base != cache_key("m", MESSAGES, {"temperature": 0.0})
    assert len(base) == 64


# --- calls --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_returns_content_usage_and_sends_key_header(server):
    server.reply(Completion("Hi.", prompt_tokens=12, completion_tokens=3))
    client = make_client(server, price_per_million_input=2.0, price_per_million_output=10.0, temperature=0.2)
    result = run(client.chat(MESSAGES))
    assert result.content == "Hi."
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.attempts) == (12, 3, 1)
    assert result.usage.cost_usd == pytest.approx((12 * 2.0 + 3 * 10.0) / 1e6)
    assert not result.cached
    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "scripted-model"
    assert request.body["messages"] == MESSAGES
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 4096
    assert client.usage.calls == 1 and client.usage.prompt_tokens == 12
    assert KEY not in repr(client)


def test_missing_key_variable_is_a_configuration_error(server, monkeypatch):
    monkeypatch.delenv("GROUNDGEN_TEST_KEY")
    with pytest.raises(ConfigurationError, match="GROUNDGEN_TEST_KEY"):
        make_client(server)


@pytest.mark.slow
def test_no_key_variable_sends_placeholder(server):
    server.reply("ok")
    run(make_client(server, api_key_env="").chat(MESSAGES))
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


@pytest.mark.slow
def test_429_with_retry_after_waits_exactly_that_long(server):
    sleep = SleepRecorder()
    server.reply(Status(429, retry_after="2"), Status(429, retry_after="0.5"), "done")
    result = run(make_client(server, sleep=sleep).chat(MESSAGES))
    assert result.content == "done"
    assert sleep.delays == [2.0, 0.5]
    assert result.usage.attempts == 3
    assert len(server.requests) == 3


@pytest.mark.slow
def test_429_without_retry_after_uses_jittered_backoff(server):
    sleep = SleepRecorder()
    server.reply(Status(429), Status(429), "done")
    run(make_client(server, sleep=sleep).chat(MESSAGES))
    rng = random.Random(0)
    assert sleep.delays == [rng.uniform(0, 0.5), rng.uniform(0, 1.0)]


@pytest.mark.slow
def test_retry_after_beyond_limit_gives_up(server):
    server.reply(Status(429, retry_after="3600"))
    client = LLMClient(endpoint(server), sleep=SleepRecorder(), max_retry_after_s=60)
    with pytest.raises(ModelCallError, match="retry after 3600s"):
        run(client.chat(MESSAGES))


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        Status(500),
        Status(503),
        Reset(),
        RawBody(b'{"id": "chatcmpl-1", "choices": [{"mess'),
        RawBody(b"<html>Bad gateway, try later</html>", content_type="text/html"),
        RawBody(b'{"unexpected": true}'),
    ],
    ids=["500", "503", "connection_reset", "truncated_json_body", "prose_body", "not_a_completion"],
)
def test_transient_faults_are_retried(server, fault):
    server.reply(fault, "recovered")
    result = run(make_client(server).chat(MESSAGES))
    assert result.content == "recovered"
    assert result.usage.attempts == 2
    assert len(server.requests) == 2


@pytest.mark.slow
def test_read_timeout_is_retried(server):
    server.reply(Delay(1.5, "too late"), "in time")
    started = time.monotonic()
    result = run(make_client(server, timeout_s=0.3).chat(MESSAGES))
    assert result.content == "in time"
    assert time.monotonic() - started < 1.4


@pytest.mark.slow
def test_retries_exhausted_raise_model_call_error(server):
    server.reply(*[Status(503)] * 4)
    with pytest.raises(ModelCallError, match="failed after 4 attempts: HTTP 503") as caught:
        run(make_client(server, max_retries=3).chat(MESSAGES))
    assert caught.value.retryable
    assert len(server.requests) == 4


@pytest.mark.slow
def test_client_errors_are_not_retried(server):
    server.reply(Status(400, message="bad request: unknown parameter"))
    with pytest.raises(ModelCallError, match="HTTP 400 .*unknown parameter"):
        run(make_client(server).chat(MESSAGES))
    server.reply(Status(401))
    with pytest.raises(ConfigurationError, match="GROUNDGEN_TEST_KEY"):
        run(make_client(server).chat(MESSAGES))
    assert len(server.requests) == 2


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_response_larger_than_limit_is_a_model_output_error(server, chunked):
    big = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x" * 200_000}}]}).encode()
    server.reply(RawBody(big, chunked=chunked))
    with pytest.raises(ModelOutputError, match="max_response_bytes=50000"):
        run(make_client(server, max_response_bytes=50_000).chat(MESSAGES))
    assert len(server.requests) == 1  # not retried: the same call would be as large again


@pytest.mark.slow
def test_api_key_never_logged_even_on_retries_and_errors(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.reply(Status(429), Reset(), "ok", Status(503), Status(503), Status(503))
    client = make_client(server, max_retries=2)
    run(client.chat(MESSAGES))
    with pytest.raises(ModelCallError) as caught:
        run(client.chat([{"role": "user", "content": "again"}]))
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert any("retry 2 of 2" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.__dict__)
    assert KEY not in str(caught.value)


# --- cache -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cache_replays_without_paying_and_forget_evicts(server, tmp_path):
    server.reply(Completion("first", prompt_tokens=10, completion_tokens=2), "second", "third")
    config = endpoint(server, price_per_million_input=1.0)
    cache = SqliteResponseCache(endpoint_cache_path(tmp_path, config))
    client = LLMClient(config, cache=cache)
    first = run(client.chat(MESSAGES))
    replay = run(LLMClient(config, cache=SqliteResponseCache(cache.path)).chat(MESSAGES))  # a rerun
    assert (replay.content, replay.cached, replay.usage.cost_usd, replay.usage.prompt_tokens) == (
        "first",
        True,
        0.0,
        10,
    )
    assert len(server.requests) == 1
    assert first.cache_key == replay.cache_key
    client.forget(replay)
    assert run(client.chat(MESSAGES)).content == "second"
    assert len(server.requests) == 2
    assert run(client.chat(MESSAGES, temperature=0.0)).content == "third"  # other parameters: a miss
    assert cache.path.parent.name == "llm-cache" and KEY not in cache.path.read_bytes().decode("latin-1")


@pytest.mark.slow
def test_memory_cache_and_use_cache_false(server):
    server.reply("a", "b")
    cache = MemoryResponseCache()
    client = make_client(server, cache=cache)
    assert run(client.chat(MESSAGES)).content == "a"
    assert run(client.chat(MESSAGES, use_cache=False)).content == "b"
    assert run(client.chat(MESSAGES)).content == "a"
    assert len(cache) == 1 and client.usage.cached_calls == 1 and client.usage.calls == 3


# --- limits ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrency_is_bounded(server):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def respond(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return "ok"

    server.respond_with(respond)
    client = make_client(server, max_concurrency=3)

    async def many():
        return await asyncio.gather(*[client.chat([{"role": "user", "content": str(i)}]) for i in range(12)])

    assert len(run(many())) == 12
    assert state["max"] == 3


@pytest.mark.slow
def test_requests_per_minute_limit_spaces_calls(server):
    server.respond_with(lambda request: "ok")
    client = LLMClient(endpoint(server, requests_per_minute=1200), rate_burst_s=0.25)  # 20/s, burst 5

    async def many():
        await asyncio.gather(*[client.chat([{"role": "user", "content": str(i)}]) for i in range(15)])

    started = time.monotonic()
    run(many())
    assert time.monotonic() - started >= 0.45  # 10 calls beyond the burst at 20/s


@pytest.mark.slow
def test_client_works_across_event_loops(server):
    server.reply("one", "two")
    client = make_client(server)
    assert run(client.chat([{"role": "user", "content": "1"}])).content == "one"
    assert run(client.chat([{"role": "user", "content": "2"}])).content == "two"
