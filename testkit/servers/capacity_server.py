"""An OpenAI-compatible chat server with a hidden capacity, for adaptive-concurrency tests and benches.

At most `capacity` requests are served at once; one more is refused at once with HTTP 429 (no
`Retry-After`, as many gateways do). A served request takes `base * latency_factor(n)` seconds, where
`n` is the number in flight when it arrived: the base latency up to half the capacity, rising
linearly to 1.5x the base at full capacity, the way a batching model server slows as its batch fills
while its throughput still grows (so the best concurrency is the capacity itself).
`best_throughput()` is the most successful requests per second any concurrency can get: the ideal
that a client's goodput is measured against.

    server = CapacityServer(capacity=16, base_latency_s=0.1).start()   # server.base_url, server.stats()
    python -m testkit.servers.capacity_server --capacity 16 --base-latency 0.1   # prints the port

`GET /stats` answers the counts as JSON (served, rejected, peak in flight, peak attempted).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def latency_factor(in_flight: int, capacity: int) -> float:
    """How much slower than the base a request is served with `in_flight` requests (itself included)."""
    return 1.0 + max(0.0, in_flight / capacity - 0.5)


def best_throughput(capacity: int, base_latency_s: float) -> float:
    """The ideal: successful requests per second at the best fixed concurrency (at most `capacity`)."""
    return max(n / (base_latency_s * latency_factor(n, capacity)) for n in range(1, capacity + 1))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


class CapacityServer:
    def __init__(self, capacity: int, base_latency_s: float, *, port: int = 0):
        self.capacity = capacity
        self.base_latency_s = base_latency_s
        self._lock = threading.Lock()
        self.in_flight = 0
        self.attempting = 0
        self.served = 0
        self.rejected = 0
        self.peak_in_flight = 0
        self.peak_attempting = 0
        self._http = _Server(("127.0.0.1", port), type("Handler", (_Handler,), {"server_state": self}))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> CapacityServer:
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> CapacityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "served": self.served,
                "rejected": self.rejected,
                "peak_in_flight": self.peak_in_flight,
                "peak_attempting": self.peak_attempting,
            }

    def reset_stats(self) -> None:
        with self._lock:
            self.served = self.rejected = self.peak_in_flight = self.peak_attempting = 0

    def admit(self) -> float | None:
        """A place and its latency, or None (refused: full)."""
        with self._lock:
            self.attempting += 1
            self.peak_attempting = max(self.peak_attempting, self.attempting)
            if self.in_flight >= self.capacity:
                self.rejected += 1
                self.attempting -= 1
                return None
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return self.base_latency_s * latency_factor(self.in_flight, self.capacity)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.attempting -= 1
            self.served += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall on kept-alive connections
    server_state: CapacityServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, self.server_state.stats())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        state = self.server_state
        latency = state.admit()
        if latency is None:
            self._send(429, {"error": {"message": "over capacity", "type": "rate_limit"}})
            return
        try:
            time.sleep(latency)
        finally:
            state.leave()
        self._send(
            200,
            {
                "id": "chatcmpl-capacity",
                "object": "chat.completion",
                "model": "capacity",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            },
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible server with a hidden capacity")
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--base-latency", type=float, default=0.1)
    args = parser.parse_args(argv)
    server = CapacityServer(args.capacity, args.base_latency).start()
    print(server.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
