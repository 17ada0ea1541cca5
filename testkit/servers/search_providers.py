"""A loopback server that speaks the Serper and SearXNG JSON APIs, for the search providers' tests.

`serve_search_providers(api_key)` starts it on 127.0.0.1 (ephemeral port) in a daemon thread.

Serper: `POST /search` and `POST /images`, JSON `{"q", "num"}`, key in `X-API-KEY` (403 otherwise);
answers `{"searchParameters", "organic": [...]}` / `{"searchParameters", "images": [...]}` in Serper's shape.
SearXNG: `GET /search?q=..&format=json[&categories=images]` (403 without format=json, as an instance
without JSON enabled does); answers `{"query", "number_of_results", "results": [...]}`.

`server.script` is a queue of canned answers `(status, body_bytes, headers)` served before the normal
ones (429s, 5xx, malformed JSON). `server.requests` records (method, path, query, headers, body).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def serper_organic(query: str, num: int) -> dict:
    return {
        "searchParameters": {"q": query, "type": "search", "num": num, "engine": "google"},
        "organic": [
            {
                "title": f"{query} — result {i}",
                "link": f"https://example.org/{query.replace(' ', '-')}/{i}",
                "snippet": f"Snippet {i} about {query}.",
                "position": i,
            }
            for i in range(1, num + 1)
        ]
        + [{"title": "no link", "position": 99}],
        "credits": 1,
    }


def serper_images(query: str, num: int) -> dict:
    return {
        "searchParameters": {"q": query, "type": "images", "num": num, "engine": "google"},
        "images": [
            {
                "title": f"{query} image {i}",
                "imageUrl": f"https://img.example.org/{i}.jpg",
                "imageWidth": 640 * i,
                "imageHeight": 480 * i,
                "thumbnailUrl": f"https://encrypted-tbn0.gstatic.com/images?q=tbn:{i}",
                "thumbnailWidth": 160,
                "thumbnailHeight": 120,
                "source": "Example",
                "domain": "example.org",
                "link": f"https://example.org/page/{i}",
                "googleUrl": f"https://www.google.com/imgres?imgurl={i}",
                "position": i,
            }
            for i in range(1, num + 1)
        ],
        "credits": 1,
    }


def searxng_results(query: str, categories: str) -> dict:
    if categories == "images":
        results = [
            {
                "url": "https://example.org/gallery/1",
                "title": f"{query} photo",
                "img_src": "https://upload.example.org/a.jpg",
                "thumbnail_src": "//thumbs.example.org/a.jpg",
                "resolution": "1920 x 1080",
                "engine": "bing images",
                "category": "images",
            },
            {
                "url": "https://example.org/gallery/2",
                "title": "duplicate of the first",
                "img_src": "https://upload.example.org/a.jpg",
                "engine": "duckduckgo images",
                "category": "images",
            },
            {"url": "https://example.org/gallery/3", "title": "no img_src", "category": "images"},
            {
                "url": "https://example.org/gallery/4",
                "title": "unknown size",
                "img_src": "https://upload.example.org/b.png",
                "category": "images",
            },
        ]
    else:
        results = [
            {"url": f"https://example.org/{i}", "title": f"{query} {i}", "content": f"About {query} ({i})."}
            for i in range(1, 4)
        ] + [{"url": "https://example.org/1", "title": "duplicate", "content": ""}]
    return {"query": query, "number_of_results": len(results), "results": results, "answers": []}


class ProviderHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SearchProviderServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body: bytes) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.server.requests.append((self.command, parts.path, query, dict(self.headers.items()), body))
        return parts.path, query

    def _scripted(self) -> bool:
        if not self.server.script:
            return False
        self._answer(*self.server.script.pop(0))
        return True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path, _ = self._record(body)
        if self._scripted():
            return
        if self.headers.get("X-API-KEY") != self.server.api_key:
            self._answer(403, b'{"message":"Unauthorized.","statusCode":403}')
            return
        request = json.loads(body)
        num = int(request.get("num", 10))
        if path == "/search":
            self._answer(200, json.dumps(serper_organic(request["q"], num)).encode())
        elif path == "/images":
            self._answer(200, json.dumps(serper_images(request["q"], num)).encode())
        else:
            self._answer(404, b'{"message":"not found"}')

    def do_GET(self) -> None:
        path, query = self._record(b"")
        if self._scripted():
            return
        if path != "/search":
            self._answer(404, b"{}")
        elif query.get("format") != ["json"]:
            self._answer(403, b"<html>403 Forbidden</html>")
        else:
            categories = query.get("categories", [""])[0]
            self._answer(200, json.dumps(searxng_results(query["q"][0], categories)).encode())


class SearchProviderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api_key: str) -> None:
        super().__init__(("127.0.0.1", 0), ProviderHandler)
        self.api_key = api_key
        self.script: list[tuple[int, bytes, dict[str, str]]] = []
        self.requests: list[tuple[str, str, dict[str, list[str]], dict[str, str], bytes]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serve_search_providers(api_key: str = "test-key") -> SearchProviderServer:
    server = SearchProviderServer(api_key)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
