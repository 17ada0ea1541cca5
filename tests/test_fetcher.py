"""SafeFetcher against a real misbehaving server on 127.0.0.1 (testkit/servers/hostile.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from extractors.fetcher import SafeFetcher, _PinnedBackend, decode_text, detect_charset
from schemas.config import FetchConfig
from schemas.errors import FetchError, UnsafeURLError
from schemas.protocols import FetchResult
from testkit.servers.hostile import PAGE, HostileServer, serve_hostile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    server, _ = serve_hostile()
    yield server
    server.shutdown()
    server.server_close()


def fetch(
    server: HostileServer, path_or_url: str, accept: tuple[str, ...] = (), **config: object
) -> FetchResult:
    port = server.server_address[1]
    settings = {"allow_hosts": [f"127.0.0.1:{port}"], "timeout_s": 5, "max_bytes": 1_000_000, **config}
    url = path_or_url if "://" in path_or_url else server.base_url + path_or_url

    async def run() -> FetchResult:
        async with SafeFetcher(FetchConfig(**settings)) as fetcher:
            return await fetcher.fetch(url, accept=accept)

    return asyncio.run(run())


def test_plain_page(hostile: HostileServer) -> None:
    result = fetch(hostile, "/ok", accept=("text/html",))
    assert (result.status, result.content_type, result.charset) == (200, "text/html", "utf-8")
    assert decode_text(result) == PAGE
    assert result.final_url == result.url == hostile.base_url + "/ok"


def test_user_agent_and_encodings_are_sent(hostile: HostileServer) -> None:
    headers = json.loads(fetch(hostile, "/headers").body)
    assert headers["User-Agent"].startswith("groundgen/")
    assert headers["Accept-Encoding"].startswith("gzip, deflate")


@pytest.mark.parametrize("path", ["/gzip", "/deflate"])
def test_compressed_pages_are_decoded(hostile: HostileServer, path: str) -> None:
    assert decode_text(fetch(hostile, path)) == PAGE


def test_redirect_chain_within_limit(hostile: HostileServer) -> None:
    result = fetch(hostile, "/chain/3", max_redirects=3)
    assert result.final_url == hostile.base_url + "/ok"
    assert result.url == hostile.base_url + "/chain/3"


def test_redirect_chain_over_limit(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match=r"too many redirects \(over 2\)") as caught:
        fetch(hostile, "/chain/3", max_redirects=2)
    assert caught.value.retryable is False


def test_redirect_loop(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match="redirect loop"):
        fetch(hostile, "/loop/a", max_redirects=10)


def test_redirect_without_location(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match="without Location"):
        fetch(hostile, "/no-location")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata_address"),
        ("http://[fd00:ec2::254]/", "metadata_address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata_host"),
        ("http://10.0.0.1/", "private_address"),
        ("http://127.0.0.2:{port}/ok", "loopback_address"),  # same server, address not allowlisted
        ("http://2130706433:1/ok", "loopback_address"),  # 127.0.0.1, port not allowlisted
        ("http://[::1]:{port}/ok", "loopback_address"),
        ("http://[::ffff:127.0.0.1]:{port}/ok", "loopback_address"),
        ("file:///etc/passwd", "bad_scheme"),
    ],
)
def test_redirect_to_refused_address_is_stopped_at_the_guard(
    hostile: HostileServer, target: str, reason: str
) -> None:
    target = target.format(port=hostile.server_address[1])
    before = len(hostile.requests)
    with pytest.raises(UnsafeURLError, match=f"^{reason}: refused to fetch"):
        fetch(hostile, "/redirect?to=" + quote(target, safe=""))
    assert len(hostile.requests) == before + 1  # only the redirecting request reached a server


def test_first_url_is_guarded_too(hostile: HostileServer) -> None:
    with pytest.raises(UnsafeURLError, match="^loopback_address"):
        fetch(hostile, hostile.base_url + "/ok", allow_hosts=[])


def test_huge_body_is_cut_at_the_cap(hostile: HostileServer) -> None:
    # /huge streams until the client stops reading: only the cap ends this fetch
    with pytest.raises(FetchError, match="exceeds 1000000 bytes"):
        fetch(hostile, "/huge")


def test_declared_huge_body_is_refused_before_reading(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match="body of 2147483648 bytes exceeds 1000000 bytes"):
        fetch(hostile, "/huge-declared")


def test_gzip_bomb_stops_at_decompressed_cap(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match="decompressed body exceeds 1000000 bytes"):
        fetch(hostile, "/gzip-bomb")


def test_slow_dribbling_server_hits_the_total_deadline(hostile: HostileServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="time-out") as caught:
        fetch(hostile, "/slow", timeout_s=1)
    assert caught.value.retryable is True
    # /slow would finish its 200 bytes in 20 s with no read ever slower than 0.1 s: only the total
    # deadline raises, and not before it is due (no upper bound in seconds: a loaded machine is slow)
    assert time.monotonic() - started > 0.9


@pytest.mark.parametrize(
    ("path", "charset"),
    [
        ("/charset/wrong", "cp1252"),  # header says utf-8, bytes say otherwise
        ("/charset/meta", "cp1252"),
        ("/charset/none", "utf-8"),
        ("/charset/bogus", "utf-8"),
    ],
)
def test_charset_detection(hostile: HostileServer, path: str, charset: str) -> None:
    result = fetch(hostile, path)
    assert result.charset == charset
    assert "Café crème — naïve" in decode_text(result)


def test_binary_served_as_html_is_refused(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match="binary body served as text/html"):
        fetch(hostile, "/binary-as-html")


def test_content_type_allowlist(hostile: HostileServer) -> None:
    with pytest.raises(FetchError, match="content type 'application/json' not accepted"):
        fetch(hostile, "/headers", accept=("text/html",))


@pytest.mark.parametrize(
    ("code", "retryable"), [(429, True), (503, True), (500, True), (404, False), (403, False)]
)
def test_error_statuses(hostile: HostileServer, code: int, retryable: bool) -> None:
    with pytest.raises(FetchError, match=f"HTTP {code}") as caught:
        fetch(hostile, f"/status/{code}")
    assert (caught.value.status, caught.value.retryable) == (code, retryable)


def test_connect_to_maps_a_corpus_host_to_the_loopback_server(hostile: HostileServer) -> None:
    port = hostile.server_address[1]

    async def run(allow: list[str]) -> FetchResult:
        config = FetchConfig(allow_hosts=allow, timeout_s=5)
        connect_to = {"corpus.groundgen.invalid:80": f"127.0.0.1:{port}"}
        async with SafeFetcher(config, connect_to=connect_to) as fetcher:
            return await fetcher.fetch("http://corpus.groundgen.invalid/headers")

    headers = json.loads(asyncio.run(run([f"127.0.0.1:{port}"])).body)
    assert headers["Host"] == "corpus.groundgen.invalid"  # the Host header keeps the name
    with pytest.raises(UnsafeURLError, match="^loopback_address"):
        asyncio.run(run([]))  # the override target is still guarded


def test_connection_goes_to_the_checked_address_not_a_fresh_lookup(hostile: HostileServer) -> None:
    """A resolver that answers differently the second time (DNS rebinding) cannot redirect the socket."""
    port = hostile.server_address[1]
    answers = iter([["127.0.0.1"], ["10.9.9.9"]] + [["10.9.9.9"]] * 10)

    async def run() -> FetchResult:
        config = FetchConfig(allow_hosts=[f"127.0.0.1:{port}"], timeout_s=5)
        async with SafeFetcher(config, resolver=lambda host, p: next(answers)) as fetcher:
            return await fetcher.fetch(f"http://rebind.example:{port}/ok")

    assert asyncio.run(run()).status == 200  # connected to the checked 127.0.0.1, never asked again


def test_many_concurrent_fetches_share_the_client(hostile: HostileServer) -> None:
    port = hostile.server_address[1]

    async def run() -> list[FetchResult]:
        config = FetchConfig(allow_hosts=[f"127.0.0.1:{port}"], timeout_s=5, per_host_concurrency=2)
        async with SafeFetcher(config) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(hostile.base_url + "/ok") for _ in range(12)))

    assert [r.status for r in asyncio.run(run())] == [200] * 12


def test_backend_refuses_hosts_the_guard_did_not_pin() -> None:
    with pytest.raises(UnsafeURLError, match="^unpinned_host"):
        asyncio.run(_PinnedBackend().connect_tcp("example.com", 80))


@pytest.mark.parametrize(
    ("body", "declared", "expected"),
    [
        ("é".encode(), "", "utf-8"),
        ("é".encode("cp1252"), "utf-8", "cp1252"),
        ("é“".encode("cp1252"), "iso-8859-1", "cp1252"),  # browsers read latin-1 labels as windows-1252
        (b"\xef\xbb\xbfabc", "", "utf-8-sig"),
        (b'<meta charset="shift_jis">' + "日本".encode("shift_jis"), "", "shift_jis"),
        (b"\x81\x8d", "", "latin-1"),  # undefined in cp1252
    ],
)
def test_detect_charset(body: bytes, declared: str, expected: str) -> None:
    assert detect_charset(body, declared) == expected
