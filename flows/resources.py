"""Backends of one worker process, built from the config on first use and reused by every batch.

Heavy, immutable things are built once per process (the corpus and its search index, the corpus
server, the painter's pipeline); things bound to an event loop (HTTP clients) are opened per batch
in `tools()`. The same code runs in the flow process's threads and in Ray workers.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from flows.workspace import Workspace
from schemas.config import Config, LLMEndpointConfig
from schemas.errors import ConfigurationError, RowError
from schemas.protocols import PaintRequest, Tools
from schemas.rows import Image, Topic
from warehouse.blobs import BlobStore

T = TypeVar("T")


class Resources:
    def __init__(self, config: Config):
        from synthesis.circuit_breaker import configure_breakers

        self.config = config
        configure_breakers(config.breaker_threshold, config.breaker_cooldown_s)  # this worker's LLM clients
        self.workspace = Workspace(config.workdir).create()
        self.blobs = BlobStore(self.workspace.blobs)
        self._lock = threading.RLock()
        self._paint_lock = threading.Lock()
        self._built: dict[str, Any] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    # --- knowledge ---------------------------------------------------------------------------------

    def corpus(self) -> Any:
        from extractors.offline import OfflineCorpus

        return self._once("corpus", OfflineCorpus.load)

    def corpus_server(self) -> Any:
        def start() -> Any:
            from extractors.corpus_server import CorpusServer

            server = CorpusServer(self.corpus())
            atexit.register(server.close)
            return server

        return self._once("corpus_server", start)

    def topic_source(self) -> Any:
        topics = self.config.topics
        if topics.source == "wiki_offline":
            from extractors.wiki_offline import WikiOfflineSource

            return WikiOfflineSource(categories=topics.categories, source_categories=topics.source_categories)
        if topics.source in ("mediawiki", "rss"):
            LiveSource: type[Any]
            if topics.source == "mediawiki":
                from extractors.mediawiki import MediaWikiSource as LiveSource
            else:
                from extractors.rss import RSSSource as LiveSource
            if not topics.urls:
                raise ConfigurationError(f"topics.source = {topics.source!r} needs topics.urls")
            return LiveSource(topics.urls, fetch=self.config.fetch, categories=topics.categories)
        raise ConfigurationError(f"topic source {topics.source!r} is not available in this version")

    def linked_topics(self, topic: Topic) -> list[Topic]:
        if topic.source != "wiki_offline" or not topic.linked_titles:
            return []
        return self.corpus().linked_topics(topic)

    def search_backend(self) -> Any:
        """The local index (shared), or a provider client for one batch's event loop that shares this
        process's rate limit with every other batch. Close provider clients with `aclose()`."""
        search = self.config.search
        if search.provider == "local":
            return self.corpus().search
        Provider: type[Any]
        if search.provider == "serper":
            from extractors.serper import SerperSearch as Provider
        elif search.provider == "searxng":
            from extractors.searxng import SearxngSearch as Provider
        else:
            raise ConfigurationError(f"unknown search provider {search.provider!r}")
        client = Provider.from_config(search)
        client.bucket = self._once("search_bucket", lambda: client.bucket)
        return client

    def page_cache(self) -> Any:
        """The browse tool's page cache (`<workdir>/cache/pages.sqlite`), shared by every batch."""
        from extractors.page_cache import PageCache, page_cache_path

        return self._once("page_cache", lambda: PageCache(page_cache_path(self.workspace.root)))

    def image_cache(self) -> Any:
        """Reference images by URL and by content (`<workdir>/cache/images.sqlite`), shared by every batch."""
        from extractors.image_cache import ImageCache, image_cache_path

        return self._once("image_cache", lambda: ImageCache(image_cache_path(self.workspace.root)))

    @asynccontextmanager
    async def tools(self) -> AsyncIterator[Tools]:
        """The teacher's tools for one batch (HTTP clients live as long as the batch's event loop)."""
        from extractors.browse import PageBrowser
        from extractors.fetcher import SafeFetcher
        from extractors.images import ReferenceImageDownloader
        from extractors.page_cache import FULL_TEXT_CHARS, CachingBrowser

        connect_to: dict[str, str] = {}
        fetch_config = self.config.fetch
        if self.config.search.provider == "local":
            from extractors.offline import CORPUS_ALLOW_HOSTS, connect_to_map

            port = self.corpus_server().port
            connect_to = connect_to_map(port)
            # the corpus host and the exact loopback address:port it is pinned to, nothing wider
            fetch_config = fetch_config.model_copy(
                update={"allow_hosts": [*fetch_config.allow_hosts, *CORPUS_ALLOW_HOSTS, f"127.0.0.1:{port}"]}
            )
        async with SafeFetcher(fetch_config, connect_to=connect_to) as fetcher:
            # whole pages are extracted once and cached per work dir; passages are chosen per query
            full_pages = PageBrowser(fetcher, max_chars=FULL_TEXT_CHARS)
            search = self.search_backend()
            try:
                yield Tools(
                    search=search,
                    browser=CachingBrowser(full_pages, self.page_cache()),
                    images=ReferenceImageDownloader(fetcher, self.blobs, cache=self.image_cache()),
                )
            finally:
                if hasattr(search, "aclose"):
                    await search.aclose()

    # --- models ------------------------------------------------------------------------------------

    def model_concurrency(self, role: str) -> int:
        endpoint: LLMEndpointConfig | None = getattr(self.config.llm, role, None)
        return endpoint.max_concurrency if endpoint is not None else 16

    def _endpoint(self, role: str) -> LLMEndpointConfig:
        endpoint = getattr(self.config.llm, role)
        if endpoint is None:
            raise ConfigurationError(
                f"{role}.kind = 'llm' needs an [llm.{role}] section (base_url, model, api_key_env)"
            )
        return endpoint

    def response_cache(self, endpoint: LLMEndpointConfig) -> Any:
        """One SQLite response cache per endpoint under the work dir: reruns replay, never pay twice."""
        from synthesis.response_cache import SqliteResponseCache, endpoint_cache_path

        path = endpoint_cache_path(self.workspace.root, endpoint)
        return self._once(f"cache:{path}", lambda: SqliteResponseCache(path))

    def writer(self) -> Any:
        """Built once per process, so an LLM endpoint's rate limits are shared by every batch."""
        config = self.config

        def build() -> Any:
            if config.writer.kind == "template":
                from synthesis.template_writer import TemplateWriter

                return TemplateWriter(config.writer, fingerprint=config.writer_fingerprint())
            from synthesis.llm_writer import LLMWriter

            endpoint = self._endpoint("writer")
            return LLMWriter(
                endpoint,
                config.writer,
                fingerprint=config.writer_fingerprint(),
                cache=self.response_cache(endpoint),
            )

        return self._once("writer", build)

    def teacher(self) -> Any:
        config = self.config

        def build() -> Any:
            if config.teacher.kind == "scripted":
                from synthesis.scripted_teacher import ScriptedTeacher

                return ScriptedTeacher(
                    config.teacher, fingerprint=config.teacher_fingerprint(), blobs=self.blobs
                )
            from synthesis.llm_teacher import LLMTeacher

            endpoint = self._endpoint("teacher")
            return LLMTeacher(
                endpoint,
                config.teacher,
                fingerprint=config.teacher_fingerprint(),
                blobs=self.blobs,
                summary_endpoint=config.llm.summary,
                cache=self.response_cache(endpoint),
            )

        return self._once("teacher", build)

    def judge(self) -> Any:
        config = self.config

        def build() -> Any:
            if config.judge.kind == "rules":
                from filters.rule_judge import RuleOnlyJudge

                return RuleOnlyJudge(config.judge, judge_fingerprint=config.judge_fingerprint())
            from filters.llm_judge import LLMJudge

            endpoint = self._endpoint("judge")
            return LLMJudge(
                endpoint,
                config.judge,
                self.blobs,
                fingerprint=config.judge_fingerprint(),
                cache=self.response_cache(endpoint),
            )

        return self._once("judge", build)

    def claim_extractor(self) -> Any:
        """The LLM claim extractor when `[llm.claims]` is configured, else None (deterministic facts)."""
        endpoint = self.config.llm.claims
        if endpoint is None:
            return None

        def build() -> Any:
            from filters.claim_extractor import LLMClaimExtractor

            return LLMClaimExtractor(endpoint, cache=self.response_cache(endpoint))

        return self._once("claims", build)

    def painter(self) -> Any:
        config = self.config

        def build() -> Any:
            if config.painter.kind == "http":
                from synthesis.http_painter import HTTPPainter

                return HTTPPainter(config.painter, self.blobs, fingerprint=config.painter_fingerprint())
            from diffusers.utils import logging as diffusers_logging
            from transformers.utils import logging as transformers_logging

            from synthesis.hub_weights import download_pipeline, is_hub_id
            from synthesis.painter import DiffusersPainter

            # CLIP-sized text encoders truncate long grounded prompts; that is expected, not news per row.
            # Loading bars would interleave with the stage bars: the stage bars say where a run is.
            transformers_logging.set_verbosity_error()
            transformers_logging.disable_progress_bar()
            diffusers_logging.disable_progress_bar()

            model = config.painter.model
            if config.painter.kind == "tiny" or not model:
                from synthesis.tiny_pipeline import build_tiny_pipeline

                model = str(build_tiny_pipeline(self.workspace.models / "tiny-sd"))
            elif is_hub_id(model):  # a first download shows its progress; then the cached snapshot loads
                model = download_pipeline(model, config.painter.revision)
            return DiffusersPainter(
                config.painter, model, blobs=self.blobs, fingerprint=config.painter_fingerprint()
            )

        return self._once("painter", build)

    def paint(self, requests: list[PaintRequest]) -> tuple[list[Image], list[RowError]]:
        """Pipelines are not thread-safe: one batch at a time per process (torch uses every core)."""
        painter = self.painter()
        with self._paint_lock:
            return painter.paint(requests)


_PROCESS_RESOURCES: dict[str, Resources] = {}
_PROCESS_LOCK = threading.Lock()


def resources_for(config: Config) -> Resources:
    key = config.model_dump_json()
    with _PROCESS_LOCK:
        if key not in _PROCESS_RESOURCES:
            _PROCESS_RESOURCES[key] = Resources(config)
        return _PROCESS_RESOURCES[key]
