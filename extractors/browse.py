"""`browse(url, query)`: fetch a page through the safe fetcher, extract its main content, and keep the
passages relevant to the query (the Gen-Searcher browse tool, without the summarising model)."""

from __future__ import annotations

from extractors.html_extract import decode_html, extract_main_content, relevant_passages
from schemas.errors import ExtractionError, FetchError
from schemas.protocols import Fetcher, Page

ACCEPT = ("text/html", "application/xhtml+xml", "text/plain")
MAX_IMAGES = 20


class PageBrowser:
    """`Browser` over any `Fetcher`. Raises `ExtractionError` when the page has no content, or nothing
    relevant to a non-empty query (the caller reports it to the model as "nothing relevant")."""

    def __init__(self, fetcher: Fetcher, max_chars: int = 4000):
        self.fetcher = fetcher
        self.max_chars = max_chars

    async def browse(self, url: str, query: str) -> Page:
        result = await self.fetcher.fetch(url, accept=ACCEPT)
        if result.status >= 400:
            raise FetchError(
                f"HTTP {result.status} for {url}", status=result.status, retryable=result.status >= 500
            )
        content_type = result.content_type.split(";")[0].strip().lower()
        if content_type == "text/plain":
            title, images = "", []
            text = "\n\n".join(
                " ".join(p.split())
                for p in decode_html(result.body, result.charset).split("\n\n")
                if p.strip()
            )
        else:
            page = extract_main_content(result.body, result.final_url or url, charset=result.charset)
            title, text, images = page.title, page.full_text, page.images
        if not text.strip():
            raise ExtractionError(f"no content could be extracted from {url}")
        passages = relevant_passages(text, query, max_chars=self.max_chars)
        if not passages:
            raise ExtractionError(f"nothing relevant to {query!r} on {url}")
        return Page(
            url=url,
            final_url=result.final_url or url,
            status=result.status,
            title=title,
            text=passages,
            images=images[:MAX_IMAGES],
        )
