"""A page cache for `browse`: each URL is fetched and extracted once per work directory.

Workers never open the DuckDB warehouse, so the cache is a small SQLite file of its own
(`<workdir>/cache/pages.sqlite`, WAL mode: safe for the threads of one process and for several
processes on one machine). `CachingBrowser` wraps any `Browser`: on a miss it asks the inner browser
for the whole extracted page (an empty query: the page's leading text up to `FULL_TEXT_CHARS`) and
stores it; the per-query passage selection (`relevant_passages`) runs on every call, hit or miss.

Fetch errors are cached too, by class: a retryable one (429, 5xx, time-out, network error) for a
short time (`retry_ttl_s`), a permanent one (404, refused content type, size cap, no extractable
content) for `error_ttl_s`. A URL-guard refusal (`UnsafeURLError`) is never served from the cache: it
depends on the allowlist of the run, and re-checking costs no fetch. Successful pages never expire
unless `page_ttl_s` is set.

`CachingBrowser.records()` gives the `PageRecord` rows of every page (or error) browsed through this
browser, fetched now or served from the cache, so the teacher task returns them and the flow inserts
them into the warehouse's `pages` table (insert-if-absent makes resending a cached page free).
Row ids: `content_id(url)` for a page; an error row's id adds its class and fetch time, so an error
recorded once never hides the page fetched later.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from extractors.html_extract import relevant_passages
from schemas import errors as error_types
from schemas.errors import ExtractionError, FetchError, GroundgenError, UnsafeURLError
from schemas.ids import content_id
from schemas.protocols import Browser, Page, PageImage, Tools
from schemas.rows import PageRecord

T = TypeVar("T")
FULL_TEXT_CHARS = 100_000  # the most extracted text kept per page
MAX_IMAGES = 20
DEFAULT_RETRY_TTL_S = 120.0
DEFAULT_ERROR_TTL_S = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    fetched_at REAL NOT NULL,
    expires_at REAL,
    status INTEGER NOT NULL,
    final_url TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    images_json TEXT NOT NULL,
    error_class TEXT NOT NULL,
    error TEXT NOT NULL,
    error_status INTEGER,
    retryable INTEGER NOT NULL
)
"""
_COLUMNS = (
    "url, fetched_at, expires_at, status, final_url, title, text, images_json, "
    "error_class, error, error_status, retryable"
)


def rebuild_error(error_class: str, message: str, status: int | None, retryable: bool) -> GroundgenError:
    """A cached error as its own class again (unknown names become `FetchError`)."""
    kind = getattr(error_types, error_class, None)
    if kind is FetchError or not (isinstance(kind, type) and issubclass(kind, GroundgenError)):
        return FetchError(message, status=status, retryable=retryable)
    return kind(message)


def error_ttl(error: GroundgenError, retry_ttl_s: float, error_ttl_s: float) -> float:
    """How long a fetch error is served from a cache (0: never cached). A URL-guard refusal depends on
    the run's allowlist and costs nothing to re-check; a retryable error (429, 5xx, time-out, network)
    is kept briefly; a permanent one (404, refused type, size cap, broken content) for long."""
    if isinstance(error, UnsafeURLError):
        return 0.0
    return retry_ttl_s if getattr(error, "retryable", False) else error_ttl_s


def open_cache_database(path: Path, schema: tuple[str, ...]) -> sqlite3.Connection:
    """A worker-side cache file: SQLite in WAL mode (safe for the threads of one process and for several
    processes on one machine), autocommit, its tables created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    for statement in schema:
        connection.execute(statement)
    return connection


async def single_flight(
    in_flight: dict[str, asyncio.Future[T]], key: str, work: Callable[[], Awaitable[T]]
) -> T:
    """Run `work()` once per `key` at a time: concurrent callers with the same key await the first
    caller's result (or its exception) instead of repeating the fetch."""
    pending = in_flight.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    in_flight[key] = future
    try:
        result = await work()
        future.set_result(result)
        return result
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as error:  # waiters see it too
        future.set_exception(error)
        future.exception()  # mark retrieved: no "never retrieved" warning when nobody waits
        raise
    finally:
        del in_flight[key]


def page_cache_path(workdir: Path | str) -> Path:
    return Path(workdir) / "cache" / "pages.sqlite"


@dataclass(frozen=True)
class CachedPage:
    """One cache entry: an extracted page (whole text) or the error fetching it."""

    url: str
    fetched_at: float  # seconds since the epoch
    expires_at: float | None = None  # None: never
    status: int = 0
    final_url: str = ""
    title: str = ""
    text: str = ""
    images: list[PageImage] = field(default_factory=list)
    error_class: str = ""
    error: str = ""
    error_status: int | None = None
    retryable: bool = False

    @property
    def is_error(self) -> bool:
        return bool(self.error_class)

    @classmethod
    def from_page(cls, url: str, page: Page, fetched_at: float, expires_at: float | None) -> CachedPage:
        return cls(
            url=url,
            fetched_at=fetched_at,
            expires_at=expires_at,
            status=page.status,
            final_url=page.final_url or url,
            title=page.title,
            text=page.text,
            images=list(page.images[:MAX_IMAGES]),
        )

    @classmethod
    def from_error(
        cls, url: str, error: GroundgenError, fetched_at: float, expires_at: float | None
    ) -> CachedPage:
        status = getattr(error, "status", None)
        return cls(
            url=url,
            fetched_at=fetched_at,
            expires_at=expires_at,
            status=status or 0,
            error_class=type(error).__name__,
            error=(str(error) or type(error).__name__)[:2000],
            error_status=status,
            retryable=bool(getattr(error, "retryable", False)),
        )

    def to_error(self) -> GroundgenError:
        """The cached error, rebuilt as its own class (unknown names become `FetchError`)."""
        return rebuild_error(self.error_class, self.error, self.error_status, self.retryable)

    def record(self) -> PageRecord:
        fetched_at = datetime.fromtimestamp(self.fetched_at, UTC)
        row_id = (
            content_id("page-error", self.url, self.error_class, fetched_at.isoformat())
            if self.is_error
            else content_id(self.url)
        )
        return PageRecord(
            id=row_id,
            url=self.url,
            final_url=self.final_url,
            status=self.status,
            fetched_at=fetched_at,
            title=self.title,
            text=self.text,
            error_class=self.error_class,
            error=self.error,
        )


class PageCache:
    """URL -> `CachedPage` in one SQLite file. Expired entries read as missing."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._connection = open_cache_database(self.path, (_SCHEMA,))

    def get(self, url: str) -> CachedPage | None:
        with self._lock:
            row = self._connection.execute(f"SELECT {_COLUMNS} FROM pages WHERE url = ?", (url,)).fetchone()
        if row is None:
            return None
        entry = CachedPage(
            url=row[0],
            fetched_at=row[1],
            expires_at=row[2],
            status=row[3],
            final_url=row[4],
            title=row[5],
            text=row[6],
            images=[PageImage.model_validate(item) for item in json.loads(row[7])],
            error_class=row[8],
            error=row[9],
            error_status=row[10],
            retryable=bool(row[11]),
        )
        if entry.expires_at is not None and entry.expires_at <= self.clock():
            return None
        return entry

    def put(self, entry: CachedPage) -> None:
        images = json.dumps([image.model_dump() for image in entry.images], ensure_ascii=False)
        values = (
            entry.url,
            entry.fetched_at,
            entry.expires_at,
            entry.status,
            entry.final_url,
            entry.title,
            entry.text,
            images,
            entry.error_class,
            entry.error,
            entry.error_status,
            int(entry.retryable),
        )
        with self._lock:
            self._connection.execute(
                f"INSERT OR REPLACE INTO pages ({_COLUMNS}) VALUES ({', '.join('?' * len(values))})",
                values,
            )

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT count(*) FROM pages").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class CachingBrowser:
    """A `Browser` that serves pages from a `PageCache` and fetches (through `inner`) only on a miss.

    Use one per batch (it collects that batch's `records()`); share the `PageCache` across batches.
    Concurrent calls for the same URL share one fetch."""

    def __init__(
        self,
        inner: Browser,
        cache: PageCache,
        *,
        max_chars: int = 4000,
        page_ttl_s: float | None = None,
        retry_ttl_s: float = DEFAULT_RETRY_TTL_S,
        error_ttl_s: float = DEFAULT_ERROR_TTL_S,
        clock: Callable[[], float] = time.time,
    ):
        self.inner = inner
        self.cache = cache
        self.max_chars = max_chars
        self.page_ttl_s = page_ttl_s
        self.retry_ttl_s = retry_ttl_s
        self.error_ttl_s = error_ttl_s
        self.clock = clock
        self.fetches = 0  # pages fetched through `inner` by this browser (misses)
        self._in_flight: dict[str, asyncio.Future[CachedPage]] = {}
        self._records: dict[str, PageRecord] = {}

    def error_ttl(self, error: GroundgenError) -> float:
        """How long an error is served from the cache (0: not cached)."""
        return error_ttl(error, self.retry_ttl_s, self.error_ttl_s)

    async def browse(self, url: str, query: str) -> Page:
        entry = await self._entry(url)
        record = entry.record()
        self._records.setdefault(record.id, record)
        if entry.is_error:
            raise entry.to_error()
        passages = relevant_passages(entry.text, query, max_chars=self.max_chars)
        if not passages:
            raise ExtractionError(f"nothing relevant to {query!r} on {url}")
        return Page(
            url=url,
            final_url=entry.final_url or url,
            status=entry.status,
            title=entry.title,
            text=passages,
            images=entry.images,
        )

    async def _entry(self, url: str) -> CachedPage:
        cached = await asyncio.to_thread(self.cache.get, url)
        if cached is not None:
            return cached
        return await single_flight(self._in_flight, url, lambda: self._fetch(url))

    async def _fetch(self, url: str) -> CachedPage:
        self.fetches += 1
        try:
            page = await self.inner.browse(url, "")
        except GroundgenError as error:
            now = self.clock()
            ttl = self.error_ttl(error)
            entry = CachedPage.from_error(url, error, now, now + ttl)
            if ttl > 0:
                await asyncio.to_thread(self.cache.put, entry)
            return entry
        now = self.clock()
        expires = now + self.page_ttl_s if self.page_ttl_s is not None else None
        entry = CachedPage.from_page(url, page, now, expires)
        await asyncio.to_thread(self.cache.put, entry)
        return entry

    def records(self) -> list[PageRecord]:
        """`PageRecord` rows of every URL browsed through this browser so far, in first-use order."""
        return list(self._records.values())


def page_records(tools: Tools | Any) -> list[PageRecord]:
    """The page rows a batch's tools collected (empty when the browser does not cache)."""
    browser = getattr(tools, "browser", None)
    return browser.records() if isinstance(browser, CachingBrowser) else []
