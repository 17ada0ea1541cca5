"""A live topic source over RSS 2.0 and Atom feeds, read with conditional GETs.

`topics.urls` lists feed URLs. Each feed keeps a `SourceState` (id `rss:<url>`): its ETag and
Last-Modified (sent back as If-None-Match / If-Modified-Since, so an unchanged feed costs a 304) and a
watermark, the newest entry time seen; only entries newer than the watermark become topics. Entries
without a date count as new once (their id hashes title and text). All HTTP goes through `SafeFetcher`;
XML is parsed without DTDs, entities or network access.
"""

from __future__ import annotations

import contextvars
import html
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from lxml import etree

from extractors.category_map import map_category
from extractors.fetcher import SafeFetcher
from extractors.mediawiki import format_time, parse_time, run_sync
from schemas.config import FetchConfig
from schemas.errors import ExtractionError
from schemas.ids import content_id
from schemas.rows import SourceState, Topic

SOURCE_NAME = "rss"
ATOM = "{http://www.w3.org/2005/Atom}"
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/xml", "text/xml")
_TAGS = re.compile(r"<[^>]+>")
_EXTRA_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "groundgen_rss_headers", default=None
)


class ConditionalFetcher(SafeFetcher):
    """SafeFetcher that adds the conditional-GET headers of the current feed to its requests."""

    def _http(self) -> Any:
        client = super()._http()
        if not getattr(client, "_groundgen_conditional", False):

            async def add_headers(request: Any) -> None:
                request.headers.update(_EXTRA_HEADERS.get() or {})

            client.event_hooks["request"].append(add_headers)
            client._groundgen_conditional = True  # type: ignore[attr-defined]
        return client


def _text(element: Any) -> str:
    return html.unescape(_TAGS.sub(" ", "".join(element.itertext()) if element is not None else "")).strip()


def _date(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def parse_feed(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    """(feed title, entries as dicts: title, link, text, when, labels) of an RSS 2.0 or Atom feed."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as error:
        raise ExtractionError(f"feed is not well-formed XML: {error}") from error
    entries = []
    if root.tag == f"{ATOM}feed":
        feed_title = _text(root.find(f"{ATOM}title"))
        for entry in root.iter(f"{ATOM}entry"):
            link = entry.find(f"{ATOM}link[@rel='alternate']")
            link = link if link is not None else entry.find(f"{ATOM}link")
            entries.append(
                {
                    "title": _text(entry.find(f"{ATOM}title")),
                    "link": link.get("href", "") if link is not None else "",
                    "text": _text(entry.find(f"{ATOM}summary")) or _text(entry.find(f"{ATOM}content")),
                    "when": _date(
                        _text(entry.find(f"{ATOM}updated")) or _text(entry.find(f"{ATOM}published"))
                    ),
                    "labels": [c.get("term", "") for c in entry.findall(f"{ATOM}category")],
                }
            )
    elif root.tag == "rss":
        channel = root.find("channel")
        feed_title = _text(channel.find("title")) if channel is not None else ""
        for item in root.iter("item"):
            entries.append(
                {
                    "title": _text(item.find("title")),
                    "link": _text(item.find("link")),
                    "text": _text(item.find("description")),
                    "when": _date(_text(item.find("pubDate"))),
                    "labels": [_text(c) for c in item.findall("category")],
                }
            )
    else:
        raise ExtractionError(f"not an RSS or Atom feed (root element {root.tag!r})")
    return feed_title, [e for e in entries if e["title"] and e["text"]]


class RSSSource:
    """`TopicSource` over RSS/Atom feeds; `topics_since(states)` reads only entries newer than the watermark."""

    name = SOURCE_NAME

    def __init__(self, urls: Sequence[str], fetch: FetchConfig | None = None, categories: Sequence[str] = ()):
        if not urls:
            raise ValueError("the rss source needs topics.urls (feed URLs)")
        self.urls = list(urls)
        self.fetch_config = fetch or FetchConfig()
        self.categories = set(categories)

    def state_id(self, url: str) -> str:
        return f"{SOURCE_NAME}:{url}"

    def topics(self) -> Iterator[Topic]:
        yield from self.topics_since({})[0]

    def topics_since(self, states: Mapping[str, SourceState]) -> tuple[list[Topic], list[SourceState]]:
        return run_sync(self._topics_since(states))

    async def _topics_since(self, states: Mapping[str, SourceState]) -> tuple[list[Topic], list[SourceState]]:
        topics: list[Topic] = []
        new_states: list[SourceState] = []
        fetcher = ConditionalFetcher(self.fetch_config)
        async with fetcher:
            for url in self.urls:
                state = states.get(self.state_id(url))
                found, new_state = await self._feed(fetcher, url, state)
                topics += found
                new_states.append(new_state)
        return topics, new_states

    async def _feed(
        self, fetcher: ConditionalFetcher, url: str, state: SourceState | None
    ) -> tuple[list[Topic], SourceState]:
        headers = {}
        if state and state.etag:
            headers["If-None-Match"] = state.etag
        if state and state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
        token = _EXTRA_HEADERS.set(headers)
        try:
            result = await fetcher.fetch(url, accept=FEED_TYPES if not headers else ())
        finally:
            _EXTRA_HEADERS.reset(token)
        now = datetime.now(UTC)
        if result.status == 304 and state is not None:
            return [], state.model_copy(update={"updated_at": now})
        feed_title, entries = parse_feed(result.body)
        since = parse_time(state.watermark) if state and state.watermark else None
        topics = []
        newest = since
        for entry in entries:
            when = entry["when"]
            if when is not None and since is not None and when <= since:
                continue
            if when is not None and (newest is None or when > newest):
                newest = when
            label = entry["labels"][0] if entry["labels"] else feed_title
            category = map_category(label, entry["title"], "", entry["text"])
            if self.categories and category not in self.categories:
                continue
            topics.append(
                Topic(
                    id=content_id(SOURCE_NAME, entry["title"], entry["text"]),
                    source=SOURCE_NAME,
                    title=entry["title"],
                    text=entry["text"],
                    category=category,
                    source_category=label,
                    url=entry["link"],
                    updated_at=when,
                )
            )
        new_state = SourceState(
            id=self.state_id(url),
            source=SOURCE_NAME,
            watermark=format_time(newest) if newest else "",
            etag=result.headers.get("etag", ""),
            last_modified=result.headers.get("last-modified", ""),
            updated_at=now,
        )
        return topics, new_state
