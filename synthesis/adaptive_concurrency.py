"""Adaptive concurrency per endpoint: additive increase, multiplicative decrease (AIMD).

A remote model or painter has a capacity nobody tells us: above it, requests queue (latency rises)
and then get refused (429/503) or time out. A fixed concurrency is either too low (idle capacity)
or too high (a storm of refusals and retries). `AdaptiveLimit` finds the level the way TCP finds a
link's bandwidth:

- **slow start**: from `initial`, the limit grows by one per success (doubling per round trip) until
  the first sign of overload;
- **congestion avoidance**: then by `1 / limit` per success (about one per round trip of the whole
  window) while latency holds;
- **overload** (429, 503, a time-out, or a latency above `latency_tolerance` times the best latency
  seen recently for answers of the same size class, when the caller tells sizes): the limit is multiplied by `backoff` (0.5), at most once per round trip — the
  requests already in flight when it shrank do not shrink it again;
- never below `floor`, never above `ceiling` (the configured `max_concurrency`).

One limit is shared by every batch of a process (threads, each with its own event loop), like the
token buckets; waiters are woken across loops with `call_soon_threadsafe`. `level` is the current
limit; `levels` keeps its history for the run's record.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

logger = logging.getLogger("groundgen.concurrency")


@dataclass
class Slot:
    """One request's place in the window: when it started, and whether it was judged."""

    started: float
    epoch: int  # the limit's decrease count when the request started
    outcome: str = ""  # "ok" or "overload" once reported
    size: int = 0  # how big the answer was (e.g. completion tokens); 0 = not told

    def ok(self, size: int = 0) -> None:
        """A success; `size` (completion tokens, say) puts its latency beside answers of like size."""
        self.outcome = "ok"
        self.size = max(0, int(size))

    def overload(self) -> None:
        self.outcome = "overload"


@dataclass
class AdaptiveLimit:
    ceiling: int
    floor: int = 1
    initial: int = 4
    backoff: float = 0.5
    latency_tolerance: float = 2.5
    latency_window: int = 200  # successes (per size class) whose latency forms the baseline (their minimum)
    name: str = ""
    clock: Callable[[], float] = time.monotonic
    limit: float = field(init=False)
    in_flight: int = field(init=False, default=0)
    decreases: int = field(init=False, default=0)
    slow_start: bool = field(init=False, default=True)
    levels: list[tuple[float, int]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.ceiling < 1 or not 1 <= self.floor <= self.ceiling:
            raise ValueError("need 1 <= floor <= ceiling")
        self.limit = float(min(self.ceiling, max(self.floor, self.initial)))
        self._lock = threading.Lock()
        # per size class (the bit length of `Slot.size`): a 2,000-token answer is not an inflated 20-token one
        self._latencies: dict[int, deque[float]] = {}
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._record()

    @property
    def level(self) -> int:
        return max(self.floor, int(self.limit))

    def _record(self) -> None:
        level = self.level
        if not self.levels or self.levels[-1][1] != level:
            self.levels.append((self.clock(), level))

    # --- the window -----------------------------------------------------------------------------

    async def acquire(self) -> Slot:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self.in_flight < self.level and not self._waiters:
                    self.in_flight += 1
                    return Slot(self.clock(), self.decreases)
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            try:
                await future
            except asyncio.CancelledError:
                with self._lock:
                    if (loop, future) in self._waiters:
                        self._waiters.remove((loop, future))
                    elif future.done() and not future.cancelled():
                        self._wake()  # it was handed a turn it will not use
                raise
            with self._lock:
                if self.in_flight < self.level:
                    self.in_flight += 1
                    return Slot(self.clock(), self.decreases)

    def release(self, slot: Slot) -> None:
        now = self.clock()
        with self._lock:
            self.in_flight -= 1
            if slot.outcome == "ok":
                self._on_success(slot, now - slot.started)
            elif slot.outcome == "overload":
                self._on_overload(slot)
            self._wake()

    def _wake(self) -> None:
        """Hand free places to waiters (called with the lock held), across event loops."""
        free = self.level - self.in_flight
        while free > 0 and self._waiters:
            loop, future = self._waiters.popleft()
            if future.done():
                continue
            loop.call_soon_threadsafe(_resolve, future)
            free -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """`async with limit.slot() as slot:` ... `slot.ok()` or `slot.overload()`; unjudged = neutral."""
        taken = await self.acquire()
        try:
            yield taken
        finally:
            self.release(taken)

    # --- the control law ------------------------------------------------------------------------

    def _on_success(self, slot: Slot, latency: float) -> None:
        recent = self._latencies.setdefault(slot.size.bit_length(), deque(maxlen=self.latency_window))
        baseline = min(recent) if recent else latency
        recent.append(latency)
        if latency > self.latency_tolerance * max(baseline, 1e-3):
            if slot.epoch == self.decreases:  # once per round trip, as for refusals
                self._decrease("latency inflation", latency, baseline)
            return
        if self.slow_start:
            self.limit = min(self.ceiling, self.limit + 1)
        else:
            self.limit = min(self.ceiling, self.limit + 1 / max(self.limit, 1))
        self._record()

    def _on_overload(self, slot: Slot) -> None:
        if slot.epoch != self.decreases:
            return  # started before the last decrease: that overload is already answered
        self._decrease("overload", None, None)

    def _decrease(self, why: str, latency: float | None, baseline: float | None) -> None:
        before = self.level
        self.slow_start = False
        self.limit = max(float(self.floor), math.floor(self.limit * self.backoff))
        self.decreases += 1
        self._record()
        if self.level != before:
            detail = f" (latency {latency:.2f}s vs best {baseline:.2f}s)" if latency and baseline else ""
            logger.info(
                "%s: concurrency %d -> %d on %s%s", self.name or "endpoint", before, self.level, why, detail
            )

    def summary(self) -> dict[str, float]:
        """What a run records: the final level, the time-weighted mean, and how often it backed off."""
        now = self.clock()
        points = [*self.levels, (now, self.level)]
        span = points[-1][0] - points[0][0]
        mean = (
            sum(level * (points[i + 1][0] - at) for i, (at, level) in enumerate(points[:-1])) / span
            if span > 0
            else float(self.level)
        )
        return {
            "concurrency_level": float(self.level),
            "concurrency_mean": round(mean, 2),
            "backoffs": float(self.decreases),
        }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# --- one limit per endpoint per process ---------------------------------------------------------

# A client endpoint backs off by 15 %, not by half: one refusal per round trip is answered at once,
# and halving a window near the capacity idles up to half of it until it grows back. bench/aimd.py
# (capacity 16, 15 s per mode, one after another): backoff 0.5 gave goodput/capacity 0.85; 0.8:
# 0.91 with 2.8 % refused; 0.85: 0.93 with 3.3 %; 0.9: 0.96 with 4.2 % (too close to the 5 % goal).
ENDPOINT_BACKOFF = 0.85
_LIMITS: dict[tuple[str, int], AdaptiveLimit] = {}
_LIMITS_LOCK = threading.Lock()


def limit_for(endpoint: str, ceiling: int) -> AdaptiveLimit:
    """This process's limit for an endpoint (created on first use), shared by every client, batch and
    thread that calls it with the same ceiling (its configured `max_concurrency`).

    It starts at half the ceiling (at least 4): the configured number is a better first guess than
    4, and slow start reaches the ceiling in one round trip; from 4, a batch of 64 trajectories lost
    about a second of a 300 ms model's time to slow start (bench/agent_throughput.py)."""
    with _LIMITS_LOCK:
        limit = _LIMITS.get((endpoint, ceiling))
        if limit is None:
            limit = AdaptiveLimit(
                ceiling=ceiling,
                initial=max(min(ceiling, AdaptiveLimit.initial), ceiling // 2),
                backoff=ENDPOINT_BACKOFF,
                name=endpoint,
            )
            _LIMITS[(endpoint, ceiling)] = limit
        return limit


def reset_limits() -> None:
    """Forget every endpoint's learned level (tests; a process that starts over)."""
    with _LIMITS_LOCK:
        _LIMITS.clear()
