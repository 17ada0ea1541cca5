"""The one retry policy (`schemas/retry.py`): backoff, jitter, Retry-After, what is retried, the drivers,
and each client's instance of it (their defaults are unchanged)."""

from __future__ import annotations

import asyncio
import email.utils
import math
import random

import pytest

from extractors.rate_limit import search_retry_policy
from schemas.config import LLMEndpointConfig
from schemas.retry import (
    RetryAfterTooLong,
    RetryPolicy,
    TransientFailure,
    parse_retry_after,
    retry_after_seconds,
    run_with_retries,
    run_with_retries_async,
)
from synthesis.http_painter import painter_retry_policy
from synthesis.llm_client import LLMClient
from warehouse.hub import hub_retry_policy

NOW = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT


class Highest(random.Random):
    """Draws the top of every jitter range, so the backoff's envelope shows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_from_base_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=30.0)
    assert [policy.backoff(n, Highest()) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.delay(3, None, Highest()) == 4.0


def test_full_jitter_stays_within_the_envelope_and_spreads_over_it() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=8.0)
    rng = random.Random(5)
    for attempt in range(8):
        envelope = min(8.0, 2.0**attempt)
        delays = [policy.delay(attempt, rng=rng) for _ in range(400)]
        assert all(0 <= delay <= envelope for delay in delays)
        assert min(delays) < 0.1 * envelope and max(delays) > 0.9 * envelope


def test_hub_jitter_adds_up_to_half_again_without_a_cap() -> None:
    policy = hub_retry_policy(backoff_s=1.0)
    rng = random.Random(11)
    for attempt in range(12):
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(2**attempt <= delay <= 1.5 * 2**attempt for delay in delays)
        assert max(delays) - min(delays) > 0.4 * 2**attempt


def test_seeded_delays_are_the_ones_the_clients_drew_before() -> None:
    # search, painter and LLM client: uniform(0, min(cap, base * 2**n)); the Hub: b * 2**n * (1 + r / 2)
    for attempt in range(10):
        old = random.Random(attempt).uniform(0, min(30.0, 0.5 * 2**attempt))
        assert search_retry_policy().backoff(attempt, random.Random(attempt)) == old
        assert RetryPolicy().backoff(attempt, random.Random(attempt)) == old
        hub_old = 1.0 * 2**attempt * (1 + random.Random(attempt).random() / 2)
        assert hub_retry_policy().backoff(attempt, random.Random(attempt)) == hub_old


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0.25", 0.25),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # a date in the past: no wait
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=NOW) == expected


def test_retry_after_ms_wins_over_retry_after() -> None:
    date = email.utils.formatdate(NOW + 7, usegmt=True)
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "9"}) == 9.0
    assert parse_retry_after({"retry-after": date}, now=NOW) == 7.0
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


@pytest.mark.parametrize("header", ["1e309", "99999999999", "inf"])
def test_a_hostile_huge_retry_after_is_capped_or_ends_the_retries(header: str) -> None:
    wish = retry_after_seconds(header)
    assert wish is not None and wish > 1e10
    assert search_retry_policy().delay(0, wish) == 30.0
    assert painter_retry_policy(4).delay(0, wish) == 60.0
    assert hub_retry_policy().delay(0, wish, random.Random(1)) == 300.0
    llm = RetryPolicy(retry_after_cap_s=300.0, beyond_cap="give_up")
    assert llm.gives_up_on(wish) and not llm.gives_up_on(300.0) and not llm.gives_up_on(None)


def test_retry_after_replaces_the_backoff_unless_it_is_a_floor() -> None:
    assert RetryPolicy().delay(6, 2.0, Highest()) == 2.0  # not the 30 s backoff
    assert hub_retry_policy().delay(0, 2.0, Highest()) == 2.0  # longer than the 1.5 s backoff
    assert hub_retry_policy().delay(3, 2.0, Highest()) == 12.0  # the 12 s backoff is longer
    assert hub_retry_policy(backoff_s=0).delay(3, 7.0) == 0.0  # tests: no waiting at all


def test_each_client_retries_its_own_statuses() -> None:
    search = search_retry_policy()
    painter = painter_retry_policy(4)
    hub = hub_retry_policy()
    llm = LLMClient(
        LLMEndpointConfig(base_url="http://127.0.0.1:9/v1", model="m", adaptive_concurrency=False)
    ).retry_policy
    for status in (429, 500, 502, 503, 504):
        assert all(policy.retries_status(status) for policy in (search, painter, hub, llm))
    for status in (200, 301, 400, 401, 403, 404, 413, 422):
        assert not any(policy.retries_status(status) for policy in (search, painter, hub, llm))
    assert [search.retries_status(s) for s in (408, 409, 425, 501, 599)] == [True, False, True, False, False]
    assert [painter.retries_status(s) for s in (408, 409, 425, 501, 599)] == [False, False, False, True, True]
    assert [llm.retries_status(s) for s in (408, 409, 425, 501, 599)] == [True, True, True, True, True]
    assert [hub.retries_status(s) for s in (408, 409, 425, 501, 599)] == [False, False, False, False, False]


def test_each_client_keeps_its_defaults() -> None:
    assert (search_retry_policy().attempts, search_retry_policy().base_s, search_retry_policy().cap_s) == (
        5,
        0.5,
        30.0,
    )
    painter = painter_retry_policy(4)
    assert (painter.attempts, painter.base_s, painter.cap_s, painter.retry_after_cap_s) == (
        5,
        1.0,
        60.0,
        60.0,
    )
    hub = hub_retry_policy()
    assert (hub.attempts, hub.base_s, hub.cap_s, hub.retry_after_cap_s) == (5, 1.0, math.inf, 300.0)
    config = LLMEndpointConfig(base_url="http://127.0.0.1:9/v1", model="m", max_retries=2)
    llm = LLMClient(config, max_retry_after_s=60).retry_policy
    assert (llm.attempts, llm.base_s, llm.cap_s, llm.retry_after_cap_s, llm.beyond_cap) == (
        3,
        0.5,
        30.0,
        60.0,
        "give_up",
    )


@pytest.mark.parametrize(
    "fields", [{"attempts": 0}, {"base_s": -1.0}, {"jitter": (1.0, 0.5)}, {"retry_after_cap_s": -1.0}]
)
def test_a_policy_that_cannot_work_is_refused(fields: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**fields)


class Flaky:
    """Fails with the given errors, one per call, then answers "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_driver_retries_transient_failures_with_the_policys_waits() -> None:
    sleeps: list[float] = []
    retries: list[tuple[str, int, float]] = []
    call = Flaky(TransientFailure("HTTP 503"), TransientFailure("HTTP 429", retry_after=4.0))
    result = run_with_retries(
        call,
        RetryPolicy(attempts=3),
        sleep=sleeps.append,
        rng=Highest(),
        on_retry=lambda error, made, delay: retries.append((str(error), made, delay)),
    )
    assert (result, call.calls, sleeps) == ("done", 3, [0.5, 4.0])
    assert retries == [("HTTP 503", 1, 0.5), ("HTTP 429", 2, 4.0)]


def test_driver_raises_a_final_error_at_once_and_the_last_transient_one_unchanged() -> None:
    sleeps: list[float] = []
    call = Flaky(TransientFailure("HTTP 503"), KeyError("bad row"))
    with pytest.raises(KeyError):
        run_with_retries(call, RetryPolicy(attempts=5), sleep=sleeps.append)
    assert call.calls == 2 and len(sleeps) == 1

    last = TransientFailure("HTTP 502", status=502)
    call = Flaky(TransientFailure("HTTP 503"), TransientFailure("HTTP 500"), last)
    with pytest.raises(TransientFailure) as raised:
        run_with_retries(call, RetryPolicy(attempts=3), sleep=sleeps.append)
    assert raised.value is last and call.calls == 3


def test_driver_gives_up_on_a_retry_after_beyond_the_policy() -> None:
    sleeps: list[float] = []
    call = Flaky(TransientFailure("HTTP 429", retry_after=3600.0))
    policy = RetryPolicy(attempts=5, retry_after_cap_s=60.0, beyond_cap="give_up")
    with pytest.raises(RetryAfterTooLong) as raised:
        run_with_retries(call, policy, sleep=sleeps.append)
    assert (raised.value.seconds, raised.value.cap_s, call.calls, sleeps) == (3600.0, 60.0, 1, [])
    assert "3600s (more than 60s): HTTP 429" in str(raised.value)


def test_driver_with_a_custom_classification() -> None:
    sleeps: list[float] = []
    call = Flaky(OSError("reset"), OSError("reset"))
    result = run_with_retries(
        call,
        RetryPolicy(attempts=3, base_s=1.0),
        lambda error: isinstance(error, OSError),
        retry_after=lambda error: 2.5,
        sleep=sleeps.append,
    )
    assert (result, sleeps) == ("done", [2.5, 2.5])


def test_async_driver_awaits_the_call_and_the_sleep() -> None:
    sleeps: list[float] = []
    call = Flaky(TransientFailure("time-out"), TransientFailure("time-out"))

    async def attempt() -> str:
        return call()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    result = asyncio.run(run_with_retries_async(attempt, RetryPolicy(attempts=3), sleep=sleep, rng=Highest()))
    assert (result, sleeps) == ("done", [0.5, 1.0])

    failing = Flaky(*(TransientFailure("time-out") for _ in range(3)))

    async def failing_attempt() -> str:
        return failing()

    with pytest.raises(TransientFailure):
        asyncio.run(run_with_retries_async(failing_attempt, RetryPolicy(attempts=3), sleep=sleep))
    assert failing.calls == 3
