"""An httpx transport whose connection pool stays cheap at high concurrency.

httpcore's pool scans every pooled connection twice per request (when a request is queued and when a
response is closed) and asks each idle one whether the server closed it (`is_readable`). On the
anyio backend that question rebuilds the stream's typed-attribute mapping to find the raw socket:
about 40 µs a connection, so at 64 connections in flight it was ~55% of the LLM client's CPU in
`bench/agent_throughput.py`. The backend here wraps each stream once, keeps its raw socket and answers
`is_readable` with one `poll(0)`. Everything else is passed through unchanged.

`pooled_transport(limits)` builds the SDK's own transport class (httpx2 with openai >= 3, else httpx)
with this backend; if the installed httpcore has no `_network_backend` hook the stock pool is kept.
"""

from __future__ import annotations

import select
import socket
import sys
from typing import Any

try:  # the HTTP stack the installed openai SDK is built on
    import httpcore2 as httpcore
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the openai version
    import httpcore  # type: ignore[no-redef]
    import httpx  # type: ignore[no-redef]


def socket_readable(sock: socket.socket | None) -> bool:
    """True when a read would not block (data or the peer's close); a gone socket counts as readable."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    if sys.platform == "win32" or not hasattr(select, "poll"):  # pragma: no cover
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _SocketCachingStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: Any):
        self.inner = inner
        self.socket = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        return _SocketCachingStream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return socket_readable(self.socket)
        if info == "socket":
            return self.socket
        return self.inner.get_extra_info(info)


class SocketCachingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default async backend, with streams that answer `is_readable` cheaply."""

    def __init__(self, inner: Any = None):
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> Any:
        stream = await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _SocketCachingStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> Any:
        return _SocketCachingStream(await self.inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pooled_transport(limits: Any, **options: Any) -> Any:
    """`httpx.AsyncHTTPTransport(limits=limits, **options)` with the socket-caching backend."""
    transport = httpx.AsyncHTTPTransport(limits=limits, **options)
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend") and not getattr(pool, "_connections", None):
        pool._network_backend = SocketCachingBackend()
    return transport
