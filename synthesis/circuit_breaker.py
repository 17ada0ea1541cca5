"""A circuit breaker per endpoint: stop calling a service that keeps failing, say since when.

States: `closed` (calls go through), `open` after `threshold` consecutive transient failures (calls
fail at once with `EndpointUnavailableError`, no network), `half_open` after `cooldown_s` (one probe
call goes through; its success closes the breaker, its failure opens it again). A fatal error (the
endpoint refused the key, does not know the model) latches: every later call raises it again without
a request, until `reset_breakers()` (the flow calls it when a stage starts).

The LLM client keeps one breaker per endpoint URL in this process (`breaker_for`); the flow keeps its
own per stage over the row errors the workers report (`flows.batches`), so a stage stops on an
outage however many worker processes there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from schemas.errors import ConfigurationError, EndpointUnavailableError, GroundgenError

BreakerState = Literal["closed", "open", "half_open"]

DEFAULT_THRESHOLD = 5
DEFAULT_COOLDOWN_S = 60.0


def clock_time(epoch_s: float) -> str:
    """HH:MM in local time, as the stop message shows it."""
    return datetime.fromtimestamp(epoch_s).strftime("%H:%M")


def unreachable_message(endpoint: str, since: float, waiting: int) -> str:
    return (
        f"endpoint {endpoint} unreachable since {clock_time(since)}; {waiting} rows waiting; "
        "rerun when it is back"
    )


class CircuitBreaker:
    """Thread-safe; `threshold` 0 never opens (fatal errors still latch)."""

    def __init__(
        self,
        endpoint: str,
        threshold: int = DEFAULT_THRESHOLD,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        clock: Callable[[], float] = time.time,
    ):
        self.endpoint = endpoint
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state: BreakerState = "closed"
        self.consecutive_failures = 0
        self.since: float | None = None  # first failure of the current streak
        self.opened_at: float | None = None
        self.fatal: GroundgenError | None = None
        self._probing = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Before a call: raise the latched fatal error, or EndpointUnavailableError while open."""
        with self._lock:
            if self.fatal is not None:
                raise ConfigurationError(str(self.fatal), endpoint=self.endpoint)
            if self.state == "closed":
                return
            now = self.clock()
            if (
                self.state == "open"
                and self.opened_at is not None
                and now - self.opened_at >= self.cooldown_s
            ):
                self.state = "half_open"
                self._probing = False
            if self.state == "half_open" and not self._probing:
                self._probing = True  # this call is the probe
                return
            since = self.since if self.since is not None else now
            raise EndpointUnavailableError(
                f"circuit breaker open: {self.endpoint} failed {self.consecutive_failures} times in a row "
                f"since {clock_time(since)}; no call made",
                endpoint=self.endpoint,
                since=since,
            )

    def record_success(self) -> None:
        with self._lock:
            self.state = "closed"
            self.consecutive_failures = 0
            self.since = None
            self.opened_at = None
            self._probing = False

    def record_failure(self) -> bool:
        """A transient failure; True when this one opened the breaker."""
        with self._lock:
            now = self.clock()
            self.consecutive_failures += 1
            if self.since is None:
                self.since = now
            if self.state == "half_open":
                self.state, self.opened_at, self._probing = "open", now, False
                return False
            if self.state == "closed" and self.threshold and self.consecutive_failures >= self.threshold:
                self.state, self.opened_at = "open", now
                return True
            return False

    def record_fatal(self, error: GroundgenError) -> None:
        with self._lock:
            self.fatal = error


_BREAKERS: dict[str, CircuitBreaker] = {}
_REGISTRY_LOCK = threading.Lock()
_settings = {"threshold": DEFAULT_THRESHOLD, "cooldown_s": DEFAULT_COOLDOWN_S}


def configure_breakers(threshold: int, cooldown_s: float = DEFAULT_COOLDOWN_S) -> None:
    """Settings for breakers created from now on in this process (from the config's `breaker_*`)."""
    with _REGISTRY_LOCK:
        if (_settings["threshold"], _settings["cooldown_s"]) != (threshold, cooldown_s):
            _settings.update(threshold=threshold, cooldown_s=cooldown_s)
            _BREAKERS.clear()


def current_threshold() -> int:
    return int(_settings["threshold"])


def breaker_for(endpoint: str) -> CircuitBreaker:
    """This process's breaker for an endpoint (created closed on first use)."""
    with _REGISTRY_LOCK:
        breaker = _BREAKERS.get(endpoint)
        if breaker is None:
            breaker = CircuitBreaker(
                endpoint, threshold=int(_settings["threshold"]), cooldown_s=float(_settings["cooldown_s"])
            )
            _BREAKERS[endpoint] = breaker
        return breaker


def reset_breakers() -> None:
    """Forget every endpoint's state (a new stage or run starts with closed breakers)."""
    with _REGISTRY_LOCK:
        _BREAKERS.clear()
