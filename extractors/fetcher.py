"""SafeFetcher: GET a model-chosen URL without letting it reach private services or exhaust the process.

Every hop (the first URL and each redirect target) passes `url_guard.check_url`; the TCP connection is
then made to exactly the address the guard checked: a network backend under httpx looks the host up in
a per-request pin table instead of resolving it again, so DNS rebinding between check and connect is
impossible and an unchecked host fails closed (`unpinned_host`). TLS still verifies the certificate
against the URL's host name (SNI = host name), and pooled connections are keyed by host name.

Limits: redirect count, raw and decompressed byte caps (streamed; a Content-Length above the cap is
refused before reading), a total-time deadline over all hops (against servers that dribble bytes),
explicit httpx time-outs, a per-host concurrency cap, a content-type allowlist, and a sniff that refuses
binary bodies served as text. Expected failures raise `UnsafeURLError` or `FetchError` (`retryable` for
429, 408, 5xx, time-outs and network errors).
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from extractors.html_extract import BINARY_MAGIC
from extractors.url_guard import GuardVerdict, Resolver, check_url
from schemas.config import FetchConfig
from schemas.errors import FetchError, UnsafeURLError
from schemas.protocols import FetchResult

DEFAULT_USER_AGENT = "groundgen/0.1 (dataset builder; +https://github.com/groundgen)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUSES = frozenset({408, 425, 429})
TEXT_TYPES = ("text/", "application/xhtml", "application/xml", "application/json", "application/ld+json")

try:  # brotli is optional: advertise it only when it can be decoded
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

# (host, port) -> [(ip, port), ...] the guard checked for the current hop of the current task
_PINS: contextvars.ContextVar[dict[tuple[str, int], list[tuple[str, int]]] | None] = contextvars.ContextVar(
    "groundgen_fetch_pins", default=None
)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the pinned, guard-checked addresses of a host; never resolves names itself."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        targets = (_PINS.get() or {}).get((host.lower(), port))
        if not targets:
            raise UnsafeURLError(f"unpinned_host: {host}:{port} was not checked by the URL guard")
        error: Exception | None = None
        for address, target_port in targets:
            try:
                return await self._inner.connect_tcp(
                    address,
                    target_port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> Any:
        raise UnsafeURLError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False, retries=0)
        ssl_context = httpx.create_ssl_context(trust_env=False)
        # httpx builds its pool without a network-backend hook; rebuild it with ours (same settings)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(),
        )


class _Decoder:
    """Incremental Content-Encoding decoder with a bound on the output (gzip bombs stop at the cap)."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encodings = [e.strip().lower() for e in encoding.split(",") if e.strip() not in ("", "identity")]
        if len(self.encodings) > 1:
            raise FetchError(f"stacked content encodings are not supported: {encoding!r}")
        self.kind = self.encodings[0] if self.encodings else "identity"
        if self.kind in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif self.kind == "deflate":
            self._zlib = zlib.decompressobj()
            self._raw_deflate_tried = False
        elif self.kind == "br" and brotli is not None:
            self._brotli = brotli.Decompressor()
        elif self.kind != "identity":
            raise FetchError(f"unsupported content encoding {encoding!r}")
        self.limit = limit
        self.total = 0

    def _count(self, piece: bytes) -> bytes:
        self.total += len(piece)
        if self.total > self.limit:
            raise FetchError(f"decompressed body exceeds {self.limit} bytes (compression bomb?)")
        return piece

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self.kind == "identity":
            yield self._count(chunk)
        elif self.kind == "br":
            for start in range(0, len(chunk), 256):  # small slices keep each output burst small
                yield self._count(self._brotli.process(chunk[start : start + 256]))
        else:
            yield from self._feed_zlib(chunk)

    def _feed_zlib(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._zlib.decompress(data, self.limit - self.total + 1)
            except zlib.error as error:
                if self.kind == "deflate" and not self._raw_deflate_tried and self.total == 0:
                    self._raw_deflate_tried = True  # some servers send raw deflate without the zlib header
                    self._zlib = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
                    continue
                raise FetchError(f"corrupt {self.kind} body: {error}") from error
            yield self._count(out)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof and self._zlib.unused_data and self.kind != "deflate":
                data = self._zlib.unused_data  # a further gzip member
                self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


def _codec(name: str) -> str | None:
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except (LookupError, ValueError):
        return None


def _decodes(body: bytes, codec: str) -> bool:
    try:
        body.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def detect_charset(body: bytes, declared: str = "") -> str:
    """The codec that decodes `body`: BOM, then the declared charset, then a <meta> charset, then
    UTF-8, then cp1252; latin-1 (which decodes any bytes) last. Declared names that are unknown or that
    fail to decode the body are skipped, so a wrong header does not garble the text."""
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    candidates = [declared] if declared else []
    meta = _META_CHARSET.search(body[:4096])
    if meta:
        candidates.append(meta.group(1).decode("ascii", "replace"))
    for name in [*candidates, "utf-8", "cp1252"]:
        codec = _codec(name)
        if codec in ("ascii", "iso8859-1", "latin-1"):
            codec = "cp1252"  # as browsers do (WHATWG Encoding): these labels mean windows-1252
        if codec and _decodes(body, codec):
            return codec
    return "latin-1"


def decode_text(result: FetchResult) -> str:
    """A fetched body as text, with the charset the fetcher detected."""
    return result.body.decode(result.charset or "utf-8", errors="replace")


def looks_binary(body: bytes) -> bool:
    head = body[:1024]
    return head.startswith(BINARY_MAGIC) or b"\x00" in head


def _is_text_type(content_type: str) -> bool:
    return content_type.startswith(TEXT_TYPES) or content_type.endswith(("+xml", "+json"))


class SafeFetcher:
    """The `Fetcher` protocol over httpx. Use one per event loop; `await aclose()` (or `async with`)."""

    def __init__(
        self,
        config: FetchConfig | None = None,
        *,
        resolver: Resolver | None = None,
        connect_to: Mapping[str, str] | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_decompressed_bytes: int | None = None,
    ) -> None:
        self.config = config or FetchConfig()
        self.resolver = resolver
        self.connect_to = {k.lower(): v for k, v in (connect_to or {}).items()}
        self.user_agent = user_agent
        self.max_decompressed_bytes = max_decompressed_bytes or self.config.max_bytes
        self._client: httpx.AsyncClient | None = None
        self._host_slots: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> SafeFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = self.config.timeout_s
            # keep-alive for every connection the pool may hold: 20 made a batch fetching more than
            # that at once from one host reconnect (and redo TLS) for most fetches
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=30)
            self._client = httpx.AsyncClient(
                transport=_PinnedTransport(limits),
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                follow_redirects=False,
                trust_env=False,
                headers={
                    "User-Agent": self.user_agent,
                    "Accept-Encoding": "gzip, deflate" + (", br" if brotli is not None else ""),
                },
            )
        return self._client

    async def check(self, url: str) -> GuardVerdict:
        """The guard's verdict for `url` under this fetcher's allowlist and overrides (resolves in a thread)."""
        return await asyncio.to_thread(
            check_url, url, resolver=self.resolver, allow=self.config.allow_hosts, connect_to=self.connect_to
        )

    async def fetch(self, url: str, *, accept: tuple[str, ...] = ()) -> FetchResult:
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await self._fetch_following_redirects(url, accept)
        except TimeoutError as error:
            raise FetchError(f"time-out: {url} took over {self.config.timeout_s}s", retryable=True) from error

    async def _fetch_following_redirects(self, url: str, accept: tuple[str, ...]) -> FetchResult:
        current, seen = url, {url}
        for _ in range(self.config.max_redirects + 1):
            verdict = await self.check(current)
            if not verdict.allowed:
                raise UnsafeURLError(f"{verdict.reason}: refused to fetch {current}")
            slot = self._host_slots.setdefault(
                verdict.host, asyncio.Semaphore(self.config.per_host_concurrency)
            )
            async with slot:
                outcome = await self._fetch_one(url, current, verdict, accept)
            if isinstance(outcome, FetchResult):
                return outcome
            if outcome in seen:
                raise FetchError(f"redirect loop: {current} -> {outcome}")
            seen.add(outcome)
            current = outcome
        raise FetchError(f"too many redirects (over {self.config.max_redirects}) from {url}")

    async def _fetch_one(
        self, url: str, current: str, verdict: GuardVerdict, accept: tuple[str, ...]
    ) -> FetchResult | str:
        """One hop: the final result, or the absolute URL of the redirect target."""
        pins = {(verdict.host, verdict.port): [(str(a), verdict.connect_port) for a in verdict.addresses]}
        token = _PINS.set(pins)
        try:
            ranges = [a + "*" if a.endswith("/") else a for a in accept]  # "image/" -> "image/*"
            headers = {"Accept": ", ".join(ranges) + ", */*;q=0.1" if accept else "*/*"}
            try:
                request = self._http().build_request("GET", current, headers=headers)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
                raise UnsafeURLError(f"malformed_url: {current}: {error}") from error
            response = await self._http().send(request, stream=True)
            try:
                return await self._handle(url, current, response, accept)
            finally:
                await response.aclose()
        except httpx.TimeoutException as error:
            raise FetchError(f"time-out fetching {current}: {error!r}", retryable=True) from error
        except httpx.TransportError as error:
            raise FetchError(f"network error fetching {current}: {error!r}", retryable=True) from error
        finally:
            _PINS.reset(token)

    async def _handle(
        self, url: str, current: str, response: httpx.Response, accept: tuple[str, ...]
    ) -> FetchResult | str:
        status = response.status_code
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location", "").strip()
            if not location:
                raise FetchError(f"redirect {status} without Location from {current}", status=status)
            return urljoin(current, location)
        if status >= 400:
            retry_after = response.headers.get("retry-after", "")
            raise FetchError(
                f"HTTP {status} from {current}" + (f" (Retry-After: {retry_after})" if retry_after else ""),
                status=status,
                retryable=status in RETRYABLE_STATUSES or status >= 500,
            )
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if accept and not content_type.startswith(tuple(a.lower() for a in accept)):
            raise FetchError(
                f"content type {content_type or '(none)'!r} not accepted from {current}", status=status
            )
        declared_length = response.headers.get("content-length", "")
        if declared_length.isdigit() and int(declared_length) > self.config.max_bytes:
            raise FetchError(
                f"body of {declared_length} bytes exceeds {self.config.max_bytes} bytes", status=status
            )
        body = await self._read_body(response, current)
        charset = ""
        if _is_text_type(content_type) or not content_type:
            if looks_binary(body) and content_type:
                raise FetchError(f"binary body served as {content_type} from {current}", status=status)
            charset = detect_charset(body, response.charset_encoding or "")
        return FetchResult(
            url=url,
            final_url=current,
            status=status,
            content_type=content_type,
            charset=charset,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=body,
        )

    async def _read_body(self, response: httpx.Response, current: str) -> bytes:
        decoder = _Decoder(response.headers.get("content-encoding", ""), self.max_decompressed_bytes)
        parts: list[bytes] = []
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > self.config.max_bytes:
                raise FetchError(f"body from {current} exceeds {self.config.max_bytes} bytes")
            parts.extend(decoder.feed(chunk))
        return b"".join(parts)
