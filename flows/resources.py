"""Backends of one worker process, built from the config on first use and reused by every batch.

This is the composition root: each method returns a role's protocol (`schemas/protocols.py`), built
from the config's section for that role. Heavy, immutable things are built once per `Resources`
(the corpus and its search index, the corpus server, the painter's pipeline); things bound to an
event loop (HTTP clients) are opened per batch in `tools()`. The same code runs in the flow process's
threads and in Ray workers.

`resources_for(config)` keeps the `Resources` of the last few backend configurations of the process
(`POOL_SIZE`), so a worker builds its backends once per configuration, and a long-lived process
(`groundgen schedule`, whose refreshes raise `sizes` every time) neither rebuilds them per run nor
keeps one corpus server thread per run: a `Resources` that leaves the pool closes its servers and
caches as soon as no batch still holds it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from flows.workspace import Workspace
from schemas.config import Config, LLMEndpointConfig
from schemas.errors import ConfigurationError, RowError
from schemas.protocols import (
    ClaimExtractor,
    Corpus,
    Judge,
    Painter,
    PaintRequest,
    PromptWriter,
    SearchBackend,
    Server,
    Teacher,
    Tools,
    TopicSource,
)
from schemas.rows import Image, Topic
from warehouse.blobs import BlobStore

if TYPE_CHECKING:
    from extractors.image_cache import ImageCache
    from extractors.offline import OfflineCorpus
    from extractors.page_cache import PageCache
    from extractors.rate_limit import TokenBucket
    from synthesis.response_cache import ResponseCache

T = TypeVar("T")

# Config fields no backend is built from: runs that differ only in these share one `Resources`
# (a refresh raises `sizes` on every run).
NON_BACKEND_FIELDS = frozenset(
    {"sizes", "curation", "export", "hub", "batch_size", "runner", "in_flight_batches", "max_attempts"}
)
POOL_SIZE = 4  # backend configurations whose `Resources` a process keeps


def backend_key(config: Config) -> str:
    """What a `Resources` is built from: the config without the fields no backend reads."""
    return config.model_dump_json(exclude=set(NON_BACKEND_FIELDS))


def _close_built(built: dict[str, Any]) -> None:
    """Shut what a `Resources` opened (corpus server, SQLite caches); the rest is left to the GC."""
    for thing in list(built.values()):
        close = getattr(thing, "close", None)
        if callable(close):
            close()
    built.clear()


class Resources:
    def __init__(self, config: Config):
        """`config`: the config it builds from; only the backend sections count (`backend_key`)."""
        from synthesis.circuit_breaker import configure_breakers

        self.config = config
        configure_breakers(config.breaker_threshold, config.breaker_cooldown_s)  # this worker's LLM clients
        self.workspace = Workspace(config.workdir).create()
        self.blobs = BlobStore(self.workspace.blobs)
        self._lock = threading.RLock()
        self._paint_lock = threading.Lock()
        self._built: dict[str, Any] = {}
        # runs when the last holder lets go (or at exit); holds `_built`, never `self`
        self._finalizer = weakref.finalize(self, _close_built, self._built)

    def close(self) -> None:
        """Shut the corpus server and the caches now (idempotent). Only when no batch still uses them:
        a `Resources` that left the pool closes itself when the last batch holding it ends."""
        with self._lock:
            self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if self.closed:
                raise RuntimeError("these resources were closed; get fresh ones from resources_for(config)")
            if name not in self._built:
                self._built[name] = build()
            built: T = self._built[name]
            return built

    # --- knowledge ---------------------------------------------------------------------------------

    def corpus(self) -> Corpus:
        return self._offline_corpus()

    def _offline_corpus(self) -> OfflineCorpus:
        from extractors.offline import OfflineCorpus

        return self._once("corpus", OfflineCorpus.load)

    def corpus_server(self) -> Server:
        """The offline corpus's pages on a 127.0.0.1 port, for this `Resources`' lifetime."""

        def start() -> Server:
            from extractors.corpus_server import CorpusServer

            return CorpusServer(self._offline_corpus())

        return self._once("corpus_server", start)

    def topic_source(self) -> TopicSource:
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
            source: TopicSource = LiveSource(
                topics.urls, fetch=self.config.fetch, categories=topics.categories
            )
            return source
        raise ConfigurationError(f"topic source {topics.source!r} is not available in this version")

    def linked_topics(self, topic: Topic) -> list[Topic]:
        if topic.source != "wiki_offline" or not topic.linked_titles:
            return []
        return self.corpus().linked_topics(topic)

    def search_bucket(self) -> TokenBucket:
        """The search provider's rate budget (`search.requests_per_minute`), shared by every batch's
        client in this process."""
        from extractors.rate_limit import TokenBucket

        return self._once("search_bucket", lambda: TokenBucket(self.config.search.requests_per_minute))

    def search_backend(self) -> SearchBackend:
        """The local index (shared), or a provider client for one batch's event loop that shares this
        process's rate limit with every other batch. Close provider clients with `aclose()`."""
        search = self.config.search
        if search.provider == "local":
            return self.corpus().search
        if search.provider == "serper":
            from extractors.serper import SerperSearch

            return SerperSearch.from_config(search, bucket=self.search_bucket())
        if search.provider == "searxng":
            from extractors.searxng import SearxngSearch

            return SearxngSearch.from_config(search, bucket=self.search_bucket())
        raise ConfigurationError(f"unknown search provider {search.provider!r}")

    def page_cache(self) -> PageCache:
        """The browse tool's page cache (`<workdir>/cache/pages.sqlite`), shared by every batch."""
        from extractors.page_cache import PageCache, page_cache_path

        return self._once("page_cache", lambda: PageCache(page_cache_path(self.workspace.root)))

    def image_cache(self) -> ImageCache:
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
        from extractors.rate_limit import JsonAPIClient

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
                if isinstance(search, JsonAPIClient):  # a provider client opened for this batch
                    await search.aclose()

    # --- models ------------------------------------------------------------------------------------

    def model_concurrency(self, role: str) -> int:
        endpoint: LLMEndpointConfig | None = getattr(self.config.llm, role, None)
        return endpoint.max_concurrency if endpoint is not None else 16

    def _endpoint(self, role: str) -> LLMEndpointConfig:
        endpoint: LLMEndpointConfig | None = getattr(self.config.llm, role)
        if endpoint is None:
            raise ConfigurationError(
                f"{role}.kind = 'llm' needs an [llm.{role}] section (base_url, model, api_key_env)"
            )
        return endpoint

    def response_cache(self, endpoint: LLMEndpointConfig) -> ResponseCache:
        """One SQLite response cache per endpoint under the work dir: reruns replay, never pay twice."""
        from synthesis.response_cache import SqliteResponseCache, endpoint_cache_path

        path = endpoint_cache_path(self.workspace.root, endpoint)
        return self._once(f"cache:{path}", lambda: SqliteResponseCache(path))

    def writer(self) -> PromptWriter:
        """Built once per process, so an LLM endpoint's rate limits are shared by every batch."""
        config = self.config

        def build() -> PromptWriter:
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

    def teacher(self) -> Teacher:
        config = self.config

        def build() -> Teacher:
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

    def judge(self) -> Judge:
        config = self.config

        def build() -> Judge:
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

    def claim_extractor(self) -> ClaimExtractor | None:
        """The LLM claim extractor when `[llm.claims]` is configured, else None (deterministic facts)."""
        endpoint = self.config.llm.claims
        if endpoint is None:
            return None

        def build() -> ClaimExtractor:
            from filters.claim_extractor import LLMClaimExtractor

            return LLMClaimExtractor(endpoint, cache=self.response_cache(endpoint))

        return self._once("claims", build)

    def painter(self) -> Painter:
        config = self.config

        def build() -> Painter:
            if config.painter.kind == "http":
                from synthesis.http_painter import HTTPPainter

                return HTTPPainter(config.painter, self.blobs, fingerprint=config.painter_fingerprint())
            from schemas.dependencies import DIFFUSERS_PAINTER

            DIFFUSERS_PAINTER.require()  # without the `local` extra: one line saying to install it
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


_POOL: OrderedDict[str, Resources] = OrderedDict()
_POOL_LOCK = threading.Lock()


def resources_for(config: Config) -> Resources:
    """This process's `Resources` for the config's backends: built on first use, then shared by every
    batch of that configuration. The `POOL_SIZE` most recently used configurations are kept; an older
    one is dropped and closes itself once the batches still holding it end."""
    key = backend_key(config)
    with _POOL_LOCK:
        resources = _POOL.get(key)
        if resources is None:
            resources = _POOL[key] = Resources(config)
        _POOL.move_to_end(key)
        dropped = [_POOL.popitem(last=False)[1] for _ in range(len(_POOL) - POOL_SIZE)]
    del dropped  # outside the lock: the last reference going may shut a corpus server (a thread join)
    return resources


def close_resources() -> None:
    """Close and forget every pooled `Resources` of this process (tests; the end of a process).
    Batches must not be running: their backends are closed under them."""
    with _POOL_LOCK:
        pooled = list(_POOL.values())
        _POOL.clear()
    for resources in pooled:
        resources.close()
