"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

`POST /v1/chat/completions` (non-streaming) answers from a script: a queue of replies
(`server.reply(...)`) or a function of the recorded request (`server.respond_with(fn)`); the queue
wins while it is not empty. A reply is one of

- a `str`: a normal completion with that content (usage tokens filled in);
- `Completion(...)`: content, native tool calls, finish reason, explicit token counts;
- `Status(code, retry_after=...)`: an OpenAI-style error body with that HTTP status;
- `Reset()`: the socket is closed with a TCP reset, no response at all;
- `Delay(seconds, then)`: sleep (e.g. longer than the client's time-out), then answer `then`;
- `RawBody(bytes, ...)`: any body verbatim (truncated JSON, an HTML/prose page, ...);
- a `dict`: sent verbatim as the JSON body.

Every request is recorded (`server.requests`: path, headers, parsed body) so tests can assert on
what the client sent, e.g. that the `Authorization` header arrived. Like a real server it can check
the bearer key (`api_key=`: anything else gets a 401) and serve a fixed set of models (`models=`:
`GET /models` lists them, a chat request for another model gets a 404 "model_not_found"; without
`models`, `GET /models` is a 404 as on servers that lack it). `go_down()` makes it refuse
connections (the listening socket closes, kept-alive connections are reset) until `come_back()`
listens again on the same port: an outage. `latency_s` delays every
answer (fixed-latency mode for benchmarks). Runs a `ThreadingHTTPServer` in a daemon thread on an
ephemeral port; use it as a context manager.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Completion:
    content: str | None = ""
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI format: {"id", "type", "function": {...}}
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Status:
    code: int
    retry_after: str | None = None
    message: str = "scripted error"


@dataclass
class Reset:
    pass


@dataclass
class Delay:
    seconds: float
    then: Any = "ok"


@dataclass
class RawBody:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    chunked: bool = False  # send without Content-Length (Transfer-Encoding: chunked)


Reply = str | Completion | Status | Reset | Delay | RawBody | dict


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    def last_user_text(self) -> str:
        """The text of the last user message (string content or its text parts)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message_text(message)
        return ""


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "call_1") -> dict[str, Any]:
    """A native OpenAI tool call for `Completion(tool_calls=[...])`."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def completion_body(reply: Completion, request: RecordedRequest, serial: int) -> dict[str, Any]:
    content = reply.content
    prompt_tokens = reply.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = max(1, len(json.dumps(request.messages)) // 4)
    completion_tokens = reply.completion_tokens
    if completion_tokens is None:
        completion_tokens = max(1, len(content or "") // 4)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": f"chatcmpl-{serial}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.body.get("model", "scripted"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # must be set before listen(): benchmarks open many connections at once


class ScriptedOpenAIServer:
    def __init__(
        self,
        respond: Callable[[RecordedRequest], Reply] | None = None,
        *,
        latency_s: float = 0.0,
        record: bool = True,
        models: list[str] | None = None,
        api_key: str | None = None,
        port: int = 0,
    ):
        self.latency_s = latency_s
        self.record = record
        self.models = models
        self.api_key = api_key
        self.down = False
        self._port: int | None = port or None  # 0: an ephemeral port
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []  # script problems (exhausted queue, handler exceptions)
        self._queue: deque[Reply] = deque()
        self._respond = respond
        self._lock = threading.Lock()
        self._serial = 0
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- script -------------------------------------------------------------------------------
    def reply(self, *replies: Reply) -> ScriptedOpenAIServer:
        with self._lock:
            self._queue.extend(replies)
        return self

    def respond_with(self, respond: Callable[[RecordedRequest], Reply]) -> ScriptedOpenAIServer:
        self._respond = respond
        return self

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._serial += 1
            if self._queue:
                return self._queue.popleft()
        if self._respond is not None:
            return self._respond(request)
        raise LookupError("script exhausted: no queued reply and no respond function")

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._port is not None, "server not started"
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        handler = type("Handler", (_Handler,), {"scripted": self})
        self._http = _Server(("127.0.0.1", self._port or 0), handler)
        self._port = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def go_down(self) -> None:
        """An outage: new connections are refused, requests on open connections are reset. Safe to
        call from a reply function (it runs in a request thread)."""
        self.down = True
        http, self._http = self._http, None
        if http is not None:
            threading.Thread(target=lambda: (http.shutdown(), http.server_close()), daemon=True).start()

    def come_back(self) -> None:
        """Listen again on the same port; wait until a connection is accepted."""
        deadline = time.monotonic() + 5
        while self._http is not None or self._listening():
            if time.monotonic() > deadline:
                raise RuntimeError("the old listener did not close")
            time.sleep(0.02)
        self.down = False
        self.start()

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]


class _Handler(BaseHTTPRequestHandler):
    scripted: ScriptedOpenAIServer
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall on kept-alive connections
    protocol_version = "HTTP/1.1"
    _reset = False

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _refused(self) -> bool:
        """Outage (reset) or a wrong bearer key (401): True when the request was answered so."""
        server = self.scripted
        if server.down:
            self._answer(Reset(), RecordedRequest("", self.path, {}))
            return True
        if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
            body = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
            self._send_json(401, body)
            return True
        return False

    def do_GET(self) -> None:
        server = self.scripted
        if server.record and not server.down:
            request = RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
            with server._lock:
                server.requests.append(request)
        if self._refused():
            return
        models = self.scripted.models
        if self.path.rstrip("/").endswith("/models") and models is not None:
            data = [{"id": model, "object": "model"} for model in models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        request = RecordedRequest(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        server = self.scripted
        if server.down:  # an outage: nothing reaches the service, nothing is recorded
            self._refused()
            return
        if server.record:
            with server._lock:
                server.requests.append(request)
        if self._refused():
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if server.models is not None and body.get("model") not in server.models:
            message = f"The model `{body.get('model')}` does not exist"
            self._send_json(404, {"error": {"message": message, "code": "model_not_found"}})
            return
        try:
            reply = server._next_reply(request)
        except Exception as error:  # a broken script must show up in the test, not hang it
            server.errors.append(f"{type(error).__name__}: {error}")
            self._send_json(500, {"error": {"message": f"scripted server: {error}"}})
            return
        if server.latency_s:
            time.sleep(server.latency_s)
        self._answer(reply, request)

    def _answer(self, reply: Reply, request: RecordedRequest) -> None:
        if isinstance(reply, Delay):
            time.sleep(reply.seconds)
            self._answer(reply.then, request)
        elif isinstance(reply, Reset):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            self._reset = True
        elif isinstance(reply, Status):
            headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            body = {"error": {"message": reply.message, "type": "scripted", "code": reply.code}}
            self._send_json(reply.code, body, headers)
        elif isinstance(reply, RawBody):
            if reply.chunked:
                self._send_chunked(reply.status, reply.body, reply.content_type)
            else:
                self._send_bytes(reply.status, reply.body, reply.content_type)
        elif isinstance(reply, dict):
            self._send_json(200, reply)
        else:
            completion = reply if isinstance(reply, Completion) else Completion(content=str(reply))
            self._send_json(200, completion_body(completion, request, self.scripted._serial))

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode("utf-8"), "application/json", headers)

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (time-out) and closed the connection
            self.close_connection = True

    def _send_chunked(self, status: int, data: bytes, content_type: str, chunk: int = 16_384) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(data), chunk):
                piece = data[start : start + chunk]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def finish(self) -> None:
        if self._reset:
            return
        try:
            super().finish()
        except OSError:
            pass
