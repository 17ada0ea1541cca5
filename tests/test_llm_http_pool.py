"""The socket-caching connection pool under the LLM client: readability answers and real requests."""

from __future__ import annotations

import asyncio
import socket

from synthesis.http_pool import SocketCachingBackend, httpx, pooled_transport, socket_readable
from testkit.servers.openai_server import ScriptedOpenAIServer


def test_socket_readable_tracks_data_and_the_peer_closing():
    left, right = socket.socketpair()
    try:
        assert socket_readable(left) is False
        right.send(b"x")
        assert socket_readable(left) is True
        left.recv(1)
        assert socket_readable(left) is False
        right.close()
        assert socket_readable(left) is True  # the close is readable: recv() would return b""
    finally:
        left.close()
    assert socket_readable(left) is True  # a closed socket (fileno -1) counts as readable
    assert socket_readable(None) is True


def test_pooled_transport_reuses_connections_and_answers_is_readable():
    async def run(base_url: str) -> tuple[list[int], int, bool]:
        transport = pooled_transport(httpx.Limits(max_connections=4))
        assert isinstance(transport._pool._network_backend, SocketCachingBackend)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
            statuses = [
                (await client.post(f"{base_url}/chat/completions", json={"messages": []})).status_code
                for _ in range(3)
            ]
            connections = transport._pool.connections
            stream = connections[0]._connection._network_stream
            return statuses, len(connections), stream.get_extra_info("is_readable")

    with ScriptedOpenAIServer(lambda request: "ok") as server:
        statuses, connections, readable = asyncio.run(run(server.base_url))
    assert statuses == [200, 200, 200]
    assert connections == 1  # sequential requests share one kept-alive connection
    assert readable is False  # idle and open: nothing to read
