"""A loopback server speaking the MediaWiki Action API (recentchanges, categorymembers, extracts) and
serving RSS 2.0 / Atom feeds with ETag and Last-Modified conditional GETs. Tests mutate `state`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape


@dataclass
class WikiPage:
    title: str
    extract: str
    timestamp: str  # ISO, e.g. 2026-01-02T03:04:05Z
    description: str = ""
    category: str = ""


@dataclass
class FeedEntry:
    title: str
    text: str
    when: str  # ISO
    link: str = ""
    category: str = ""


@dataclass
class State:
    pages: list[WikiPage] = field(default_factory=list)
    entries: list[FeedEntry] = field(default_factory=list)
    feed_version: int = 1
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)


def _iso_http(iso: str) -> str:
    from datetime import datetime

    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)


def rss_xml(state: State) -> bytes:
    items = "".join(
        f"<item><title>{escape(e.title)}</title><link>{escape(e.link)}</link>"
        f"<description>{escape(e.text)}</description><pubDate>{_iso_http(e.when)}</pubDate>"
        + (f"<category>{escape(e.category)}</category>" if e.category else "")
        + "</item>"
        for e in state.entries
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Science news</title>{items}</channel></rss>'.encode()


def atom_xml(state: State) -> bytes:
    entries = "".join(
        f'<entry><title>{escape(e.title)}</title><link rel="alternate" href="{escape(e.link)}"/>'
        f"<summary>{escape(e.text)}</summary><updated>{e.when}</updated>"
        + (f'<category term="{escape(e.category)}"/>' if e.category else "")
        + "</entry>"
        for e in state.entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Atom news</title>{entries}</feed>"
    ).encode()


def _list(state: State, params: dict[str, str]) -> dict[str, Any]:
    kind = params["list"]
    prefix = "rc" if kind == "recentchanges" else "cm"
    pages = sorted(state.pages, key=lambda p: (p.timestamp, p.title))
    if kind == "categorymembers":
        category = params.get("cmtitle", "").removeprefix("Category:")
        pages = [p for p in pages if p.category == category]
    start = params.get(f"{prefix}start", "")
    pages = [p for p in pages if not start or p.timestamp >= start]
    offset = int(params.get(f"{prefix}continue", "0"))
    limit = int(params.get(f"{prefix}limit", "50"))
    chunk = pages[offset : offset + limit]
    entries = [
        {"ns": 0, "title": p.title, "pageid": i, "timestamp": p.timestamp} for i, p in enumerate(chunk)
    ]
    if kind == "recentchanges":
        entries = [{**e, "type": "edit", "revid": 100 + e["pageid"]} for e in entries]
    answer: dict[str, Any] = {"batchcomplete": True, "query": {kind: entries}}
    if offset + limit < len(pages):
        answer["continue"] = {f"{prefix}continue": str(offset + limit), "continue": "-||"}
    return answer


def _extracts(state: State, params: dict[str, str]) -> dict[str, Any]:
    by_title = {p.title: p for p in state.pages}
    pages = []
    for title in params.get("titles", "").split("|"):
        page = by_title.get(title)
        if page is None:
            pages.append({"title": title, "missing": True})
        else:
            pages.append({"title": title, "extract": page.extract, "description": page.description})
    return {"batchcomplete": True, "query": {"pages": pages}}


def _handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
            self.send_response(status)
            if status != 304:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if status != 304:
                self.wfile.write(body)
            state.statuses.append((urlsplit(self.path).path, status))

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            state.requests.append((parts.path, params, dict(self.headers)))
            if parts.path == "/w/api.php":
                if params.get("list") in ("recentchanges", "categorymembers"):
                    answer = _list(state, params)
                elif "extracts" in params.get("prop", ""):
                    answer = _extracts(state, params)
                else:
                    answer = {"error": {"code": "badparams", "info": "unsupported"}}
                self._send(200, json.dumps(answer).encode(), "application/json; charset=utf-8", {})
                return
            if parts.path in ("/feed.xml", "/atom.xml"):
                etag = f'"feed-{state.feed_version}"'
                newest = max((e.when for e in state.entries), default="2026-01-01T00:00:00Z")
                last_modified = _iso_http(newest)
                headers = {"ETag": etag, "Last-Modified": last_modified}
                since = self.headers.get("If-Modified-Since")
                if self.headers.get("If-None-Match") == etag or (
                    since
                    and "If-None-Match" not in self.headers
                    and parsedate_to_datetime(since) >= parsedate_to_datetime(last_modified)
                ):
                    self._send(304, b"", "", headers)
                    return
                body = rss_xml(state) if parts.path == "/feed.xml" else atom_xml(state)
                kind = "application/rss+xml" if parts.path == "/feed.xml" else "application/atom+xml"
                self._send(200, body, kind, headers)
                return
            self._send(404, b"not found", "text/plain", {})

    return Handler


@contextmanager
def run_feed_server(state: State | None = None) -> Iterator[tuple[str, State]]:
    """Serve on 127.0.0.1 (ephemeral port); yields (base URL, state)."""
    state = state or State()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
