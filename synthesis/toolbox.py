"""Executes the model's tool calls against the search / browse / image-download backends.

Whatever the model writes, the result is a user message for the model: an invalid tool name or
malformed arguments become a `ToolError: ...` response (recorded as `ToolCall(ok=False)`), a failing
backend becomes a note, one image that fails to download is skipped with a note. Only unexpected
exceptions (bugs) propagate.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from extractors.html_extract import relevant_passages
from schemas.errors import GroundgenError, ToolError
from schemas.ids import content_id
from schemas.protocols import DownloadedImage, SearchHit, Tools
from schemas.rows import Image, Message, ReferenceImage, ToolCall
from synthesis.agent_protocol import (
    MAX_IMAGE_RESULTS,
    ImageRegistry,
    ImageResultEntry,
    ParsedToolCall,
    format_browse_result,
    format_image_results,
    format_search_results,
    format_tool_error,
    normalize_query,
)

DEFAULT_TOP_K = 5
BROWSE_MAX_CHARS = 3000
MODEL_IMAGE_PIXELS = 160_000  # images attached to a model turn are downscaled to about this many pixels


def blob_local_path(sha256: str) -> str:
    """The image's path relative to the work folder (the blob store's layout: blobs/ab/abcd...)."""
    return f"blobs/{sha256[:2]}/{sha256}"


def reference_image_row(image: DownloadedImage) -> Image:
    """The `images` row of a downloaded reference image (id shared by every trajectory that saw it)."""
    return Image(
        id=content_id("reference", image.sha256),
        kind="reference",
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        format=image.format,
        phash=image.phash,
        source_url=image.source_url,
    )


@dataclass
class EpisodeMemory:
    """What the tools remember within one trajectory: image ids and the queries already used."""

    registry: ImageRegistry = field(default_factory=ImageRegistry)
    seen_queries: set[str] = field(default_factory=set)


@dataclass
class ToolOutcome:
    message: Message  # the user turn carrying <tool_response>...</tool_response>
    record: ToolCall
    new_references: list[ReferenceImage] = field(default_factory=list)
    new_images: list[Image] = field(default_factory=list)
    repeated: bool = False  # rejected because it repeated an earlier query
    rejected: bool = False  # the call broke a rule (unknown tool, bad arguments, repeated query)


# --- argument validation ---------------------------------------------------------------------------


def _check_keys(arguments: dict[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - arguments.keys())
    if missing:
        raise ToolError(f"missing argument(s): {', '.join(missing)}")
    unexpected = sorted(arguments.keys() - required - optional)
    if unexpected:
        raise ToolError(f"unexpected argument(s): {', '.join(unexpected)}")


def _text(arguments: dict[str, Any], key: str) -> str:
    value = arguments[key]
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"{key} must be a non-empty string")
    return value.strip()


def _top_k(arguments: dict[str, Any], maximum: int = 10) -> int:
    value = arguments.get("top_k", DEFAULT_TOP_K)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ToolError(f"top_k must be an integer from 1 to {maximum}")
    return value


def _queries(arguments: dict[str, Any]) -> list[str]:
    value = arguments["queries"]
    if not isinstance(value, list) or not value or not all(isinstance(q, str) and q.strip() for q in value):
        raise ToolError("queries must be a non-empty list of non-empty strings")
    return [q.strip() for q in value]


# --- browse relevance ------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have how in is it its of on or that the this to was were what "
    "when where which who with".split()
)


def downscale_for_model(data: bytes, max_pixels: int = MODEL_IMAGE_PIXELS) -> bytes:
    """PNG bytes of the image, downscaled (aspect kept) to at most `max_pixels`: what a VLM turn attaches."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
        pixels = image.width * image.height
        if pixels > max_pixels:
            scale = (max_pixels / pixels) ** 0.5
            size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
            image = image.resize(size, PILImage.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()


# --- the toolbox -----------------------------------------------------------------------------------


class Toolbox:
    """Runs parsed tool calls against the backends in `tools` (search, browser, image downloader)."""

    def __init__(self, tools: Tools, blobs: Any = None, *, browse_max_chars: int = BROWSE_MAX_CHARS):
        self.tools = tools
        self.blobs = blobs  # BlobWriter: only needed for `model_image` (attachments for a VLM)
        self.browse_max_chars = browse_max_chars

    def model_image(self, reference: ReferenceImage) -> bytes:
        """The attachment a vision model sees for a reference image (downscaled PNG)."""
        if self.blobs is None:
            raise ValueError("Toolbox was built without a blob store")
        return downscale_for_model(self.blobs.read(reference.sha256))

    async def execute(self, call: ParsedToolCall, round: int, memory: EpisodeMemory) -> ToolOutcome:
        try:
            if call.error:
                raise ToolError(call.error)
            if call.name == "search":
                return await self._search(call, round, memory)
            if call.name == "image_search":
                return await self._image_search(call, round, memory)
            if call.name == "browse":
                return await self._browse(call, round, memory)
            raise ToolError(f"unknown tool {call.name!r}; the tools are search, image_search and browse")
        except ToolError as error:
            return ToolOutcome(
                message=Message(role="user", content=format_tool_error(str(error))),
                record=self._record(call, round, str(error)),
                repeated=getattr(error, "repeated", False),
                rejected=True,
            )

    @staticmethod
    def _record(call: ParsedToolCall, round: int, error: str = "") -> ToolCall:
        return ToolCall(
            round=round, name=call.name, arguments_json=call.arguments_json, ok=not error, error=error
        )

    @staticmethod
    def _repeated(message: str) -> ToolError:
        error = ToolError(message)
        error.repeated = True  # type: ignore[attr-defined]
        return error

    async def _search(self, call: ParsedToolCall, round: int, memory: EpisodeMemory) -> ToolOutcome:
        arguments = call.arguments or {}
        _check_keys(arguments, {"queries"}, {"top_k"})
        queries, top_k = _queries(arguments), _top_k(arguments)
        blocks: list[tuple[str, list[SearchHit]]] = []
        notes: list[str] = []
        failures: list[str] = []
        for query in queries:
            key = "search:" + normalize_query(query)
            if key in memory.seen_queries:
                notes.append(f'Skipped "{query}": this query was already used.')
                continue
            memory.seen_queries.add(key)
            try:
                hits = await self.tools.search.search(query, top_k)
            except GroundgenError as error:
                failures.append(f"{query}: {error}")
                notes.append(f'Search for "{query}" failed: {error}')
                continue
            blocks.append((query, list(hits)[:top_k]))
        if not blocks and not failures:
            raise self._repeated("every query was already used; search for something new or answer")
        message = Message(role="user", content=format_search_results(blocks, notes))
        return ToolOutcome(message=message, record=self._record(call, round, "; ".join(failures)))

    async def _image_search(self, call: ParsedToolCall, round: int, memory: EpisodeMemory) -> ToolOutcome:
        arguments = call.arguments or {}
        _check_keys(arguments, {"query"}, {"top_k"})
        query, top_k = _text(arguments, "query"), _top_k(arguments)
        key = "image_search:" + normalize_query(query)
        if key in memory.seen_queries:
            raise self._repeated(f'the image query "{query}" was already used; search for another subject')
        memory.seen_queries.add(key)
        try:
            hits = list(await self.tools.search.image_search(query, top_k))[: min(top_k, MAX_IMAGE_RESULTS)]
        except GroundgenError as error:
            message = Message(role="user", content=format_tool_error(f"image search failed: {error}"))
            return ToolOutcome(message=message, record=self._record(call, round, str(error)))
        entries: list[ImageResultEntry] = []
        notes: list[str] = []
        outcome_refs: list[ReferenceImage] = []
        outcome_images: list[Image] = []
        for hit in hits:
            try:
                downloaded = await self.tools.images.download(hit.url)
            except GroundgenError as error:
                notes.append(f"Skipped an image that could not be used ({hit.url}): {error}")
                continue
            reference, new = memory.registry.register(
                downloaded.sha256,
                url=hit.url,
                title=hit.title,
                page_url=hit.page_url,
                width=downloaded.width,
                height=downloaded.height,
            )
            entries.append(ImageResultEntry(reference, blob_local_path(downloaded.sha256), new))
            if new:
                outcome_refs.append(reference)
                outcome_images.append(reference_image_row(downloaded))
        content, attached = format_image_results(query, entries, notes)
        failure = "" if entries or not notes else "no image could be downloaded"
        return ToolOutcome(
            message=Message(role="user", content=content, image_ids=attached),
            record=self._record(call, round, failure),
            new_references=outcome_refs,
            new_images=outcome_images,
        )

    async def _browse(self, call: ParsedToolCall, round: int, memory: EpisodeMemory) -> ToolOutcome:
        arguments = call.arguments or {}
        _check_keys(arguments, {"url", "query"}, set())
        url, query = _text(arguments, "url"), _text(arguments, "query")
        if not url.startswith(("http://", "https://")):
            raise ToolError("url must start with http:// or https://")
        key = f"browse:{url} {normalize_query(query)}"
        if key in memory.seen_queries:
            raise self._repeated("this page was already read with this query")
        memory.seen_queries.add(key)
        try:
            page = await self.tools.browser.browse(url, query)
        except GroundgenError as error:
            message = Message(role="user", content=format_tool_error(f"could not read {url}: {error}"))
            return ToolOutcome(message=message, record=self._record(call, round, str(error)))
        # the browser selected passages for the query already; this caps what a fake or a live one gives
        content = relevant_passages(page.text, query, max_chars=self.browse_max_chars)
        message = Message(role="user", content=format_browse_result(url, query, content))
        return ToolOutcome(message=message, record=self._record(call, round))
