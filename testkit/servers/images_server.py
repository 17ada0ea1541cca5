"""A scripted OpenAI-images-compatible server on 127.0.0.1, for the HTTP painter's tests.

`POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart, `image` or `image[]`
parts) answer from a queue of scripted replies (`server.reply(...)`), else with a generated picture:
a PNG whose colour is a hash of (prompt, seed, the uploaded references), so the same request always
gets the same bytes and a different seed or reference gets other bytes. A reply is one of

- `Picture(data)`: a 200 answer carrying `data` (any bytes: a valid or a truncated image) as b64_json;
- `Status(code, retry_after=...)`: an OpenAI-style error body with that HTTP status;
- `Body(dict)`: any JSON body with status 200 (e.g. a `url` instead of `b64_json`).

Every request is recorded (`server.requests`: path, headers, JSON fields or multipart fields and
files). If `api_key` is set, requests without `Authorization: Bearer <api_key>` get a 401.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Picture:
    data: bytes


@dataclass
class Status:
    code: int
    retry_after: str | None = None
    message: str = "scripted error"


@dataclass
class Body:
    body: dict[str, Any]


Reply = Picture | Status | Body


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    fields: dict[str, Any] = field(default_factory=dict)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)  # (field name, filename, bytes)


def generated_png(key: str, side: int = 64) -> bytes:
    """A deterministic PNG for `key`: a colour from its hash with a diagonal stripe."""
    from PIL import Image, ImageDraw

    digest = hashlib.sha256(key.encode("utf-8")).digest()
    image = Image.new("RGB", (side, side), tuple(digest[:3]))
    ImageDraw.Draw(image).line((0, 0, side, side), fill=tuple(digest[3:6]), width=max(1, side // 8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], list[tuple[str, str, bytes]]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    files: list[tuple[str, str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.append((name, filename, payload))
        else:
            fields[name] = payload.decode("utf-8")
    return fields, files


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class ImagesServer:
    def __init__(self, *, api_key: str = "", side: int = 64):
        self.api_key = api_key
        self.side = side
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None

    def reply(self, *replies: Reply) -> ImagesServer:
        with self._lock:
            self._queue.extend(replies)
        return self

    def answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.popleft()
        references = "|".join(hashlib.sha256(data).hexdigest()[:12] for _, _, data in request.files)
        key = f"{request.fields.get('prompt')}|{request.fields.get('seed')}|{references}"
        return Picture(generated_png(key, self.side))

    @property
    def base_url(self) -> str:
        assert self._http is not None, "server not started"
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def start(self) -> ImagesServer:
        handler = type("Handler", (_Handler,), {"scripted": self})
        self._http = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> ImagesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    scripted: ImagesServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        if self.path not in ("/v1/images/generations", "/v1/images/edits"):
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if self.scripted.api_key and headers.get("authorization") != f"Bearer {self.scripted.api_key}":
            self._send(401, {"error": {"message": "invalid api key"}})
            return
        request = RecordedRequest(path=self.path, headers=headers)
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            request.fields, request.files = _parse_multipart(content_type, raw)
        else:
            request.fields = json.loads(raw or b"{}")
        reply = self.scripted.answer(request)
        if isinstance(reply, Status):
            extra = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            self._send(reply.code, {"error": {"message": reply.message, "type": "scripted"}}, extra)
        elif isinstance(reply, Body):
            self._send(200, reply.body)
        else:
            encoded = base64.b64encode(reply.data).decode("ascii")
            self._send(200, {"created": 1_700_000_000, "data": [{"b64_json": encoded}]})
