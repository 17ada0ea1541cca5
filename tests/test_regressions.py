"""Bugs found while integrating, each with the test that failed before its fix."""

from __future__ import annotations

import asyncio
import threading

from extractors.rate_limit import TokenBucket
from synthesis.scripted_teacher import _HIT


def test_scripted_teacher_keeps_parentheses_in_result_urls():
    line = "[Peter Pan (character)](http://corpus.groundgen.invalid/wiki/Peter_Pan_(character)) A boy who never grows up."
    match = _HIT.match(line)
    assert match is not None
    assert match.group("url") == "http://corpus.groundgen.invalid/wiki/Peter_Pan_(character)"
    assert match.group("snippet") == "A boy who never grows up."


def test_token_bucket_is_shared_by_event_loops_in_several_threads():
    """Concurrent batches run in threads, each with its own event loop; one provider budget for all."""
    clock = [0.0]
    lock = threading.Lock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    bucket = TokenBucket(60, burst=1, clock=lambda: clock[0], sleep=sleep)  # 1 per second, no refill here

    def batch() -> None:
        asyncio.run(bucket.acquire())

    threads = [threading.Thread(target=batch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # one call from the burst, the next three reserved 1, 2 and 3 seconds ahead
    assert sorted(waits) == [1.0, 2.0, 3.0]
