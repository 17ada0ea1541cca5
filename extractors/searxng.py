"""SearXNG (self-hosted metasearch) as a `SearchBackend`, through its JSON API.

`GET {base}/search?q=...&format=json` (web) and `...&categories=images` (images); answers carry
`results: [{url, title, content}]`, image results add `img_src`, `thumbnail_src` and `resolution`
("1920x1080"). The instance must list `json` in `search.formats` (settings.yml), else it answers 403.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from extractors.rate_limit import JsonAPIClient, Sleep, TokenBucket
from schemas.config import SearchConfig
from schemas.errors import ConfigurationError, FetchError
from schemas.protocols import ImageHit, SearchHit

_RESOLUTION = re.compile(r"(\d+)\s*[x×X]\s*(\d+)")


class SearxngSearch(JsonAPIClient):
    def __init__(
        self,
        base_url: str,
        *,
        requests_per_minute: float = 0,
        timeout_s: float = 20,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30,
        language: str = "en",
        sleep: Sleep = asyncio.sleep,
        bucket: TokenBucket | None = None,
    ) -> None:
        """`bucket`: a rate budget shared with the provider's other clients (None = this client's own)."""
        if not base_url:
            raise ConfigurationError("SearXNG needs search.base_url (the instance's address)")
        super().__init__(
            base_url,
            requests_per_minute=requests_per_minute,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            sleep=sleep,
            bucket=bucket,
        )
        self.language = language

    @classmethod
    def from_config(cls, config: SearchConfig, *, bucket: TokenBucket | None = None) -> SearxngSearch:
        return cls(
            config.base_url,
            requests_per_minute=config.requests_per_minute,
            timeout_s=config.timeout_s,
            bucket=bucket,
        )

    async def _get(self, query: str, categories: str) -> list[dict[str, Any]]:
        params = {"q": query, "format": "json", "language": self.language}
        if categories:
            params["categories"] = categories
        service = f"searxng {categories or 'general'}"
        try:
            data = await self._request_json(
                "GET",
                "/search",
                service=service,
                params=params,
                headers={"Accept": "application/json"},
            )
        except FetchError as error:
            if error.status == 403:
                raise FetchError(
                    f"{service}: HTTP 403, the instance refuses JSON output (add 'json' to search.formats)",
                    status=403,
                ) from error
            raise
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise FetchError(f"{service}: the answer has no 'results' list")
        return [item for item in results if isinstance(item, dict)]

    async def search(self, query: str, top_k: int) -> list[SearchHit]:
        return parse_results(await self._get(query, ""))[:top_k]

    async def image_search(self, query: str, top_k: int) -> list[ImageHit]:
        return parse_image_results(await self._get(query, "images"))[:top_k]


def _absolute(url: Any) -> str:
    text = str(url or "")
    return "https:" + text if text.startswith("//") else text


def parse_results(results: list[dict[str, Any]]) -> list[SearchHit]:
    """SearXNG results -> hits, deduplicated by URL in rank order."""
    hits, seen = [], set()
    for item in results:
        url = _absolute(item.get("url"))
        if not url or url in seen:
            continue
        seen.add(url)
        hits.append(
            SearchHit(title=str(item.get("title") or ""), url=url, snippet=str(item.get("content") or ""))
        )
    return hits


def parse_image_results(results: list[dict[str, Any]]) -> list[ImageHit]:
    """SearXNG image results -> image hits (results without img_src are skipped), deduplicated."""
    hits, seen = [], set()
    for item in results:
        url = _absolute(item.get("img_src"))
        if not url or url in seen:
            continue
        seen.add(url)
        match = _RESOLUTION.search(str(item.get("resolution") or ""))
        width, height = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
        hits.append(
            ImageHit(
                url=url,
                title=str(item.get("title") or ""),
                page_url=_absolute(item.get("url")),
                thumbnail_url=_absolute(item.get("thumbnail_src")),
                width=width,
                height=height,
            )
        )
    return hits
