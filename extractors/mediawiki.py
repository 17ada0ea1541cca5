"""A live topic source over the MediaWiki Action API: recent changes or category members, with timestamps.

`topics.urls` lists API queries, e.g. `https://en.wikipedia.org/w/api.php?list=recentchanges` or
`https://en.wikipedia.org/w/api.php?list=categorymembers&cmtitle=Category:Physics`. Each list is read
oldest first from the watermark (`rcstart` / `cmstart`, inclusive), following `continue` tokens, then
the pages' intro extracts are fetched (`prop=extracts|description`). The watermark (a `SourceState` per
URL) is the newest timestamp seen. Topic ids hash the source, title and extract, so a changed article
is a new topic and an unchanged one is not mined twice. All HTTP goes through `SafeFetcher`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from extractors.category_map import map_category
from extractors.fetcher import SafeFetcher
from schemas.config import FetchConfig
from schemas.errors import FetchError
from schemas.ids import content_id
from schemas.rows import SourceState, Topic

SOURCE_NAME = "mediawiki"
LICENSE = "CC BY-SA 4.0"
MAX_PAGES = 20  # continuation pages per list and refresh
TITLES_PER_REQUEST = 20


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_sync(coroutine: Any) -> Any:
    """Run a coroutine from sync code, also when the calling thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), dict(parse_qsl(parts.query))


def list_params(query: Mapping[str, str], since: str) -> dict[str, str]:
    """The API parameters of one list query, oldest first from `since` (inclusive)."""
    kind = query.get("list", "recentchanges")
    params = {"action": "query", "format": "json", "formatversion": "2", **query, "list": kind}
    if kind == "recentchanges":
        params |= {"rcprop": "title|ids|timestamp", "rcdir": "newer", "rclimit": params.get("rclimit", "50")}
        params.setdefault("rcnamespace", "0")
        params.setdefault("rctype", "edit|new")
        if since:
            params["rcstart"] = since
    elif kind == "categorymembers":
        params |= {"cmprop": "ids|title|timestamp", "cmsort": "timestamp", "cmdir": "newer"}
        params.setdefault("cmlimit", "50")
        params.setdefault("cmnamespace", "0")
        if since:
            params["cmstart"] = since
    else:
        raise ValueError(f"unsupported MediaWiki list {kind!r}: use recentchanges or categorymembers")
    return params


class MediaWikiSource:
    """`TopicSource` over MediaWiki API lists; `topics_since(states)` reads only what changed."""

    name = SOURCE_NAME

    def __init__(self, urls: Sequence[str], fetch: FetchConfig | None = None, categories: Sequence[str] = ()):
        if not urls:
            raise ValueError("the mediawiki source needs topics.urls (API queries)")
        self.urls = list(urls)
        self.fetch_config = fetch or FetchConfig()
        self.categories = set(categories)

    def topics(self) -> Iterator[Topic]:
        yield from self.topics_since({})[0]

    def state_id(self, url: str) -> str:
        return f"{SOURCE_NAME}:{url}"

    def topics_since(self, states: Mapping[str, SourceState]) -> tuple[list[Topic], list[SourceState]]:
        return run_sync(self._topics_since(states))

    async def _topics_since(self, states: Mapping[str, SourceState]) -> tuple[list[Topic], list[SourceState]]:
        topics: list[Topic] = []
        new_states: list[SourceState] = []
        async with SafeFetcher(self.fetch_config) as fetcher:
            for url in self.urls:
                state = states.get(self.state_id(url))
                since = state.watermark if state else ""
                found, newest = await self._read_list(fetcher, url, since)
                topics += await self._pages(fetcher, url, found)
                new_states.append(
                    SourceState(
                        id=self.state_id(url),
                        source=SOURCE_NAME,
                        watermark=newest or since,
                        updated_at=datetime.now(UTC),
                    )
                )
        return topics, new_states

    async def _get(self, fetcher: SafeFetcher, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        result = await fetcher.fetch(endpoint + "?" + urlencode(params), accept=("application/json",))
        try:
            data = json.loads(result.body)
        except ValueError as error:
            raise FetchError(f"MediaWiki API at {endpoint} answered with invalid JSON") from error
        if "error" in data:
            raise FetchError(f"MediaWiki API error: {data['error'].get('info', data['error'])}")
        return data

    async def _read_list(
        self, fetcher: SafeFetcher, url: str, since: str
    ) -> tuple[dict[str, tuple[datetime, str]], str]:
        """title -> (newest timestamp, category title) of the list's entries since the watermark."""
        endpoint, query = _split(url)
        params = list_params(query, since)
        kind = params["list"]
        found: dict[str, tuple[datetime, str]] = {}
        newest = ""
        for _ in range(MAX_PAGES):
            data = await self._get(fetcher, endpoint, params)
            for entry in data.get("query", {}).get(kind, []):
                if "timestamp" not in entry or "title" not in entry:
                    continue
                when = parse_time(entry["timestamp"])
                label = params.get("cmtitle", "").removeprefix("Category:")
                if entry["title"] not in found or found[entry["title"]][0] < when:
                    found[entry["title"]] = (when, label)
                newest = max(newest, format_time(when))
            token = data.get("continue")
            if not token:
                break
            params = {**params, **{key: str(value) for key, value in token.items()}}
        return found, newest

    async def _pages(
        self, fetcher: SafeFetcher, url: str, found: Mapping[str, tuple[datetime, str]]
    ) -> list[Topic]:
        endpoint, _ = _split(url)
        titles = sorted(found)
        topics = []
        for start in range(0, len(titles), TITLES_PER_REQUEST):
            params = {
                "action": "query",
                "format": "json",
                "formatversion": "2",
                "prop": "extracts|description",
                "exintro": "1",
                "explaintext": "1",
                "titles": "|".join(titles[start : start + TITLES_PER_REQUEST]),
            }
            data = await self._get(fetcher, endpoint, params)
            for page in data.get("query", {}).get("pages", []):
                extract = (page.get("extract") or "").strip()
                title = page.get("title", "")
                if page.get("missing") or not extract or title not in found:
                    continue
                when, label = found[title]
                description = page.get("description", "")
                category = map_category(label, title, description, extract)
                if self.categories and category not in self.categories:
                    continue
                base = endpoint.rsplit("/w/api.php", 1)[0] if "/w/api.php" in endpoint else endpoint
                topics.append(
                    Topic(
                        id=content_id(SOURCE_NAME, title, extract),
                        source=SOURCE_NAME,
                        title=title,
                        text=extract,
                        description=description,
                        category=category,
                        source_category=label,
                        url=f"{base}/wiki/{title.replace(' ', '_')}",
                        license=LICENSE,
                        updated_at=when,
                    )
                )
        return topics
