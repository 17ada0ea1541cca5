"""One retry policy for every client that calls a service (docs/ARCHITECTURE.md, "Failures").

`RetryPolicy` says how many attempts a call gets, how long to wait between them (exponential backoff
with jitter, capped), how far a server's `Retry-After` is honoured, and which HTTP statuses are worth
another attempt. The clients decide what one attempt is and what their final errors say; they share
the arithmetic here and the drivers `run_with_retries` (sync) / `run_with_retries_async`:

- search providers (`extractors/rate_limit.py` `request_json`): `max_retries + 1` attempts, full
  jitter from 0.5 s doubling up to 30 s, Retry-After up to 30 s; statuses 408, 425, 429, 500, 502,
  503, 504.
- LLM client (`synthesis/llm_client.py`): `max_retries + 1` attempts, full jitter from 0.5 s up to
  30 s, Retry-After up to 300 s (a longer one gives up); statuses 408, 409, 425, 429, every 5xx.
- HTTP painter (`synthesis/http_painter.py`): `max_retries + 1` attempts, full jitter from 1 s up to
  60 s, Retry-After up to 60 s; statuses 429, every 5xx.
- Hub push (`warehouse/hub.py` `with_retries`): 5 attempts, 1 s doubling without a cap times 1 to 1.5,
  and at least the Retry-After (up to 300 s); statuses 429, 500, 502, 503, 504.

Which exceptions count as transient (connection errors, time-outs, ...) is each client's call; they
raise `TransientFailure` for those. The failure kinds of `schemas/errors.py` (`error_kind`), the
circuit breaker and the adaptive concurrency limit sit around the retries, not in them.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")

SERVER_ERRORS = frozenset(range(500, 600))
TRANSIENT_STATUSES = frozenset({408, 425, 429}) | SERVER_ERRORS
FULL_JITTER = (0.0, 1.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries a call.

    - `attempts`: tries in all, the first included (a client's `max_retries` is `attempts - 1`).
    - backoff before retry n (0-based): `min(cap_s, base_s * 2**n)` times a factor drawn uniformly
      from `jitter` — `(0, 1)` is full jitter; `(1, 1.5)` adds up to half again.
    - `Retry-After`: honoured up to `retry_after_cap_s`; a longer one waits the cap
      (`beyond_cap = "wait_cap"`) or ends the retries (`"give_up"`). With `retry_after_is_floor` the
      wait is the longer of the backoff and the server's wish; otherwise the server's wish replaces
      the backoff.
    - `statuses`: the HTTP statuses worth another attempt (an allowlist; anything else is final).
    """

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: tuple[float, float] = FULL_JITTER
    retry_after_cap_s: float = 30.0
    beyond_cap: Literal["wait_cap", "give_up"] = "wait_cap"
    retry_after_is_floor: bool = False
    statuses: frozenset[int] = TRANSIENT_STATUSES

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, not {self.attempts}")
        if self.base_s < 0 or self.cap_s < 0 or self.retry_after_cap_s < 0:
            raise ValueError("retry delays and caps must not be negative")
        low, high = self.jitter
        if not 0 <= low <= high:
            raise ValueError(f"jitter must be a range (low, high) with 0 <= low <= high, not {self.jitter}")

    def retries_status(self, status: int) -> bool:
        """Whether an answer with this HTTP status is worth another attempt."""
        return status in self.statuses

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered, capped exponential wait after failed attempt `attempt` (0-based)."""
        low, high = self.jitter
        factor = rng.uniform(low, high) if rng is not None else random.uniform(low, high)
        return min(self.cap_s, self.base_s * 2**attempt) * factor

    def gives_up_on(self, retry_after: float | None) -> bool:
        """Whether the server's requested wait ends the retries (`beyond_cap = "give_up"`)."""
        return (
            self.beyond_cap == "give_up" and retry_after is not None and retry_after > self.retry_after_cap_s
        )

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt `attempt` (0-based), given the server's `Retry-After`
        in seconds (None when it sent none)."""
        if retry_after is None:
            return self.backoff(attempt, rng)
        honoured = min(retry_after, self.retry_after_cap_s)
        if self.retry_after_is_floor:
            return max(self.backoff(attempt, rng), honoured)
        return honoured


class TransientFailure(Exception):
    """One attempt failed in a way another attempt may fix (a retried status, a lost connection).

    `retry_after` is the wait the server asked for, in seconds; `status` the HTTP status, if any.
    Clients raise it inside an attempt and turn the last one into their own typed error."""

    def __init__(self, description: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(description)
        self.retry_after = retry_after
        self.status = status


class RetryAfterTooLong(Exception):
    """The server asked for a longer wait than the policy honours and the policy gives up on it."""

    def __init__(self, seconds: float, cap_s: float, error: BaseException):
        super().__init__(f"asked to retry after {seconds:.0f}s (more than {cap_s:.0f}s): {error}")
        self.seconds = seconds
        self.cap_s = cap_s
        self.error = error


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientFailure)


def transient_retry_after(error: BaseException) -> float | None:
    return error.retry_after if isinstance(error, TransientFailure) else None


OnRetry = Callable[[BaseException, int, float], None]  # (error, attempts made so far, seconds to wait)


def _wait(
    policy: RetryPolicy,
    attempt: int,
    error: Exception,
    retry_after: Callable[[BaseException], float | None],
    rng: random.Random | None,
) -> float:
    hint = retry_after(error)
    if policy.gives_up_on(hint):
        assert hint is not None
        raise RetryAfterTooLong(hint, policy.retry_after_cap_s, error) from error
    return policy.delay(attempt, hint, rng)


def run_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool] = is_transient,
    *,
    retry_after: Callable[[BaseException], float | None] = transient_retry_after,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """`call()` until it returns, at most `policy.attempts` times, waiting `policy.delay` between tries.

    An error `is_retryable` rejects is raised at once; the last retryable one is raised unchanged when
    the attempts are used up; `RetryAfterTooLong` when the server's wait ends the retries."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except Exception as error:
            if not is_retryable(error) or attempt + 1 >= policy.attempts:
                raise
            wait = _wait(policy, attempt, error, retry_after, rng)
            if on_retry is not None:
                on_retry(error, attempt + 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


async def run_with_retries_async(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    is_retryable: Callable[[BaseException], bool] = is_transient,
    *,
    retry_after: Callable[[BaseException], float | None] = transient_retry_after,
    sleep: Callable[[float], Awaitable[object]],
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """`run_with_retries` for a coroutine: `await call()`, `await sleep(seconds)` between tries."""
    for attempt in range(policy.attempts):
        try:
            return await call()
        except Exception as error:
            if not is_retryable(error) or attempt + 1 >= policy.attempts:
                raise
            wait = _wait(policy, attempt, error, retry_after, rng)
            if on_retry is not None:
                on_retry(error, attempt + 1, wait)
            await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# --- Retry-After ----------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a Retry-After header (delta seconds or an HTTP date) into seconds from now (None when
    absent or unreadable; never negative)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI-style gateways), else `Retry-After`."""
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    return retry_after_seconds(headers.get("retry-after"), now=now)
