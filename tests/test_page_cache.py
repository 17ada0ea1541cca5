"""The browse tool's page cache: one fetch per URL per work dir, errors cached by class, page rows."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from extractors.browse import PageBrowser
from extractors.fetcher import SafeFetcher
from extractors.page_cache import (
    DEFAULT_ERROR_TTL_S,
    DEFAULT_RETRY_TTL_S,
    FULL_TEXT_CHARS,
    CachedPage,
    CachingBrowser,
    PageCache,
    page_cache_path,
    page_records,
)
from schemas.config import FetchConfig
from schemas.errors import ExtractionError, FetchError, UnsafeURLError
from schemas.ids import content_id
from schemas.protocols import Page, PageImage, Tools
from synthesis.agent_protocol import ParsedToolCall
from synthesis.toolbox import EpisodeMemory, Toolbox
from testkit.servers.live_web import serve_pages

REPO = Path(__file__).resolve().parent.parent
slow = pytest.mark.slow  # every test but the pure ones starts the loopback page server


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def pages():
    server = serve_pages()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path):
    """A page cache on a manual clock (`cache.clock.now += seconds`)."""
    store = PageCache(page_cache_path(tmp_path), clock=Clock())
    yield store
    store.close()


async def with_browser(pages, cache, work, **options):
    """Run `work(browser)` with a CachingBrowser over a real SafeFetcher, as `Resources.tools()` does."""
    config = FetchConfig(allow_hosts=[pages.host], timeout_s=10)
    async with SafeFetcher(config) as fetcher:
        browser = CachingBrowser(
            PageBrowser(fetcher, max_chars=FULL_TEXT_CHARS), cache, clock=cache.clock, **options
        )
        return browser, await work(browser)


def browse_call(url: str, query: str) -> ParsedToolCall:
    arguments = {"url": url, "query": query}
    return ParsedToolCall(name="browse", arguments=arguments, arguments_json=json.dumps(arguments))


def test_entries_round_trip_and_expire(tmp_path):
    clock = Clock()
    cache = PageCache(tmp_path / "pages.sqlite", clock=clock)
    page = Page(
        url="https://a.example/x",
        final_url="https://a.example/y",
        status=200,
        title="T",
        text="One.\n\nTwo.",
        images=[PageImage(url="https://a.example/i.png", alt="i", caption="c")],
    )
    cache.put(CachedPage.from_page(page.url, page, clock.now, clock.now + 10))
    error = FetchError("HTTP 503 from https://b.example/", status=503, retryable=True)
    cache.put(CachedPage.from_error("https://b.example/", error, clock.now, None))
    cache.put(CachedPage.from_error("https://c.example/", ExtractionError("empty"), clock.now, None))
    stored = cache.get(page.url)
    assert stored is not None and (stored.final_url, stored.text, stored.images) == (
        page.final_url,
        page.text,
        page.images,
    )
    rebuilt = cache.get("https://b.example/").to_error()
    assert (type(rebuilt), str(rebuilt), rebuilt.status, rebuilt.retryable) == (
        FetchError,
        "HTTP 503 from https://b.example/",
        503,
        True,
    )
    assert type(cache.get("https://c.example/").to_error()) is ExtractionError
    assert len(cache) == 3
    clock.now += 10
    assert cache.get(page.url) is None and cache.get("https://b.example/") is not None
    cache.close()


@slow
def test_a_second_trajectory_browsing_the_same_url_does_not_fetch_it_again(pages, cache):
    url = f"{pages.base_url}/long/{quote('Tour Lumière', safe='')}"
    path = "/long/" + quote("Tour Lumière", safe="")
    before = pages.count(path)

    async def trajectory(browser, query):
        toolbox = Toolbox(Tools(search=None, browser=browser, images=None))
        return await toolbox.execute(browse_call(url, query), 1, EpisodeMemory())

    first_browser, first = asyncio.run(
        with_browser(pages, cache, lambda b: trajectory(b, "recorded 1887 Lyon"))
    )
    second_browser, second = asyncio.run(
        with_browser(pages, cache, lambda b: trajectory(b, "weather spring"))
    )
    assert pages.count(path) - before == 1
    assert (first_browser.fetches, second_browser.fetches) == (1, 0)
    assert first.record.ok and second.record.ok
    # the passage selection runs per query, on the cached page too
    assert "recorded in 1887" in first.message.content and "weather" not in first.message.content
    assert "weather in spring" in second.message.content and "1887" not in second.message.content
    # both batches report the page (insert-if-absent makes the second a no-op)
    (record,) = first_browser.records()
    assert second_browser.records() == [record]
    assert record.id == content_id(url)
    assert (record.url, record.final_url, record.status, record.title) == (url, url, 200, "Tour Lumière")
    assert (
        record.error_class == "" and "first recorded in 1887" in record.text and "Paragraph 99" in record.text
    )
    assert record.fetched_at.timestamp() == cache.clock()


@slow
def test_the_cache_file_is_shared_with_other_processes(pages, cache, tmp_path):
    url = f"{pages.base_url}/page/Shared"
    asyncio.run(with_browser(pages, cache, lambda b: b.browse(url, "Shared facts")))
    script = (
        "import sys; from extractors.page_cache import PageCache; "
        "entry = PageCache(sys.argv[1]).get(sys.argv[2]); "
        "print(entry.title, entry.status, [i.url for i in entry.images])"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script, str(page_cache_path(tmp_path)), url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.strip() == f"Shared 200 ['{pages.base_url}/img/Shared-1.png']"


@slow
def test_concurrent_browses_of_one_url_share_one_fetch(pages, cache):
    url = f"{pages.base_url}/page/Concurrent"
    before = pages.count("/page/Concurrent")

    async def work(browser):
        return await asyncio.gather(
            *(browser.browse(url, f"Concurrent {q}") for q in ("facts", "dates", "names"))
        )

    browser, results = asyncio.run(with_browser(pages, cache, work))
    assert pages.count("/page/Concurrent") - before == 1
    assert browser.fetches == 1
    assert [page.title for page in results] == ["Concurrent"] * 3


@slow
def test_a_permanent_error_is_cached_until_its_ttl(pages, cache):
    url = f"{pages.base_url}/status/404"
    before = pages.count("/status/404")

    async def twice(browser):
        errors = []
        for _ in range(2):
            with pytest.raises(FetchError) as caught:
                await browser.browse(url, "anything")
            errors.append(caught.value)
        return errors

    browser, (first, second) = asyncio.run(with_browser(pages, cache, twice))
    assert pages.count("/status/404") - before == 1
    assert str(first) == str(second) == f"HTTP 404 from {url}"
    assert (second.status, second.retryable) == (404, False)
    (record,) = browser.records()
    assert (record.error_class, record.status, record.text) == ("FetchError", 404, "")
    assert record.id == content_id("page-error", url, "FetchError", record.fetched_at.isoformat())

    cache.clock.now += DEFAULT_ERROR_TTL_S - 1
    asyncio.run(with_browser(pages, cache, twice))
    assert pages.count("/status/404") - before == 1
    cache.clock.now += 2
    asyncio.run(with_browser(pages, cache, twice))
    assert pages.count("/status/404") - before == 2


@slow
def test_a_retryable_error_is_cached_briefly(pages, cache):
    url = f"{pages.base_url}/status/503"
    before = pages.count("/status/503")

    async def once(browser):
        with pytest.raises(FetchError) as caught:
            await browser.browse(url, "anything")
        return caught.value

    _, error = asyncio.run(with_browser(pages, cache, once))
    assert error.retryable and error.status == 503
    cache.clock.now += DEFAULT_RETRY_TTL_S - 1
    _, again = asyncio.run(with_browser(pages, cache, once))
    assert again.retryable and again.status == 503
    assert pages.count("/status/503") - before == 1
    cache.clock.now += 2
    asyncio.run(with_browser(pages, cache, once))
    assert pages.count("/status/503") - before == 2


@slow
def test_a_page_without_content_is_cached_as_an_extraction_error(pages, cache):
    url = f"{pages.base_url}/empty"
    before = pages.count("/empty")

    async def twice(browser):
        for _ in range(2):
            with pytest.raises(ExtractionError, match="no content could be extracted"):
                await browser.browse(url, "anything")

    browser, _ = asyncio.run(with_browser(pages, cache, twice))
    assert pages.count("/empty") - before == 1
    assert [r.error_class for r in browser.records()] == ["ExtractionError"]


@slow
def test_a_guard_refusal_is_never_served_from_the_cache(pages, cache):
    url = f"{pages.base_url}/hostile/metadata"
    before = pages.count("/hostile/metadata")

    async def twice(browser):
        for _ in range(2):
            with pytest.raises(UnsafeURLError, match="169.254.169.254"):
                await browser.browse(url, "anything")

    browser, _ = asyncio.run(with_browser(pages, cache, twice))
    assert pages.count("/hostile/metadata") - before == 2  # re-checked every time, under this run's allowlist
    assert cache.get(url) is None
    assert {r.error_class for r in browser.records()} == {"UnsafeURLError"}


@slow
def test_nothing_relevant_is_per_query_not_a_cached_error(pages, cache):
    url = f"{pages.base_url}/page/Relevance"
    before = pages.count("/page/Relevance")

    async def work(browser):
        with pytest.raises(ExtractionError, match="nothing relevant to 'zebra quantum'"):
            await browser.browse(url, "zebra quantum")
        return await browser.browse(url, "Relevance 1887")

    browser, page = asyncio.run(with_browser(pages, cache, work))
    assert pages.count("/page/Relevance") - before == 1
    assert "1887" in page.text and page.status == 200
    assert [r.error_class for r in browser.records()] == [""]
    assert page_records(Tools(search=None, browser=browser, images=None)) == browser.records()
    assert page_records(Tools(search=None, browser=object(), images=None)) == []


@slow
def test_pages_expire_only_with_a_page_ttl(pages, cache):
    url = f"{pages.base_url}/page/Expiring"
    before = pages.count("/page/Expiring")

    def browse_once():
        asyncio.run(with_browser(pages, cache, lambda b: b.browse(url, "Expiring"), page_ttl_s=60))

    browse_once()
    cache.clock.now += 59
    browse_once()
    assert pages.count("/page/Expiring") - before == 1
    cache.clock.now += 2
    browse_once()
    assert pages.count("/page/Expiring") - before == 2


@pytest.mark.slow
def test_an_offline_run_fills_the_pages_table(tmp_path, prefect_server):
    from flows.runner import run_regenerate
    from schemas.config import Config, SizesConfig
    from warehouse.store import Warehouse

    config = Config(workdir=tmp_path / "run", batch_size=4, sizes=SizesConfig(sft=2, rl=1))
    run_regenerate(config)
    with Warehouse(config.workdir / "warehouse.duckdb", read_only=True) as warehouse:
        rows = warehouse.query("select * from pages order by url").to_pylist()
        browsed = warehouse.query(
            "select distinct json_extract_string(c.arguments_json, '$.url') as url "
            "from (select unnest(tool_calls) as c from trajectories) where c.name = 'browse' and c.ok"
        ).to_pylist()
    assert rows, "the run browsed pages"
    assert {row["url"] for row in rows if not row["error_class"]} >= {row["url"] for row in browsed}
    cache = PageCache(page_cache_path(config.workdir))
    for row in rows:
        entry = cache.get(row["url"])
        assert entry is not None and (entry.text, entry.error_class) == (row["text"], row["error_class"])
        assert entry.fetched_at == pytest.approx(row["fetched_at"].timestamp(), abs=1e-5)
        if row["error_class"]:
            assert row["error"] and not row["text"]
        else:
            assert row["id"] == content_id(row["url"]) and row["status"] == 200 and row["text"]
    cache.close()
