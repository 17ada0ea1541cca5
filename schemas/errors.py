"""Typed errors for expected, per-row failures. Each is recorded in the `failures` table by class name.

Unexpected exceptions are not caught per row: they fail the batch, which Prefect retries.
"""

from __future__ import annotations

from dataclasses import dataclass


class GroundgenError(Exception):
    """Base of every expected failure. `retryable` says whether a later attempt may succeed."""

    retryable: bool = False


class ConfigurationError(GroundgenError):
    """A backend is misconfigured (missing key env var, unknown model, missing extra)."""


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
    """A model call failed after its retries (429/5xx/time-out/connection reset)."""

    retryable = True


class ToolError(GroundgenError):
    """A tool call the model made is invalid (unknown tool, malformed arguments)."""


class PainterError(GroundgenError):
    """Image synthesis failed for a row."""


@dataclass(frozen=True)
class RowError:
    """A per-row failure as a stage core reports it; the flow turns it into a `Failure` row."""

    row_id: str
    error_class: str
    message: str

    @classmethod
    def from_exception(cls, row_id: str, error: BaseException) -> RowError:
        message = str(error) or error.__class__.__name__
        return cls(row_id=row_id, error_class=error.__class__.__name__, message=message[:2000])
