"""Typed errors for expected, per-row failures. Each is recorded in the `failures` table by class name.

Unexpected exceptions are not caught per row: they fail the batch, which Prefect retries.

Every failure has a kind (docs/ARCHITECTURE.md "Failures"), see `error_kind`:
- transient: the service, not the row, is at fault (connection error, time-out, 429, 5xx, a circuit
  breaker open). Recorded, never counted against a row's `max_attempts`; a later run retries it.
- permanent: the row's own data or the model's answer to it is bad. Counted against `max_attempts`.
- fatal: the setup is wrong (auth, unknown model, missing key). Stops the stage at once; no per-row
  failure rows are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorKind = Literal["transient", "permanent", "fatal"]
ERROR_KINDS: tuple[ErrorKind, ...] = ("transient", "permanent", "fatal")


class GroundgenError(Exception):
    """Base of every expected failure. `retryable` says whether a later attempt may succeed;
    `fatal` that no attempt can succeed until the user fixes the setup."""

    retryable: bool = False
    fatal: bool = False
    endpoint: str = ""  # the service at fault, when one is known (a redacted URL)


class ConfigurationError(GroundgenError):
    """A backend is misconfigured (missing key env var, refused key, unknown model, missing extra)."""

    fatal = True

    def __init__(self, message: str, *, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), str(self), {"endpoint": self.endpoint}))


class EndpointUnavailableError(GroundgenError):
    """A circuit breaker is open: the endpoint failed too often in a row, so no call was made."""

    retryable = True

    def __init__(self, message: str, *, endpoint: str = "", since: float = 0.0):
        super().__init__(message)
        self.endpoint = endpoint
        self.since = since  # epoch seconds of the first failure of the streak that opened it

    def __reduce__(self) -> tuple:  # keyword-only fields survive pickling (Ray workers)
        return (_rebuild, (type(self), str(self), {"endpoint": self.endpoint, "since": self.since}))


class UnsafeURLError(GroundgenError):
    """The URL guard refused a URL (scheme, resolved address class, redirect target)."""


class FetchError(GroundgenError):
    """A fetch failed: HTTP status, time-out, size cap, content type, decoding."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ExtractionError(GroundgenError):
    """A page was fetched but no usable content could be extracted from it."""


class ImageValidationError(GroundgenError):
    """An image is broken, too small, too large (decompression bomb) or of a refused format."""


class ModelOutputError(GroundgenError):
    """A model's output could not be parsed or validated (not JSON, wrong schema, unknown IMG id)."""


class ModelCallError(GroundgenError):
    """A model call failed: after its retries (429/5xx/time-out/connection reset: retryable) or with
    an answer no retry changes (400, 422: not retryable)."""

    retryable = True

    def __init__(self, message: str, *, retryable: bool = True, endpoint: str = ""):
        super().__init__(message)
        self.retryable = retryable
        self.endpoint = endpoint

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), str(self), {"retryable": self.retryable, "endpoint": self.endpoint}))


class ToolError(GroundgenError):
    """A tool call the model made is invalid (unknown tool, malformed arguments)."""


class PainterError(GroundgenError):
    """Image synthesis failed for a row (`retryable`: an images API that was unreachable or busy)."""

    def __init__(self, message: str, *, retryable: bool = False, endpoint: str = ""):
        super().__init__(message)
        self.retryable = retryable
        self.endpoint = endpoint

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), str(self), {"retryable": self.retryable, "endpoint": self.endpoint}))


def _rebuild(cls: type, message: str, fields: dict) -> BaseException:
    return cls(message, **fields)


def error_kind(error: BaseException) -> ErrorKind:
    """transient, permanent or fatal (see the module doc). Unexpected exceptions are permanent,
    except the standard library's connection errors and time-outs."""
    if isinstance(error, GroundgenError):
        if error.fatal:
            return "fatal"
        return "transient" if error.retryable else "permanent"
    if isinstance(error, ConnectionError | TimeoutError):
        return "transient"
    return "permanent"


# Failures recorded before kinds existed (kind = ''): these classes were transient.
LEGACY_TRANSIENT_CLASSES = ("ModelCallError", "EndpointUnavailableError")


@dataclass(frozen=True)
class RowError:
    """A per-row failure as a stage core reports it; the flow turns it into a `Failure` row."""

    row_id: str
    error_class: str
    message: str
    kind: ErrorKind = "permanent"
    endpoint: str = ""  # the service at fault, when known: the circuit breaker's key

    @classmethod
    def from_exception(cls, row_id: str, error: BaseException) -> RowError:
        message = str(error) or error.__class__.__name__
        return cls(
            row_id=row_id,
            error_class=error.__class__.__name__,
            message=message[:2000],
            kind=error_kind(error),
            endpoint=str(getattr(error, "endpoint", "") or ""),
        )


class StageStopped(GroundgenError):
    """A stage stopped before its pending rows were done: a fatal error or an open circuit breaker.
    The message is the one line the user reads; rerunning after the fix continues the stage."""

    def __init__(self, message: str, *, reason: Literal["fatal", "breaker"] = "breaker"):
        super().__init__(message)
        self.reason = reason
