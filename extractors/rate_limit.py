"""Politeness and resilience for provider APIs: a token-bucket rate limiter and JSON calls with retries.

`request_json` retries only transient failures (408, 425, 429, 500, 502, 503, 504, time-outs,
connection errors) with full-jitter exponential backoff, honours `Retry-After` (seconds or HTTP date,
capped), caps the response size, and raises `FetchError` with a clear message otherwise. Secrets passed
in `secrets` are redacted from every message it produces. The retry arithmetic is the shared
`schemas/retry.py` `RetryPolicy` (docs/ARCHITECTURE.md, "Failures"); `search_retry_policy` builds the
providers' instance of it from their `max_retries` and backoff settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

from schemas.errors import FetchError
from schemas.retry import RetryPolicy, TransientFailure, retry_after_seconds, run_with_retries_async

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class TokenBucket:
    """A reservation token bucket, `per_minute` units a minute on average (0 = unlimited).

    It holds `burst` units (or `burst_s` seconds' worth). `reserve(n)` charges n now and says how long
    to wait first; the level may go negative, so callers queue in order and a request bigger than
    the bucket still passes after its wait. `refund(n)` gives back an over-estimate. The lock is a
    thread lock: batches in other threads and event loops of one process share the same budget.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst) if burst is not None else max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def reserve(self, amount: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            self._refill()
            need = min(amount, self.capacity)
            wait = 0.0 if self.level >= need else (need - self.level) / self.rate
            self.level -= amount
            return wait

    def refund(self, amount: float) -> None:
        with self._lock:
            self._refill()
            self.level = min(self.capacity, self.level + amount)

    async def acquire(self, amount: float = 1.0) -> None:
        wait = self.reserve(amount)
        if wait > 0:
            await self.sleep(wait)


def search_retry_policy(max_retries: int = 4, *, base_s: float = 0.5, cap_s: float = 30.0) -> RetryPolicy:
    """The search providers' policy: full jitter, Retry-After honoured up to the backoff cap."""
    return RetryPolicy(
        attempts=max_retries + 1,
        base_s=base_s,
        cap_s=cap_s,
        retry_after_cap_s=cap_s,
        statuses=TRANSIENT_STATUSES,
    )


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    service: str,
    bucket: TokenBucket | None = None,
    max_retries: int = 4,
    backoff_base_s: float = 0.5,
    backoff_cap_s: float = 30.0,
    max_response_bytes: int = 5_000_000,
    timeout_s: float = 20.0,
    sleep: Sleep = asyncio.sleep,
    secrets: Iterable[str] = (),
    **request: Any,
) -> Any:
    """Send a request and return its parsed JSON body, retrying transient failures."""
    secrets = tuple(secrets)
    policy = search_retry_policy(max_retries, base_s=backoff_base_s, cap_s=backoff_cap_s)

    async def attempt() -> Any:
        if bucket is not None:
            await bucket.acquire()
        try:
            status, headers, body = await _send(client, method, url, timeout_s, max_response_bytes, request)
        except httpx.TransportError as error:  # time-outs, refused/reset connections
            raise TransientFailure(error.__class__.__name__) from None
        if status < 300:
            try:
                return json.loads(body)
            except ValueError as error:
                snippet = body[:120].decode("utf-8", "replace")
                message = f"{service}: malformed JSON in the response ({error}); body starts {snippet!r}"
                raise FetchError(redact(message, secrets), status=status) from None
        if not policy.retries_status(status):
            raise FetchError(f"{service}: HTTP {status}", status=status, retryable=False)
        retry_after = retry_after_seconds(headers.get("retry-after"))
        raise TransientFailure(f"HTTP {status}", status=status, retry_after=retry_after)

    def log(error: BaseException, attempts: int, delay: float) -> None:
        logger.info("%s: %s, retrying", service, error)

    try:
        return await run_with_retries_async(attempt, policy, sleep=sleep, on_retry=log)
    except TransientFailure as failure:
        tries = f"after {policy.attempts} attempts"
        if failure.status is None:
            message = f"{service}: {failure} {tries}"
            raise FetchError(redact(message, secrets), retryable=True) from None
        raise FetchError(
            f"{service}: HTTP {failure.status} {tries}", status=failure.status, retryable=True
        ) from None


async def _send(
    client: httpx.AsyncClient, method: str, url: str, timeout_s: float, cap: int, request: dict[str, Any]
) -> tuple[int, httpx.Headers, bytes]:
    async with client.stream(method, url, timeout=timeout_s, **request) as response:
        parts, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise FetchError(f"response from {url} exceeds {cap} bytes")
            parts.append(chunk)
        return response.status_code, response.headers, b"".join(parts)


class JsonAPIClient:
    """What the search providers' clients share: retry and rate settings, and one httpx client opened
    on first use (one per batch's event loop; `aclose()` when the batch ends)."""

    def __init__(
        self,
        base_url: str,
        *,
        requests_per_minute: float,
        timeout_s: float,
        max_retries: int,
        backoff_base_s: float,
        backoff_cap_s: float,
        sleep: Sleep,
        secrets: Iterable[str] = (),
        bucket: TokenBucket | None = None,
    ) -> None:
        """`bucket`: a rate budget shared with other clients of the provider (e.g. every batch of a
        worker process); None = a budget of this client's own at `requests_per_minute`."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.sleep = sleep
        self.bucket = bucket if bucket is not None else TokenBucket(requests_per_minute, sleep=sleep)
        self._secrets = tuple(secrets)
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request_json(self, method: str, path: str, *, service: str, **request: Any) -> Any:
        if self._client is None:
            # every connection kept alive: with httpx's default of 20, a batch running more searches
            # than that at once opened (and on a real API, TLS-handshook) a new connection for most
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
            self._client = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False, limits=limits)
        return await request_json(
            self._client,
            method,
            f"{self.base_url}{path}",
            service=service,
            bucket=self.bucket,
            max_retries=self.max_retries,
            backoff_base_s=self.backoff_base_s,
            backoff_cap_s=self.backoff_cap_s,
            timeout_s=self.timeout_s,
            sleep=self.sleep,
            secrets=self._secrets,
            **request,
        )
