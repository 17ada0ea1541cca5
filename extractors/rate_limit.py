"""Politeness and resilience for provider APIs: a token-bucket rate limiter and JSON calls with retries.

`request_json` retries only transient failures (429, 408, 5xx, time-outs, connection errors) with
full-jitter exponential backoff, honours `Retry-After` (seconds or HTTP date, capped), caps the
response size, and raises `FetchError` with a clear message otherwise. Secrets passed in `secrets` are
redacted from every message it produces.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

from schemas.errors import FetchError

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class TokenBucket:
    """Allow `rate_per_minute` acquisitions per minute on average, bursts up to `burst`. 0 = unlimited."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate_per_second = rate_per_minute / 60.0
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_second)
        self.updated = now

    async def acquire(self) -> None:
        if self.rate_per_second <= 0:
            return
        # A reservation under a thread lock: callers in other threads and event loops (concurrent
        # batches of one worker process) share the same budget; waiters are served in order.
        with self._lock:
            self._refill()
            self.tokens -= 1
            wait = 0.0 if self.tokens >= 0 else -self.tokens / self.rate_per_second
        if wait > 0:
            await self.sleep(wait)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a Retry-After header (delta seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0, min(cap_s, base_s * 2**attempt))


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
    for attempt in range(max_retries + 1):
        if bucket is not None:
            await bucket.acquire()
        delay: float | None = None
        try:
            status, headers, body = await _send(client, method, url, timeout_s, max_response_bytes, request)
        except httpx.TransportError as error:  # time-outs, refused/reset connections
            if attempt == max_retries:
                message = f"{service}: {error.__class__.__name__} after {attempt + 1} attempts"
                raise FetchError(redact(message, secrets), retryable=True) from None
            logger.info("%s: %s, retrying", service, error.__class__.__name__)
        else:
            if status < 300:
                try:
                    return json.loads(body)
                except ValueError as error:
                    snippet = body[:120].decode("utf-8", "replace")
                    message = f"{service}: malformed JSON in the response ({error}); body starts {snippet!r}"
                    raise FetchError(redact(message, secrets), status=status) from None
            if status not in TRANSIENT_STATUSES or attempt == max_retries:
                retryable = status in TRANSIENT_STATUSES
                tries = f" after {attempt + 1} attempts" if retryable else ""
                raise FetchError(f"{service}: HTTP {status}{tries}", status=status, retryable=retryable)
            delay = retry_after_seconds(headers.get("retry-after"))
            logger.info("%s: HTTP %s, retrying", service, status)
        if delay is None:
            delay = backoff_delay(attempt, base_s=backoff_base_s, cap_s=backoff_cap_s)
        await sleep(min(delay, backoff_cap_s))
    raise AssertionError("unreachable")  # pragma: no cover


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
