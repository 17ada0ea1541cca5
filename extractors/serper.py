"""Serper (google.serper.dev): the web and image search Gen-Searcher's release used, as a `SearchBackend`.

API: `POST {base}/search` and `POST {base}/images` with JSON `{"q": ..., "num": ...}` and the key in the
`X-API-KEY` header; answers carry `organic: [{title, link, snippet}]` and
`images: [{title, imageUrl, imageWidth, imageHeight, thumbnailUrl, link, source}]`.
The key is read from the environment variable the config names, sent only in that header, redacted
from errors and never logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from extractors.rate_limit import JsonAPIClient, Sleep, TokenBucket
from schemas.config import SearchConfig, secret_from_env
from schemas.errors import ConfigurationError, FetchError
from schemas.protocols import ImageHit, SearchHit

DEFAULT_BASE_URL = "https://google.serper.dev"
DEFAULT_KEY_ENV = "SERPER_API_KEY"


class SerperSearch(JsonAPIClient):
    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key_env: str = DEFAULT_KEY_ENV,
        requests_per_minute: float = 0,
        timeout_s: float = 20,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30,
        sleep: Sleep = asyncio.sleep,
        bucket: TokenBucket | None = None,
    ) -> None:
        """`bucket`: a rate budget shared with the provider's other clients (None = this client's own)."""
        key = secret_from_env(api_key_env)
        if not key:
            raise ConfigurationError(
                f"Serper needs an API key in the environment variable {api_key_env or '(unset)'}"
            )
        self._api_key = key
        super().__init__(
            base_url or DEFAULT_BASE_URL,
            requests_per_minute=requests_per_minute,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
            sleep=sleep,
            secrets=(key,),
            bucket=bucket,
        )

    @classmethod
    def from_config(cls, config: SearchConfig, *, bucket: TokenBucket | None = None) -> SerperSearch:
        return cls(
            config.base_url or DEFAULT_BASE_URL,
            api_key_env=config.api_key_env or DEFAULT_KEY_ENV,
            requests_per_minute=config.requests_per_minute,
            timeout_s=config.timeout_s,
            bucket=bucket,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"SerperSearch(base_url={self.base_url!r})"

    async def _post(self, endpoint: str, query: str, top_k: int) -> dict[str, Any]:
        data = await self._request_json(
            "POST",
            f"/{endpoint}",
            service=f"serper {endpoint}",
            headers={"X-API-KEY": self._api_key, "Content-Type": "application/json"},
            json={"q": query, "num": max(1, min(int(top_k), 100))},
        )
        if not isinstance(data, dict):
            raise FetchError(f"serper {endpoint}: expected a JSON object, got {type(data).__name__}")
        return data

    async def search(self, query: str, top_k: int) -> list[SearchHit]:
        data = await self._post("search", query, top_k)
        return parse_organic(data)[:top_k]

    async def image_search(self, query: str, top_k: int) -> list[ImageHit]:
        data = await self._post("images", query, top_k)
        return parse_images(data)[:top_k]


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise FetchError(f"serper: '{key}' is not a list")
    return [item for item in items if isinstance(item, dict)]


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def parse_organic(data: dict[str, Any]) -> list[SearchHit]:
    """Serper `/search` answer -> hits (results without a link are skipped)."""
    return [
        SearchHit(
            title=str(item.get("title", "")), url=str(item["link"]), snippet=str(item.get("snippet", ""))
        )
        for item in _items(data, "organic")
        if item.get("link")
    ]


def parse_images(data: dict[str, Any]) -> list[ImageHit]:
    """Serper `/images` answer -> image hits (results without an image URL are skipped)."""
    return [
        ImageHit(
            url=str(item["imageUrl"]),
            title=str(item.get("title", "")),
            page_url=str(item.get("link", "")),
            thumbnail_url=str(item.get("thumbnailUrl", "")),
            width=_int(item.get("imageWidth")),
            height=_int(item.get("imageHeight")),
        )
        for item in _items(data, "images")
        if item.get("imageUrl")
    ]
