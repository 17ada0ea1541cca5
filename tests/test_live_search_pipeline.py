"""The whole pipeline with live search: Serper or SearXNG (loopback servers speaking their formats) whose
hits point at a loopback page server; topics still come from the offline Wikipedia source.

The teacher uses the same tools as offline (search, browse through the safe fetcher and the page cache,
reference images through the image downloader); only `search.provider`, `search.base_url` and
`fetch.allow_hosts` (exactly the page server's `127.0.0.1:<port>`) change. One run has hostile hits:
redirects to the cloud metadata address and to 127.0.0.2, a gzip bomb, and a truncated JPEG image;
each hostile kind is also checked on its own against the same tools, without a flow.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.runner import run_regenerate
from schemas.config import Config, FetchConfig, SearchConfig, SizesConfig
from testkit.servers.live_web import serve_live_search, serve_pages

pytestmark = pytest.mark.slow

KEY_ENV = "GROUNDGEN_TEST_SERPER_KEY"
LOGGERS = ("httpx", "httpcore", "prefect", "extractors", "synthesis", "flows", "filters", "warehouse")
HOSTILE_ERRORS = (
    "169.254.169.254",  # redirect to the metadata address: refused by the guard
    "127.0.0.2",  # redirect to a loopback address that is not allowlisted
    "compression bomb",  # gzip bomb: stopped at the decompressed-size cap
)


@pytest.fixture(scope="module")
def pages():
    server = serve_pages()
    yield server
    server.shutdown()
    server.server_close()


def live_config(workdir: Path, provider: str, search_url: str, pages_host: str) -> Config:
    return Config(
        workdir=workdir,
        batch_size=4,
        sizes=SizesConfig(sft=2, rl=1),
        search=SearchConfig(
            provider=provider, base_url=search_url, api_key_env=KEY_ENV if provider == "serper" else ""
        ),
        fetch=FetchConfig(allow_hosts=[pages_host], timeout_s=10),
    )


def sql(workdir: Path, query: str) -> str:
    """`groundgen sql` output (JSON lines)."""
    result = CliRunner().invoke(app, ["sql", query, "-w", str(workdir), "-f", "json"])
    assert result.exit_code == 0, result.output
    return result.output


def rows(workdir: Path, query: str) -> list[dict]:
    return [json.loads(line) for line in sql(workdir, query).splitlines() if line.strip()]


def prefect_logs(api_url: str) -> str:
    """Every log line the Prefect server received in this test session."""
    texts, offset = [], 0
    while True:
        page = httpx.post(f"{api_url}/logs/filter", json={"offset": offset, "limit": 200}, timeout=30)
        page.raise_for_status()
        batch = page.json()
        texts += [entry["message"] for entry in batch]
        if len(batch) < 200:
            return "\n".join(texts)
        offset += 200


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """DEBUG logs of the HTTP clients and groundgen's packages (handlers on the named loggers, since
    Prefect reconfigures the root logger when a flow starts)."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield text
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def run_live(tmp_path, monkeypatch, pages, provider: str, hostile: bool = False):
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    search = serve_live_search(pages, api_key=key, hostile=hostile)
    workdir = tmp_path / provider
    try:
        with captured_logs() as logs:
            result = run_regenerate(live_config(workdir, provider, search.base_url, pages.host))
    finally:
        search.shutdown()
        search.server_close()
    # the capture saw the provider calls (so the key checks below read real log text)
    assert (
        f"HTTP Request: {'POST' if provider == 'serper' else 'GET'} {search.base_url}/search"
        in logs.getvalue()
    )
    return workdir, key, search, result, logs.getvalue()


def trajectories(workdir: Path) -> list[dict]:
    return rows(
        workdir, 'select id, ending, tool_calls, "references", messages from trajectories order by id'
    )


def assert_key_never_stored_or_logged(workdir: Path, key: str, logs: str, prefect_api: str) -> None:
    for table in ("trajectories", "failures", "pages", "images", "prompts", "runs"):
        assert key not in sql(workdir, f"select * from {table}"), table
    assert key not in logs
    assert key not in prefect_logs(prefect_api)
    for path in workdir.rglob("*"):  # caches, exports, blobs: plain bytes (the warehouse is checked by SQL)
        if path.is_file() and path.suffix != ".duckdb":
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("provider", ["serper", "searxng"])
def test_a_live_search_provider_drives_the_whole_pipeline(
    provider, tmp_path, monkeypatch, pages, prefect_server
):
    workdir, key, search, result, logs = run_live(tmp_path, monkeypatch, pages, provider)
    assert result["version"] is not None

    found = trajectories(workdir)
    assert found and {t["ending"] for t in found} == {"answer"}
    for trajectory in found:
        calls = {call["name"]: call for call in trajectory["tool_calls"]}
        assert {"search", "browse", "image_search"} <= calls.keys()
        assert all(call["ok"] for call in trajectory["tool_calls"]), trajectory["tool_calls"]
        assert trajectory["references"], "image search downloaded references"
        for reference in trajectory["references"]:
            assert reference["url"].startswith(pages.base_url + "/img/")
        browsed = json.loads(calls["browse"]["arguments_json"])["url"]
        assert browsed.startswith(pages.base_url + "/page/")
        response = next(
            m["content"] for m in trajectory["messages"] if "### Content of " + browsed in m["content"]
        )
        assert "first recorded in 1887" in response

    references = rows(workdir, "select source_url, sha256 from images where kind = 'reference'")
    assert references and all(r["source_url"].startswith(pages.base_url + "/img/") for r in references)
    for reference in references:
        sha = reference["sha256"]
        assert (workdir / "blobs" / sha[:2] / sha).is_file()

    stored_pages = rows(workdir, "select url, status, title, error_class from pages")
    assert stored_pages and all(p["url"].startswith(pages.base_url + "/page/") for p in stored_pages)
    assert {(p["status"], p["error_class"]) for p in stored_pages} == {(200, "")}

    if provider == "serper":  # the key went to the provider, in its header only
        assert {r[1] for r in search.requests} <= {"/search", "/images"}
        assert all(r[3].get("X-API-KEY") == key for r in search.requests)
    else:
        assert {r[2]["format"][0] for r in search.requests} == {"json"}
    assert_key_never_stored_or_logged(workdir, key, logs, prefect_server)


def test_hostile_hits_become_tool_errors_and_the_run_finishes(tmp_path, monkeypatch, pages, prefect_server):
    workdir, key, _, result, logs = run_live(tmp_path, monkeypatch, pages, "serper", hostile=True)
    assert result["counts"]["trajectories"]["failures"] == 0

    found = trajectories(workdir)
    assert found and {t["ending"] for t in found} == {"answer"}
    for trajectory in found:
        (browse,) = [call for call in trajectory["tool_calls"] if call["name"] == "browse"]
        url = json.loads(browse["arguments_json"])["url"]
        assert url.startswith(pages.base_url + "/hostile/")
        assert not browse["ok"] and any(marker in browse["error"] for marker in HOSTILE_ERRORS), browse
        # the truncated JPEG (first image hit) is skipped with a note; the good images are kept
        image_responses = [m["content"] for m in trajectory["messages"] if "### Images for" in m["content"]]
        assert image_responses and all(
            f"Skipped an image that could not be used ({pages.base_url}/img/truncated.jpg)" in content
            for content in image_responses
        )
        assert trajectory["references"]
        assert all(not r["url"].endswith("truncated.jpg") for r in trajectory["references"])

    assert rows(workdir, "select count(*) n from images where source_url like '%truncated%'") == [{"n": 0}]
    hostile_pages = rows(workdir, "select url, error_class, error from pages")
    assert hostile_pages and all(p["error_class"] in ("UnsafeURLError", "FetchError") for p in hostile_pages)
    assert_key_never_stored_or_logged(workdir, key, logs, prefect_server)


@pytest.mark.parametrize(
    ("route", "error"),
    [
        ("/hostile/metadata", "metadata_address: refused to fetch http://169.254.169.254/latest/meta-data/"),
        ("/hostile/private", "loopback_address: refused to fetch http://127.0.0.2:{port}/page/private"),
        ("/hostile/gzip-bomb", "decompressed body exceeds 5000000 bytes (compression bomb?)"),
    ],
)
def test_each_hostile_hit_is_a_tool_error_under_the_runs_tools(route, error, tmp_path, pages):
    """The same tools `Resources.tools()` builds for a live provider, one hostile kind at a time."""
    from extractors.browse import PageBrowser
    from extractors.fetcher import SafeFetcher
    from extractors.images import ReferenceImageDownloader
    from extractors.page_cache import FULL_TEXT_CHARS, CachingBrowser, PageCache
    from extractors.searxng import SearxngSearch
    from schemas.protocols import Tools
    from synthesis.agent_protocol import ParsedToolCall
    from synthesis.toolbox import EpisodeMemory, Toolbox
    from warehouse.blobs import BlobStore

    def call(name: str, arguments: dict) -> ParsedToolCall:
        return ParsedToolCall(name=name, arguments=arguments, arguments_json=json.dumps(arguments))

    search = serve_live_search(pages, hostile=True)
    cache = PageCache(tmp_path / "pages.sqlite")

    async def episode():
        async with SafeFetcher(FetchConfig(allow_hosts=[pages.host], timeout_s=10)) as fetcher:
            browser = CachingBrowser(PageBrowser(fetcher, max_chars=FULL_TEXT_CHARS), cache)
            tools = Tools(
                search=SearxngSearch(search.base_url),
                browser=browser,
                images=ReferenceImageDownloader(fetcher, BlobStore(tmp_path / "blobs")),
            )
            toolbox, memory = Toolbox(tools), EpisodeMemory()
            browsed = await toolbox.execute(
                call("browse", {"url": pages.base_url + route, "query": "Lyon facts"}), 1, memory
            )
            images = await toolbox.execute(call("image_search", {"query": "Lyon", "top_k": 3}), 2, memory)
            await tools.search.aclose()
            return browsed, images, browser.records()

    try:
        browsed, images, records = asyncio.run(episode())
    finally:
        search.shutdown()
        search.server_close()
        cache.close()
    expected = error.format(port=pages.server_address[1])
    assert (browsed.record.ok, browsed.record.error) == (False, expected)
    assert f"ToolError: could not read {pages.base_url}{route}: {expected}" in browsed.message.content
    assert [(r.url, r.error) for r in records] == [(pages.base_url + route, expected)]
    # the truncated JPEG is skipped with a note; the two good images are registered
    assert images.record.ok
    assert (
        f"Skipped an image that could not be used ({pages.base_url}/img/truncated.jpg)"
        in images.message.content
    )
    assert [ref.url for ref in images.new_references] == [
        f"{pages.base_url}/img/Lyon-{n}.png" for n in (1, 2)
    ]
