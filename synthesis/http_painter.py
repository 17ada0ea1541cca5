"""Ground-truth painter over an OpenAI-images-compatible HTTP API (hosted or self-served generators).

Text rows: `POST {base_url}/images/generations` with JSON `model, prompt, size, n=1,
response_format` and the per-row `seed` (unless `send_seed = false`: OpenAI itself has no seed).
Rows with references, when `painter.pipeline` is "edit" (every chosen reference, up to
`max_references`) or "img2img" (the first one): `POST {base_url}/images/edits` as multipart with the
same fields and the reference images as `image` (one) or `image[]` (several, as the OpenAI SDK sends
them). Otherwise references are ignored.

Resilience: an explicit time-out per request; up to `max_retries` retries, only for 429 and 5xx
answers (waiting `Retry-After` when given, else full-jitter exponential backoff) and for connections
that could not be opened (nothing was sent), by the shared `schemas/retry.py` `RetryPolicy`
(`painter_retry_policy`; docs/ARCHITECTURE.md, "Failures"). A read time-out is not retried: the
server may still be painting (and billing) the image. At most `max_concurrency` requests are in
flight; within that, the endpoint's adaptive limit (`synthesis.adaptive_concurrency`, one per
endpoint per process, unless `adaptive_concurrency = false`) holds each attempt and backs off on 429,
503 and time-outs. The API key comes from the environment variable named by `api_key_env` and is
redacted from every message.

The returned image is validated and normalised like a downloaded reference
(`extractors.images.validate_and_normalize`: broken, truncated or bomb images are refused), stored in
the blob store, and described by an `Image` row as `DiffusersPainter` does. Every per-row failure is a
`PainterError` row error; the other rows of the batch go on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from extractors.images import validate_and_normalize
from extractors.rate_limit import redact
from schemas.config import PainterConfig
from schemas.errors import ConfigurationError, ImageValidationError, PainterError, RowError
from schemas.ids import content_id
from schemas.protocols import PaintRequest
from schemas.retry import (
    SERVER_ERRORS,
    RetryPolicy,
    TransientFailure,
    retry_after_seconds,
    run_with_retries_async,
)
from schemas.rows import Image
from synthesis.adaptive_concurrency import AdaptiveLimit, limit_for
from synthesis.llm_client import redact_url
from synthesis.painter import model_label, painter_fingerprint, row_seed

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]

MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a b64 PNG of 2048x2048 is ~16 MB
MIN_SIDE = 8
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RETRY_STATUSES = frozenset({429}) | SERVER_ERRORS


def painter_retry_policy(max_retries: int) -> RetryPolicy:
    """The images API's policy: full jitter from 1 s up to 60 s, Retry-After honoured up to 60 s."""
    return RetryPolicy(
        attempts=max_retries + 1,
        base_s=BACKOFF_BASE_S,
        cap_s=BACKOFF_CAP_S,
        retry_after_cap_s=BACKOFF_CAP_S,
        statuses=RETRY_STATUSES,
    )


class _RetryableAnswer(TransientFailure):
    """A 429 or 5xx answer, with the API's own error message."""

    def __init__(self, status: int, detail: str, retry_after: float | None):
        super().__init__(f"HTTP {status}", status=status, retry_after=retry_after)
        self.detail = detail


def _mime(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\x89PNG"):
        return "png", "image/png"
    if data.startswith(b"\xff\xd8"):
        return "jpg", "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    return "bin", "application/octet-stream"


def _error_detail(body: bytes) -> str:
    """The API's own error message (OpenAI style `{"error": {"message": ...}}`), shortened."""
    try:
        message = httpx.Response(200, content=body).json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    return str(message)[:300]


def decode_image_response(body: bytes) -> bytes:
    """The image bytes of an images API answer (`data[0].b64_json`). Raises PainterError."""
    try:
        item = httpx.Response(200, content=body).json()["data"][0]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise PainterError(
            f"images API answer is not {{'data': [{{'b64_json': ...}}]}} ({error!r})"
        ) from None
    if not isinstance(item, dict) or not item.get("b64_json"):
        if isinstance(item, dict) and item.get("url"):
            raise PainterError("images API answered with a URL; set painter.response_format = 'b64_json'")
        raise PainterError("images API answer has no b64_json image")
    try:
        return base64.b64decode(item["b64_json"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise PainterError(f"images API answer has invalid base64: {error}") from None


class HTTPPainter:
    """`Painter` backend for an OpenAI-images-compatible API."""

    def __init__(
        self,
        config: PainterConfig,
        blobs: Any,
        *,
        fingerprint: str | None = None,
        sleep: Sleep = asyncio.sleep,
    ):
        if not config.base_url:
            raise ConfigurationError("painter.kind = 'http' needs painter.base_url (e.g. https://host/v1)")
        if not config.model:
            raise ConfigurationError("painter.kind = 'http' needs painter.model (the API's model name)")
        self.api_key = ""
        if config.api_key_env:
            self.api_key = config.api_key() or ""
            if not self.api_key:
                raise ConfigurationError(
                    f"painter.api_key_env names {config.api_key_env}, which is not set in the environment"
                )
        self.config = config
        self.blobs = blobs
        self.fingerprint = fingerprint or painter_fingerprint(config)
        self.model_name = model_label(config.model, config.revision)
        self.base_url = config.base_url.rstrip("/")
        self.endpoint = redact_url(self.base_url)  # the circuit breaker's key in the flow
        self.size = config.size or f"{config.width}x{config.height}"
        self.sleep = sleep
        self.timeout = httpx.Timeout(config.timeout_s, connect=min(30.0, config.timeout_s))
        self.adaptive_limit: AdaptiveLimit | None = (
            limit_for(self.endpoint, config.max_concurrency) if config.adaptive_concurrency else None
        )

    def concurrency_summary(self) -> dict[str, float]:
        """The endpoint's AIMD level for the run's record (`{}` at fixed concurrency)."""
        return self.adaptive_limit.summary() if self.adaptive_limit is not None else {}

    # --- the Painter protocol --------------------------------------------------------------------

    def paint(self, requests: list[PaintRequest]) -> tuple[list[Image], list[RowError]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.paint_async(requests))
        # called from inside an event loop (a notebook, an async task): paint on a thread of its own
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.paint_async(requests)).result()

    async def paint_async(self, requests: list[PaintRequest]) -> tuple[list[Image], list[RowError]]:
        limit = self.config.max_concurrency
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        semaphore = asyncio.Semaphore(limit)
        async with httpx.AsyncClient(
            headers=headers,
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            follow_redirects=False,
            trust_env=False,
        ) as client:
            outcomes = await asyncio.gather(*(self._one(client, semaphore, request) for request in requests))
        images = [outcome for outcome in outcomes if isinstance(outcome, Image)]
        errors = [outcome for outcome in outcomes if isinstance(outcome, RowError)]
        return images, errors

    # --- one row ---------------------------------------------------------------------------------

    def _references(self, request: PaintRequest) -> list[bytes]:
        mode = self.config.pipeline
        if mode not in ("edit", "img2img") or not request.reference_sha256 or self.config.max_references == 0:
            return []
        wanted = request.reference_sha256[: 1 if mode == "img2img" else self.config.max_references]
        references = []
        for sha256 in wanted:
            try:
                references.append(self.blobs.read(sha256))
            except (FileNotFoundError, KeyError) as error:
                raise PainterError(f"reference image {sha256} is not in the blob store") from error
        return references

    async def _one(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: PaintRequest
    ) -> Image | RowError:
        trajectory = request.trajectory
        try:
            if not trajectory.gen_prompt.strip():
                raise PainterError(
                    f"trajectory {trajectory.id} has no gen_prompt (ending {trajectory.ending})"
                )
            references = self._references(request)
            seed = row_seed(self.config.seed, trajectory.id)
            fields: dict[str, Any] = {
                "model": self.config.model,
                "prompt": trajectory.gen_prompt,
                "n": 1,
                "size": self.size,
            }
            if self.config.response_format:
                fields["response_format"] = self.config.response_format
            if self.config.send_seed:
                fields["seed"] = seed
            async with semaphore:
                started = time.perf_counter()
                body = await self._post(client, fields, references)
                elapsed = time.perf_counter() - started
            data = decode_image_response(body)
            try:
                normalized = await asyncio.to_thread(validate_and_normalize, data, min_side=MIN_SIDE)
            except ImageValidationError as error:
                raise PainterError(f"images API returned an unusable image: {error}") from error
            sha256 = await asyncio.to_thread(self.blobs.put, normalized.data)
        except PainterError as error:
            return RowError.from_exception(trajectory.id, error)
        return Image(
            id=content_id(trajectory.id, self.fingerprint),
            kind="ground_truth",
            sha256=sha256,
            width=normalized.width,
            height=normalized.height,
            format=normalized.format,
            phash=normalized.phash,
            trajectory_id=trajectory.id,
            painter=self.fingerprint,
            model=self.model_name,
            seed=seed if self.config.send_seed else 0,
            steps=self.config.steps,
            guidance=self.config.guidance,
            elapsed_s=round(elapsed, 4),
        )

    async def _post(
        self, client: httpx.AsyncClient, fields: dict[str, Any], references: list[bytes]
    ) -> bytes:
        if references:
            url = f"{self.base_url}/images/edits"
            name = "image[]" if len(references) > 1 else "image"
            files = []
            for index, data in enumerate(references):
                extension, mime = _mime(data)
                files.append((name, (f"reference-{index + 1}.{extension}", data, mime)))
            request: dict[str, Any] = {"data": {k: str(v) for k, v in fields.items()}, "files": files}
        else:
            url = f"{self.base_url}/images/generations"
            request = {"json": fields}
        secrets = (self.api_key,)
        policy = painter_retry_policy(self.config.max_retries)

        async def attempt() -> bytes:
            try:
                status, headers, body = await self._send(client, url, request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:  # nothing was sent: retried
                raise TransientFailure(error.__class__.__name__) from None
            except httpx.TransportError as error:  # read time-out, reset mid-answer: not retried
                message = f"images API: {error.__class__.__name__} ({error})"
                raise PainterError(redact(message, secrets), retryable=True, endpoint=self.endpoint) from None
            if status < 300:
                return body
            detail = redact(_error_detail(body), secrets)
            if status in (401, 403):  # fatal: no row can succeed with this key
                raise ConfigurationError(
                    f"images API {self.endpoint} refused the key (HTTP {status}); check "
                    f"{self.config.api_key_env or 'painter.api_key_env'}",
                    endpoint=self.endpoint,
                )
            if not policy.retries_status(status):
                raise PainterError(
                    f"images API: HTTP {status}: {detail}", retryable=False, endpoint=self.endpoint
                )
            raise _RetryableAnswer(status, detail, retry_after_seconds(headers.get("retry-after")))

        def log(error: BaseException, attempts: int, delay: float) -> None:
            logger.info("images API: %s, retrying", error)

        try:
            return await run_with_retries_async(attempt, policy, sleep=self.sleep, on_retry=log)
        except _RetryableAnswer as answer:  # the service, not the row: a transient failure
            raise PainterError(
                f"images API: HTTP {answer.status} after {policy.attempts} attempts: {answer.detail}",
                retryable=True,
                endpoint=self.endpoint,
            ) from None
        except TransientFailure as failure:
            message = f"images API: {failure} after {policy.attempts} attempts"
            raise PainterError(redact(message, secrets), retryable=True, endpoint=self.endpoint) from None

    async def _send(
        self, client: httpx.AsyncClient, url: str, request: dict[str, Any]
    ) -> tuple[int, httpx.Headers, bytes]:
        if self.adaptive_limit is None:
            return await self._send_once(client, url, request)
        async with self.adaptive_limit.slot() as slot:
            try:
                answer = await self._send_once(client, url, request)
            except httpx.TimeoutException:
                slot.overload()
                raise
            if answer[0] in (429, 503):
                slot.overload()
            elif answer[0] < 300:
                slot.ok()
            return answer

    async def _send_once(
        self, client: httpx.AsyncClient, url: str, request: dict[str, Any]
    ) -> tuple[int, httpx.Headers, bytes]:
        async with client.stream("POST", url, timeout=self.timeout, **request) as response:
            parts, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise PainterError(f"images API answer exceeds {MAX_RESPONSE_BYTES} bytes")
                parts.append(chunk)
            return response.status_code, response.headers, b"".join(parts)
