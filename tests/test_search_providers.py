"""Serper and SearXNG providers against a loopback server speaking their formats; rate limit and retries."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest

from extractors.rate_limit import TokenBucket, search_retry_policy
from extractors.searxng import SearxngSearch
from extractors.serper import SerperSearch
from schemas.config import SearchConfig
from schemas.errors import ConfigurationError, FetchError
from schemas.protocols import ImageHit, SearchBackend, SearchHit
from schemas.retry import retry_after_seconds
from testkit.servers.search_providers import SearchProviderServer, serve_search_providers

SECRET = "sk-serper-7c1f0d9e-do-not-log"
KEY_ENV = "GROUNDGEN_TEST_SERPER_KEY"


@pytest.fixture(scope="module")
def provider_server() -> Iterator[SearchProviderServer]:
    server = serve_search_providers(api_key=SECRET)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(provider_server: SearchProviderServer) -> SearchProviderServer:
    provider_server.script.clear()
    provider_server.requests.clear()
    return provider_server


class RecordedSleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def serper(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch, **options: object) -> SerperSearch:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SerperSearch(server.base_url, api_key_env=KEY_ENV, timeout_s=5, **options)


def run(backend, method: str, query: str, top_k: int):
    async def go():
        try:
            return await getattr(backend, method)(query, top_k)
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.mark.slow
def test_serper_search(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = serper(server, monkeypatch)
    assert isinstance(backend, SearchBackend)
    hits = run(backend, "search", "eiffel tower", 2)
    assert hits == [
        SearchHit(
            title="eiffel tower — result 1",
            url="https://example.org/eiffel-tower/1",
            snippet="Snippet 1 about eiffel tower.",
        ),
        SearchHit(
            title="eiffel tower — result 2",
            url="https://example.org/eiffel-tower/2",
            snippet="Snippet 2 about eiffel tower.",
        ),
    ]
    method, path, _, headers, body = server.requests[0]
    assert (method, path, headers["X-API-KEY"], json.loads(body)) == (
        "POST",
        "/search",
        SECRET,
        {"q": "eiffel tower", "num": 2},
    )


@pytest.mark.slow
def test_serper_images(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    hits = run(serper(server, monkeypatch), "image_search", "red panda", 2)
    assert hits[1] == ImageHit(
        url="https://img.example.org/2.jpg",
        title="red panda image 2",
        page_url="https://example.org/page/2",
        thumbnail_url="https://encrypted-tbn0.gstatic.com/images?q=tbn:2",
        width=1280,
        height=960,
    )
    assert len(hits) == 2 and server.requests[0][1] == "/images"


@pytest.mark.slow
def test_serper_429_then_success_honours_retry_after(
    server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.script = [(429, b'{"message":"Too many requests"}', {"Retry-After": "3"}), (503, b"{}", {})]
    sleeps = RecordedSleeps()
    hits = run(serper(server, monkeypatch, sleep=sleeps, backoff_base_s=0.25), "search", "q", 1)
    assert [h.url for h in hits] == ["https://example.org/q/1"]
    assert len(server.requests) == 3
    assert sleeps.delays[0] == 3.0  # Retry-After honoured
    assert 0 <= sleeps.delays[1] <= 0.5  # then jittered backoff: base * 2**1


@pytest.mark.slow
def test_serper_gives_up_after_retries(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.script = [(500, b"{}", {})] * 3
    with pytest.raises(FetchError, match=r"^serper search: HTTP 500 after 3 attempts$") as caught:
        run(serper(server, monkeypatch, sleep=RecordedSleeps(), max_retries=2), "search", "q", 1)
    assert (caught.value.status, caught.value.retryable) == (500, True)


@pytest.mark.slow
def test_serper_malformed_json(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.script = [(200, b'{"organic": [', {})]
    with pytest.raises(
        FetchError, match=r"^serper search: malformed JSON in the response .*body starts '\{\"organic\": \['$"
    ):
        run(serper(server, monkeypatch), "search", "q", 1)


@pytest.mark.slow
def test_serper_wrong_shape(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.script = [(200, b'{"organic": "nope"}', {})]
    with pytest.raises(FetchError, match="'organic' is not a list"):
        run(serper(server, monkeypatch), "search", "q", 1)


@pytest.mark.slow
def test_serper_bad_key_is_not_retried(server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    backend = SerperSearch(server.base_url, api_key_env=KEY_ENV, timeout_s=5)
    with pytest.raises(FetchError, match=r"^serper search: HTTP 403$") as caught:
        run(backend, "search", "q", 1)
    assert caught.value.retryable is False and len(server.requests) == 1


@pytest.mark.slow
def test_serper_key_never_logged(
    server: SearchProviderServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script = [
        (429, b"{}", {"Retry-After": "0"}),
        (200, SECRET.encode(), {}),
    ]  # a server echoing the key
    backend = serper(server, monkeypatch, sleep=RecordedSleeps())
    with pytest.raises(FetchError) as caught:
        run(backend, "search", "q", 1)
    assert len(caplog.records) > 0  # something was logged (retry notice, httpx/httpcore debug lines)
    assert SECRET not in caplog.text
    assert SECRET not in str(caught.value) and "***" in str(caught.value)
    assert SECRET not in repr(backend)


def test_serper_missing_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(
        ConfigurationError, match=f"^Serper needs an API key in the environment variable {KEY_ENV}$"
    ):
        SerperSearch(api_key_env=KEY_ENV)


def test_serper_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    config = SearchConfig(provider="serper", api_key_env=KEY_ENV, requests_per_minute=30, timeout_s=7)
    backend = SerperSearch.from_config(config)
    assert (backend.base_url, backend.timeout_s, backend.bucket.rate) == (
        "https://google.serper.dev",
        7,
        0.5,
    )


@pytest.mark.slow
def test_searxng_search(server: SearchProviderServer) -> None:
    hits = run(SearxngSearch(server.base_url, timeout_s=5), "search", "tea", 10)
    assert hits == [
        SearchHit(title=f"tea {i}", url=f"https://example.org/{i}", snippet=f"About tea ({i}).")
        for i in (1, 2, 3)
    ]
    method, path, query, _, _ = server.requests[0]
    assert (method, path, query["q"], query["format"]) == ("GET", "/search", ["tea"], ["json"])
    assert "categories" not in query


@pytest.mark.slow
def test_searxng_images(server: SearchProviderServer) -> None:
    hits = run(SearxngSearch(server.base_url, timeout_s=5), "image_search", "tea", 10)
    assert hits == [
        ImageHit(
            url="https://upload.example.org/a.jpg",
            title="tea photo",
            page_url="https://example.org/gallery/1",
            thumbnail_url="https://thumbs.example.org/a.jpg",
            width=1920,
            height=1080,
        ),
        ImageHit(
            url="https://upload.example.org/b.png",
            title="unknown size",
            page_url="https://example.org/gallery/4",
        ),
    ]
    assert server.requests[0][2]["categories"] == ["images"]


@pytest.mark.slow
def test_searxng_429_then_success(server: SearchProviderServer) -> None:
    server.script = [(429, b"Too Many Requests", {"Retry-After": "2"})]
    sleeps = RecordedSleeps()
    hits = run(SearxngSearch(server.base_url, timeout_s=5, sleep=sleeps), "search", "tea", 1)
    assert (len(hits), sleeps.delays, len(server.requests)) == (1, [2.0], 2)


@pytest.mark.slow
def test_searxng_malformed_json(server: SearchProviderServer) -> None:
    server.script = [(200, b"<html>not json</html>", {})]
    with pytest.raises(FetchError, match="^searxng general: malformed JSON in the response"):
        run(SearxngSearch(server.base_url, timeout_s=5), "search", "tea", 1)


@pytest.mark.slow
def test_searxng_without_json_format_enabled(server: SearchProviderServer) -> None:
    server.script = [(403, b"<html>403 Forbidden</html>", {})]
    with pytest.raises(FetchError, match=r"refuses JSON output \(add 'json' to search.formats\)"):
        run(SearxngSearch(server.base_url, timeout_s=5), "search", "tea", 1)


@pytest.mark.slow
def test_unreachable_provider_is_retryable() -> None:
    backend = SearxngSearch("http://127.0.0.1:9", timeout_s=2, max_retries=1, sleep=RecordedSleeps())
    with pytest.raises(FetchError, match="^searxng general: ConnectError after 2 attempts$") as caught:
        run(backend, "search", "tea", 1)
    assert caught.value.retryable is True


def test_token_bucket_spaces_requests() -> None:
    now = [0.0]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        now[0] += seconds

    async def go() -> None:
        bucket = TokenBucket(120, burst=2, clock=lambda: now[0], sleep=sleep)  # 2 per second
        for _ in range(5):
            await bucket.acquire()

    asyncio.run(go())
    assert sleeps == [0.5, 0.5, 0.5]  # two from the burst, then one every half second
    assert now[0] == 1.5


def test_unlimited_bucket_never_sleeps() -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("slept")

    async def go() -> None:
        bucket = TokenBucket(0, sleep=sleep)
        for _ in range(100):
            await bucket.acquire()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), ("0", 0.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=1445412480.0) == expected  # 07:28:00 GMT that day


def test_backoff_delay_is_capped_full_jitter() -> None:
    import random

    rng = random.Random(0)
    policy = search_retry_policy(base_s=1, cap_s=8)
    delays = [policy.backoff(attempt, rng) for attempt in range(10) for _ in range(50)]
    assert max(delays) <= 8 and min(delays) >= 0
    assert max(policy.backoff(0, rng) for _ in range(100)) <= 1
