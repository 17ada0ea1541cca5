"""A tiny loopback "web" for live-search tests: pages and images, plus Serper/SearXNG whose hits point there.

`serve_pages()` starts a page server on 127.0.0.1 (ephemeral port, daemon thread). Routes:

  /page/<name>            an HTML page about <name> (URL-quoted), with facts and an <img> of it
  /long/<name>            a long page (over 8,000 characters of text): <name>'s facts early, filler
                          paragraphs, a paragraph about the weather at the end
  /img/<name>-<n>.png     a 96x64 PNG whose colour depends on (name, n): distinct images per subject
  /hostile/metadata       302 to http://169.254.169.254/latest/meta-data/ (cloud metadata address)
  /hostile/private        302 to http://127.0.0.2:<port>/page/private (loopback, not allowlisted)
  /hostile/gzip-bomb      text/html, gzip: 32 KiB that inflate to 32 MiB
  /img/truncated.jpg      a JPEG cut in half
  /empty                  200 text/html with no body text
  /status/<code>          that status

`server.requests` lists the paths served, in order (thread-safe appends).

`serve_live_search(pages, api_key, hostile=False)` starts a server speaking Serper's and SearXNG's
JSON formats (it reuses `testkit.servers.search_providers`: same routes, key check, request log and
script queue) whose web hits are `/page/<query>` on `pages` and whose image hits are PNGs there. With
`hostile=True`, each web search's first hit is a hostile route (cycling metadata, private, gzip bomb)
and each image search's first hit is the truncated JPEG.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

from testkit.servers.search_providers import ProviderHandler, SearchProviderServer

GZIP_BOMB = gzip.compress(b" " * (32 * 1024 * 1024), compresslevel=9)
HOSTILE_ROUTES = ("/hostile/metadata", "/hostile/private", "/hostile/gzip-bomb")


def page_html(name: str) -> str:
    safe = html.escape(name)
    return (
        f"<html><head><title>{safe}</title></head><body><article>"
        f"<h1>{safe}</h1>"
        f"<p>{safe} is described on this page. {safe} was first recorded in 1887 in the city of Lyon.</p>"
        f"<p>Facts about {safe}: the dates, numbers and names most often cited are 1887, 42 and Marie.</p>"
        f'<figure><img src="/img/{quote(name, safe="")}-1.png" alt="{safe}">'
        f"<figcaption>{safe} in a photograph</figcaption></figure>"
        f"<p>Unrelated closing paragraph about the weather in spring.</p>"
        "</article></body></html>"
    )


def long_page_html(name: str) -> str:
    safe = html.escape(name)
    filler = "".join(
        f"<p>Paragraph {n} repeats general background that mentions nothing specific at all here.</p>"
        for n in range(100)
    )
    return (
        f"<html><head><title>{safe}</title></head><body><article><h1>{safe}</h1>"
        f"<p>{safe} was first recorded in 1887 in the city of Lyon.</p>{filler}"
        "<p>Unrelated closing paragraph about the weather in spring.</p></article></body></html>"
    )


def png_bytes(name: str, number: int, size: tuple[int, int] = (96, 64)) -> bytes:
    from PIL import Image

    digest = hashlib.sha256(f"{name}-{number}".encode()).digest()
    image = Image.new("RGB", size, tuple(digest[:3]))
    for x in range(0, size[0], 8):  # a pattern, so perceptual hashes differ between images
        for y in range(0, size[1], 8):
            if (x // 8 + y // 8 + digest[3]) % 3 == 0:
                image.putpixel((x, y), tuple(digest[4:7]))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def truncated_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (128, 96), (200, 30, 30)).save(out, format="JPEG")
    data = out.getvalue()
    return data[: len(data) // 2]


class PageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PageServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        with self.server.lock:
            self.server.requests.append(path)
        if path.startswith("/page/"):
            name = unquote(path[len("/page/") :])
            self._send(200, page_html(name).encode(), "text/html; charset=utf-8")
        elif path.startswith("/long/"):
            name = unquote(path[len("/long/") :])
            self._send(200, long_page_html(name).encode(), "text/html; charset=utf-8")
        elif path == "/img/truncated.jpg":
            self._send(200, truncated_jpeg(), "image/jpeg")
        elif path.startswith("/img/") and path.endswith(".png"):
            name, _, number = unquote(path[len("/img/") : -len(".png")]).rpartition("-")
            self._send(200, png_bytes(name, int(number) if number.isdigit() else 0), "image/png")
        elif path == "/hostile/metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/hostile/private":
            self._redirect(f"http://127.0.0.2:{self.server.server_address[1]}/page/private")
        elif path == "/hostile/gzip-bomb":
            self._send(200, GZIP_BOMB, "text/html", Content_Encoding="gzip")
        elif path == "/empty":
            self._send(200, b"<html><body></body></html>", "text/html")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"<html>status</html>", "text/html")
        else:
            self._send(404, b"not found", "text/plain")


class PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PageHandler)
        self.lock = threading.Lock()
        self.requests: list[str] = []

    @property
    def host(self) -> str:
        """The exact `fetch.allow_hosts` entry for this server."""
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests.count(path)


def serve_pages() -> PageServer:
    server = PageServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- search providers whose hits point at the page server ------------------------------------------


class LiveSearchHandler(ProviderHandler):
    server: LiveSearchServer

    def do_POST(self) -> None:  # Serper
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path, _ = self._record(body)
        if self._scripted():
            return
        if self.headers.get("X-API-KEY") != self.server.api_key:
            self._answer(403, b'{"message":"Unauthorized.","statusCode":403}')
            return
        request = json.loads(body)
        query, num = str(request["q"]), int(request.get("num", 10))
        if path == "/search":
            organic = [
                {"title": title, "link": url, "snippet": snippet, "position": position}
                for position, (title, url, snippet) in enumerate(self.server.web_hits(query)[:num], 1)
            ]
            answer = {"searchParameters": {"q": query, "type": "search"}, "organic": organic}
        elif path == "/images":
            images = [
                {"title": title, "imageUrl": url, "imageWidth": 96, "imageHeight": 64, "link": page}
                for title, url, page in self.server.image_hits(query)[:num]
            ]
            answer = {"searchParameters": {"q": query, "type": "images"}, "images": images}
        else:
            self._answer(404, b'{"message":"not found"}')
            return
        self._answer(200, json.dumps(answer).encode())

    def do_GET(self) -> None:  # SearXNG
        path, query = self._record(b"")
        if self._scripted():
            return
        if path != "/search":
            self._answer(404, b"{}")
            return
        if query.get("format") != ["json"]:
            self._answer(403, b"<html>403 Forbidden</html>")
            return
        text = query["q"][0]
        if query.get("categories", [""])[0] == "images":
            results = [
                {"url": page, "title": title, "img_src": url, "resolution": "96 x 64", "category": "images"}
                for title, url, page in self.server.image_hits(text)
            ]
        else:
            results = [
                {"url": url, "title": title, "content": snippet}
                for title, url, snippet in self.server.web_hits(text)
            ]
        answer = {"query": text, "number_of_results": len(results), "results": results}
        self._answer(200, json.dumps(answer).encode())


class LiveSearchServer(SearchProviderServer):
    def __init__(self, pages: PageServer, api_key: str, hostile: bool = False) -> None:
        ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), LiveSearchHandler)
        self.api_key = api_key
        self.script = []
        self.requests = []
        self.pages = pages
        self.hostile = hostile
        self._hostile_routes = itertools.cycle(HOSTILE_ROUTES)
        self._lock = threading.Lock()

    def web_hits(self, query: str) -> list[tuple[str, str, str]]:
        base = self.pages.base_url
        hits = [
            (query, f"{base}/page/{quote(query, safe='')}", f"{query}: an overview."),
            (f"More on {query}", f"{base}/page/{quote(query + ' (more)', safe='')}", "Further reading."),
        ]
        if self.hostile:
            with self._lock:
                route = next(self._hostile_routes)
            hits.insert(0, (query, base + route, f"{query} (mirror)."))
        return hits

    def image_hits(self, query: str) -> list[tuple[str, str, str]]:
        base, name = self.pages.base_url, quote(query, safe="")
        hits = [(f"{query} photo {n}", f"{base}/img/{name}-{n}.png", f"{base}/page/{name}") for n in (1, 2)]
        if self.hostile:
            hits.insert(0, (f"{query} broken photo", f"{base}/img/truncated.jpg", f"{base}/page/{name}"))
        return hits


def serve_live_search(
    pages: PageServer, api_key: str = "test-key", hostile: bool = False
) -> LiveSearchServer:
    server = LiveSearchServer(pages, api_key, hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
