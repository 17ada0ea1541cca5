"""The one LLM client: every model call of groundgen goes through `LLMClient.chat`.

It speaks the OpenAI chat-completions protocol through the official `openai` SDK with `base_url`,
so one config works against OpenAI, vLLM, SGLang, Ollama or a gateway. The SDK's own retries are
off (`max_retries=0`); this module owns the policy:

- retries only on 408, 409, 425, 429, 5xx, connection errors, time-outs and unreadable response
  bodies, with exponential backoff and full jitter, honouring `Retry-After` (seconds or HTTP date)
  and `retry-after-ms` up to `max_retry_after_s` (a longer wish gives up); after `max_retries` a
  retryable `ModelCallError` (a transient failure). The policy is the shared `schemas/retry.py`
  `RetryPolicy` (`LLMClient.retry_policy`; docs/ARCHITECTURE.md, "Failures");
- errors by kind (`schemas.errors.error_kind`): 401/403 (key refused) and 404 (no such model or
  path) raise `ConfigurationError` (fatal: the flow stops the stage); other 4xx a non-retryable
  `ModelCallError` (permanent: counts against the row's attempts);
- a circuit breaker per endpoint (`synthesis.circuit_breaker`): after N consecutive failed calls
  every call fails at once with `EndpointUnavailableError` (no request) until a probe succeeds, and
  a fatal error latches, so an outage or a wrong key costs N calls, not one per row;
- adaptive concurrency (`synthesis.adaptive_concurrency`, on by default): one AIMD limit per
  endpoint per process, shared by all loops and threads, never above `max_concurrency`; each HTTP
  attempt holds a slot and reports success, or overload on 429, 503 and time-outs (the retry loop
  and the breaker around it are unchanged). With `adaptive_concurrency = false`: a fixed
  `max_concurrency` calls in flight per event loop. Token buckets for requests/min and tokens/min
  (shared by all loops and threads of the process);
- a per-call time-out and a response size cap (`max_response_bytes`, enforced while the body is
  read) that raises `ModelOutputError`;
- a response cache (see `synthesis.response_cache`) keyed by (model, messages, parameters);
- usage accounting per call (`ChatResult.usage`), per client (`LLMClient.usage`) and per unit of
  work (`with UsageMeter() as meter:` counts the calls made in that context, e.g. one flow batch,
  including the asyncio tasks it starts, per client).

The API key is read from the environment variable the config names, handed to the SDK, and never
logged, stored or put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from extractors.rate_limit import TokenBucket

try:  # the HTTP library the installed openai SDK is built on (openai >= 3 ships httpx2, older uses httpx)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the openai version
    import httpx  # type: ignore[no-redef]

from schemas.config import LLMEndpointConfig
from schemas.errors import ConfigurationError, ModelCallError, ModelOutputError
from schemas.protocols import ModelClient
from schemas.retry import (
    RetryAfterTooLong,
    RetryPolicy,
    TransientFailure,
    parse_retry_after,
    run_with_retries_async,
)
from synthesis.adaptive_concurrency import AdaptiveLimit, Slot, limit_for
from synthesis.circuit_breaker import breaker_for
from synthesis.http_pool import pooled_transport
from synthesis.response_cache import ResponseCache, cache_key

logger = logging.getLogger(__name__)

IMAGE_TOKEN_ESTIMATE = 1_000  # tokens charged to the tokens/min bucket per attached image
PLACEHOLDER_KEY = "not-needed"  # servers without auth (vLLM, Ollama) still get a bearer header
# retried, then a transient failure: these and every 5xx (and any code above, as ever)
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429}) | frozenset(range(500, 1000))
OVERLOAD_STATUSES = frozenset({429, 503})  # with time-outs: the adaptive limit backs off


# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    cached_calls: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            cached_calls=self.cached_calls + other.cached_calls,
            attempts=self.attempts + other.attempts,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            latency_s=self.latency_s + other.latency_s,
        )


class UsageMeter:
    """What the clients spent while this meter was active in the current context (and in every
    asyncio task started from it), per client. Thread-safe; clients of other contexts don't count."""

    def __init__(self) -> None:
        self._by_client: dict[int, tuple[Any, Usage]] = {}
        self._lock = threading.Lock()
        self._token: Token[UsageMeter | None] | None = None

    def add(self, client: Any, usage: Usage) -> None:
        with self._lock:
            _, spent = self._by_client.get(id(client), (client, Usage()))
            self._by_client[id(client)] = (client, spent + usage)

    def usage_of(self, client: Any) -> Usage:
        with self._lock:
            return self._by_client.get(id(client), (client, Usage()))[1]

    def by_role(self, roles: Mapping[str, ModelClient | None]) -> dict[str, dict[str, float]]:
        """`{role: usage as a dict}` for the named clients that made calls (a client named twice
        counts under its first role). `roles` is what a backend's `model_clients()` names
        (`Metered` in schemas/protocols.py)."""
        result: dict[str, dict[str, float]] = {}
        seen: set[int] = set()
        for role, client in roles.items():
            if client is None or id(client) in seen:
                continue
            seen.add(id(client))
            usage = self.usage_of(client)
            if usage.calls:
                result[role] = asdict(usage)
                if levels := client.concurrency_summary():
                    result[role].update(levels)  # gauges: the endpoint's AIMD level, not summed
        return result

    def __enter__(self) -> UsageMeter:
        self._token = _ACTIVE_METER.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _ACTIVE_METER.reset(self._token)
            self._token = None


_ACTIVE_METER: ContextVar[UsageMeter | None] = ContextVar("groundgen_usage_meter", default=None)


@dataclass(frozen=True)
class NativeToolCall:
    id: str
    name: str
    arguments: str  # JSON text exactly as the model gave it


@dataclass(frozen=True)
class ChatResult:
    content: str
    finish_reason: str
    usage: Usage
    tool_calls: list[NativeToolCall] = field(default_factory=list)
    cached: bool = False
    cache_key: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# --- pure helpers ---------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without user info or query (where some gateways put keys), for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A cheap upper-ish estimate (4 characters a token, a flat charge per image)."""
    characters = 0
    images = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            characters += len(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    images += 1
                else:
                    characters += len(str(part.get("text", "")))
        for call in message.get("tool_calls") or []:
            characters += len(json.dumps(call))
    return characters // 4 + images * IMAGE_TOKEN_ESTIMATE + 4 * len(messages)


# --- transport: the response size cap ----------------------------------------------------------


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, max_bytes: int):
        self.inner = inner
        self.max_bytes = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.max_bytes:
                raise ModelOutputError(f"response larger than max_response_bytes={self.max_bytes}")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class _SizeCappedTransport(httpx.AsyncBaseTransport):
    """Aborts a response whose body exceeds `max_bytes` while it is read (not after)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, max_bytes: int):
        self.inner = inner
        self.max_bytes = max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            await response.aclose()
            raise ModelOutputError(
                f"response of {length} bytes is larger than max_response_bytes={self.max_bytes}"
            )
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self.max_bytes),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the client -------------------------------------------------------------------------------------


class _Retryable(TransientFailure):
    def __init__(self, description: str, retry_after: float | None = None):
        super().__init__(description, retry_after=retry_after)


class _FixedSlot:
    """Fixed concurrency: outcomes are not judged."""

    def ok(self, size: int = 0) -> None:
        pass

    def overload(self) -> None:
        pass


@dataclass
class _LoopResources:
    openai: Any
    semaphore: asyncio.Semaphore


class LLMClient:
    """One OpenAI-compatible endpoint. Create one per endpoint config and share it."""

    def __init__(
        self,
        config: LLMEndpointConfig,
        *,
        cache: ResponseCache | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        rate_burst_s: float = 1.0,
    ):
        self.config = config
        self.cache = cache
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.retry_policy = RetryPolicy(
            attempts=config.max_retries + 1,
            base_s=backoff_base_s,
            cap_s=backoff_max_s,
            retry_after_cap_s=max_retry_after_s,
            beyond_cap="give_up",
            statuses=TRANSIENT_STATUSES,
        )
        self._api_key = self._read_key(config)
        self._request_bucket = (
            TokenBucket(config.requests_per_minute, burst_s=rate_burst_s)
            if config.requests_per_minute
            else None
        )
        self._token_bucket = (
            TokenBucket(config.tokens_per_minute, burst_s=rate_burst_s) if config.tokens_per_minute else None
        )
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopResources] = (
            weakref.WeakKeyDictionary()
        )
        self._usage = Usage()
        self._usage_lock = threading.Lock()
        self.endpoint = redact_url(config.base_url)
        self.adaptive_limit: AdaptiveLimit | None = (
            limit_for(self.endpoint, config.max_concurrency) if config.adaptive_concurrency else None
        )

    def concurrency_summary(self) -> dict[str, float]:
        """The endpoint's AIMD level for the run's record (`{}` at fixed concurrency)."""
        return self.adaptive_limit.summary() if self.adaptive_limit is not None else {}

    @staticmethod
    def _read_key(config: LLMEndpointConfig) -> str:
        if not config.api_key_env:
            return PLACEHOLDER_KEY
        key = config.api_key()
        if not key:
            raise ConfigurationError(
                f"environment variable {config.api_key_env} (the API key) is not set",
                endpoint=redact_url(config.base_url),
            )
        return key

    def __repr__(self) -> str:
        return f"LLMClient(endpoint={self.endpoint!r}, model={self.config.model!r})"

    @property
    def usage(self) -> Usage:
        """Everything this client has spent so far (all calls, all loops)."""
        with self._usage_lock:
            return self._usage

    def _resources(self) -> _LoopResources:
        loop = asyncio.get_running_loop()
        resources = self._per_loop.get(loop)
        if resources is None:
            import openai

            limits = httpx.Limits(
                max_connections=self.config.max_concurrency + 4,
                max_keepalive_connections=self.config.max_concurrency + 4,
            )
            transport = _SizeCappedTransport(pooled_transport(limits), self.config.max_response_bytes)
            http_client = httpx.AsyncClient(
                transport=transport, timeout=self._timeout(), follow_redirects=False
            )
            client = openai.AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self._api_key,
                max_retries=0,
                timeout=self._timeout(),
                http_client=http_client,
            )
            resources = _LoopResources(client, asyncio.Semaphore(self.config.max_concurrency))
            self._per_loop[loop] = resources
        return resources

    @asynccontextmanager
    async def _slot(self, resources: _LoopResources) -> AsyncIterator[Slot | _FixedSlot]:
        """A place for one HTTP attempt: the endpoint's adaptive limit, or this loop's semaphore."""
        if self.adaptive_limit is not None:
            async with self.adaptive_limit.slot() as slot:
                yield slot
        else:
            async with resources.semaphore:
                yield _FixedSlot()

    def _timeout(self) -> httpx.Timeout:
        timeout = self.config.timeout_s
        return httpx.Timeout(timeout, connect=min(timeout, 10.0))

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        loop = asyncio.get_running_loop()
        resources = self._per_loop.pop(loop, None)
        if resources is not None:
            await resources.openai.close()

    def forget(self, result: ChatResult) -> None:
        """Drop a cached answer the caller could not use, so the next attempt asks again."""
        if self.cache is not None and result.cache_key:
            self.cache.delete(result.cache_key)

    # --- the call -------------------------------------------------------------------------------
    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        use_cache: bool = True,
    ) -> ChatResult:
        """One chat completion. Raises ModelCallError (after retries, or a 4xx no retry changes),
        ModelOutputError (size cap), ConfigurationError (401/403/404: fatal),
        EndpointUnavailableError (this endpoint's circuit breaker is open)."""
        parameters: dict[str, Any] = {
            "temperature": self.config.temperature if temperature is None else temperature,
            "max_tokens": self.config.max_tokens if max_tokens is None else max_tokens,
        }
        if response_format is not None:
            parameters["response_format"] = response_format
        if tools:
            parameters["tools"] = tools
            if tool_choice is not None:
                parameters["tool_choice"] = tool_choice
        key = cache_key(self.config.model, messages, parameters)
        started = time.monotonic()
        if use_cache and self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                result = self._result(cached, key, started, attempts=0, cached=True)
                self._account(result.usage)
                return result
        breaker = breaker_for(self.endpoint)
        breaker.check()
        try:
            data, attempts = await self._call_with_retries(messages, parameters)
        except ModelCallError as error:
            if error.retryable:
                breaker.record_failure()
            raise
        except ConfigurationError as error:
            breaker.record_fatal(error)
            raise
        breaker.record_success()
        result = self._result(data, key, started, attempts=attempts, cached=False)
        if use_cache and self.cache is not None:
            self.cache.put(key, data)
        self._account(result.usage)
        return result

    def _account(self, usage: Usage) -> None:
        with self._usage_lock:
            self._usage = self._usage + usage
        meter = _ACTIVE_METER.get()
        if meter is not None:
            meter.add(self, usage)

    async def _call_with_retries(
        self, messages: list[dict[str, Any]], parameters: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        estimate = estimate_prompt_tokens(messages) + int(parameters["max_tokens"])
        policy = self.retry_policy
        made = 0

        async def attempt() -> dict[str, Any]:
            nonlocal made
            made += 1
            return await self._attempt(messages, parameters, estimate)

        def log(error: BaseException, attempts: int, delay: float) -> None:
            logger.warning(
                "model call to %s at %s failed (%s); retry %d of %d in %.2fs",
                self.config.model,
                self.endpoint,
                error,
                attempts,
                policy.attempts - 1,
                delay,
            )

        try:
            data = await run_with_retries_async(attempt, policy, sleep=self.sleep, rng=self.rng, on_retry=log)
        except TransientFailure as error:
            raise ModelCallError(
                f"model call to {self.config.model} at {self.endpoint} failed after "
                f"{policy.attempts} attempts: {error}",
                endpoint=self.endpoint,
            ) from None
        except RetryAfterTooLong as wish:
            raise ModelCallError(
                f"{self.endpoint} asked to retry after {wish.seconds:.0f}s "
                f"(more than {wish.cap_s:.0f}s): {wish.error}",
                endpoint=self.endpoint,
            ) from None
        return data, made

    async def _attempt(
        self, messages: list[dict[str, Any]], parameters: dict[str, Any], estimate: int
    ) -> dict[str, Any]:
        import openai

        waits = []
        if self._request_bucket is not None:
            waits.append(self._request_bucket.reserve(1))
        if self._token_bucket is not None:
            waits.append(self._token_bucket.reserve(estimate))
        if waits and max(waits) > 0:
            await self.sleep(max(waits))
        resources = self._resources()
        async with self._slot(resources) as slot:
            try:
                # The SDK's `post` (auth, error mapping, time-outs) without `create`'s per-call typed
                # transform of the messages, which costs milliseconds per call on long histories.
                response = await resources.openai.post(
                    "/chat/completions",
                    cast_to=httpx.Response,
                    body={"model": self.config.model, "messages": messages, **parameters},
                )
                body = response.content
            except openai.APIStatusError as error:
                status = error.status_code
                if status in OVERLOAD_STATUSES:
                    slot.overload()
                if status in TRANSIENT_STATUSES or status >= 500:
                    raise _Retryable(f"HTTP {status}", parse_retry_after(error.response.headers)) from None
                if status in (401, 403):
                    raise ConfigurationError(
                        f"{self.endpoint} refused the credentials (HTTP {status}); check "
                        f"{self.config.api_key_env or 'the API key variable'}",
                        endpoint=self.endpoint,
                    ) from None
                if status == 404:
                    raise ConfigurationError(
                        f"{self.endpoint} does not serve model {self.config.model!r} (HTTP 404: "
                        f"{_error_message(error)}); fix the model id or base_url",
                        endpoint=self.endpoint,
                    ) from None
                raise ModelCallError(
                    f"HTTP {status} from {self.endpoint}: {_error_message(error)}",
                    retryable=False,
                    endpoint=self.endpoint,
                ) from None
            except openai.APITimeoutError:
                slot.overload()
                raise _Retryable(f"time-out after {self.config.timeout_s}s") from None
            except openai.APIConnectionError as error:
                cause = error.__cause__
                raise _Retryable(
                    f"connection error ({type(cause).__name__ if cause else 'unknown'})"
                ) from None
            if len(body) > self.config.max_response_bytes:  # e.g. a compressed body that expanded
                raise ModelOutputError(
                    f"response larger than max_response_bytes={self.config.max_response_bytes}"
                )
            data = _parse_completion(body)
            # latency is compared with answers of like length: a long answer is not an overloaded server
            slot.ok(int((data.get("usage") or {}).get("completion_tokens") or 0))
        if self._token_bucket is not None:
            usage = data.get("usage") or {}
            actual = int(usage.get("total_tokens") or 0)
            if actual:
                self._token_bucket.refund(estimate - actual)
        return data

    def _result(
        self, data: dict[str, Any], key: str, started: float, *, attempts: int, cached: bool
    ) -> ChatResult:
        choice = data["choices"][0]
        message = choice["message"]
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        cost = 0.0
        if not cached:
            cost = (
                prompt_tokens * self.config.price_per_million_input
                + completion_tokens * self.config.price_per_million_output
            ) / 1_000_000
        calls = [
            NativeToolCall(
                id=str(call.get("id", "")),
                name=str((call.get("function") or {}).get("name", "")),
                arguments=str((call.get("function") or {}).get("arguments", "")),
            )
            for call in message.get("tool_calls") or []
        ]
        return ChatResult(
            content=message.get("content") or "",
            finish_reason=str(choice.get("finish_reason") or ""),
            tool_calls=calls,
            cached=cached,
            cache_key=key,
            raw=data,
            usage=Usage(
                calls=1,
                cached_calls=1 if cached else 0,
                attempts=attempts,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost,
                latency_s=time.monotonic() - started,
            ),
        )


def _error_message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)[:300]
    return type(error).__name__


def _parse_completion(body: bytes) -> dict[str, Any]:
    """The completion JSON, checked for the fields we read; anything else is a retryable fault."""
    try:
        data = json.loads(body)
    except ValueError:
        raise _Retryable(f"response body is not JSON ({len(body)} bytes)") from None
    try:
        message = data["choices"][0]["message"]
        if not isinstance(message, dict):
            raise TypeError("message is not an object")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
        if not isinstance(message.get("tool_calls") or [], list):
            raise TypeError("tool_calls is not a list")
    except (KeyError, IndexError, TypeError) as error:
        raise _Retryable(f"response body is not a chat completion ({error})") from None
    return data
