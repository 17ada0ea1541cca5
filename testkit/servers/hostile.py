"""A loopback HTTP server that misbehaves on purpose, for the safe fetcher's tests.

`serve_hostile()` starts it on 127.0.0.1 (ephemeral port) in a daemon thread and returns
(server, base_url). Routes:

  /ok                   small UTF-8 HTML page
  /redirect?to=URL      302 to URL (absolute or relative)
  /chain/N              N redirects, then /ok
  /loop/a, /loop/b      redirect to each other forever
  /no-location          302 without a Location header
  /huge                 text/html without Content-Length, streamed from a generator until the client
                        hangs up (capped server-side at 64 MiB; a 2 GB body is never sent)
  /huge-declared        Content-Length: 2147483648, then a few bytes
  /gzip-bomb            Content-Encoding: gzip, 32 KiB on the wire that inflate to 32 MiB
  /deflate, /gzip       small compressed pages (zlib-deflate and gzip)
  /slow                 dribbles one byte every 0.1 s (200 bytes)
  /charset/wrong        declares utf-8, sends cp1252 bytes
  /charset/meta         no header charset, <meta charset="windows-1252">
  /charset/none         no charset anywhere, UTF-8 bytes
  /charset/bogus        declares charset=x-no-such-charset
  /binary-as-html       PNG bytes with Content-Type text/html
  /status/CODE          that status (429 and 503 carry Retry-After: 1)
  /bytes?type=T&file=K  bytes registered in `server.files[K]` served as type T
  /headers              echoes request headers as JSON
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PAGE = "<html><head><title>Ok</title></head><body><p>Café crème — naïve</p></body></html>"
GZIP_BOMB = gzip.compress(b"\0" * (32 * 1024 * 1024), compresslevel=9)
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str | None, status: int = 302) -> None:
        self.send_response(status)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/ok":
            self._send(200, PAGE.encode("utf-8"))
        elif path == "/redirect":
            self._redirect(query["to"][0], int(query.get("status", ["302"])[0]))
        elif path.startswith("/chain/"):
            remaining = int(path.rsplit("/", 1)[1])
            self._redirect(f"/chain/{remaining - 1}" if remaining > 1 else "/ok")
        elif path == "/loop/a":
            self._redirect("/loop/b")
        elif path == "/loop/b":
            self._redirect("/loop/a")
        elif path == "/no-location":
            self._redirect(None)
        elif path == "/huge":
            self._stream_forever()
        elif path == "/huge-declared":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(2 * 1024**3))
            self.end_headers()
            self.wfile.write(b"<html>" * 100)
        elif path == "/gzip-bomb":
            self._send(200, GZIP_BOMB, Content_Encoding="gzip")
        elif path == "/gzip":
            self._send(200, gzip.compress(PAGE.encode()), Content_Encoding="gzip")
        elif path == "/deflate":
            self._send(200, zlib.compress(PAGE.encode()), Content_Encoding="deflate")
        elif path == "/slow":
            self._dribble()
        elif path == "/charset/wrong":
            self._send(200, PAGE.encode("cp1252"), "text/html; charset=utf-8")
        elif path == "/charset/meta":
            body = PAGE.replace("<head>", '<head><meta charset="windows-1252">').encode("cp1252")
            self._send(200, body, "text/html")
        elif path == "/charset/none":
            self._send(200, PAGE.encode("utf-8"), "text/html")
        elif path == "/charset/bogus":
            self._send(200, PAGE.encode("utf-8"), "text/html; charset=x-no-such-charset")
        elif path == "/binary-as-html":
            self._send(200, PNG_BYTES, "text/html")
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            extra = {"Retry_After": "1"} if code in (429, 503) else {}
            self._send(code, b"<html>status</html>", **extra)
        elif path == "/bytes":
            self._send(200, self.server.files[query["file"][0]], query.get("type", ["image/png"])[0])
        elif path == "/headers":
            self._send(200, json.dumps(dict(self.headers.items())).encode(), "application/json")
        else:
            self._send(404, b"not found")

    def _stream_forever(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"<p>" + b"x" * 65530 + b"</p>"

        def body():  # a generator: nothing close to 2 GB is ever materialised or sent
            for _ in range(1024):
                yield chunk

        try:
            for piece in body():
                self.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _dribble(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "200")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HostileHandler)
        self.requests: list[str] = []
        self.files: dict[str, bytes] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serve_hostile() -> tuple[HostileServer, str]:
    server = HostileServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.base_url
