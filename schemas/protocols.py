"""Backend protocols: one per role in docs/ARCHITECTURE.md's backend table, and the values they exchange.

Stage cores are written against these; offline and real backends implement them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import RowError
from schemas.rows import Evidence, Image, Judgement, Prompt, Topic, Trajectory


class Value(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchHit(Value):
    title: str
    url: str
    snippet: str = ""


class ImageHit(Value):
    url: str
    title: str = ""
    page_url: str = ""
    thumbnail_url: str = ""
    width: int = 0
    height: int = 0


class PageImage(Value):
    url: str
    alt: str = ""
    caption: str = ""


class Page(Value):
    """A fetched page reduced to clean text (headings, lists and tables kept as text)."""

    url: str
    final_url: str
    status: int
    title: str = ""
    text: str
    images: list[PageImage] = Field(default_factory=list)


class DownloadedImage(Value):
    """A validated, re-encoded image (RGB PNG or JPEG, metadata stripped), already in the blob store."""

    sha256: str
    width: int
    height: int
    format: str
    phash: str
    source_url: str


class FetchResult(Value):
    """A response body fetched by the safe fetcher (size-capped, decompressed, redirects followed)."""

    url: str
    final_url: str
    status: int
    content_type: str = ""
    charset: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body: bytes = b""


class Fetcher(Protocol):
    async def fetch(self, url: str, *, accept: tuple[str, ...] = ()) -> FetchResult:
        """GET a URL through the URL guard. `accept`: allowed content-type prefixes (empty = any).
        Raises UnsafeURLError or FetchError."""
        ...


class BlobWriter(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes atomically by sha256 and return the sha256."""
        ...

    def read(self, sha256: str) -> bytes: ...

    def exists(self, sha256: str) -> bool: ...


class ModelClient(Protocol):
    """A model endpoint's client as usage metering sees it (`synthesis/llm_client.py` `LLMClient`): a
    `UsageMeter` records what it spends while the meter is active, and the run's record adds the
    endpoint's concurrency level to that role's usage."""

    def concurrency_summary(self) -> dict[str, float]: ...


class Metered(Protocol):
    """A backend that calls models names their clients, so a batch task can record usage per role."""

    def model_clients(self) -> Mapping[str, ModelClient]:
        """The model clients this backend calls, by the role their usage is recorded under
        (`{}` for a backend that calls no model, such as the offline defaults)."""
        ...


class TopicSource(Protocol):
    name: str

    def topics(self) -> Iterator[Topic]: ...


@runtime_checkable
class SearchBackend(Protocol):
    async def search(self, query: str, top_k: int) -> list[SearchHit]: ...

    async def image_search(self, query: str, top_k: int) -> list[ImageHit]: ...


class Browser(Protocol):
    async def browse(self, url: str, query: str) -> Page: ...


class ImageDownloader(Protocol):
    async def download(self, url: str) -> DownloadedImage: ...


@dataclass(frozen=True)
class Tools:
    """What a teacher may use: the three Gen-Searcher tools' backends."""

    search: SearchBackend
    browser: Browser
    images: ImageDownloader


class PromptWriter(Metered, Protocol):
    fingerprint: str

    async def write(self, topic: Topic, linked: list[Topic]) -> list[Prompt]: ...


class TeacherResult(Value):
    trajectory: Trajectory
    reference_images: list[Image] = Field(default_factory=list)


class Teacher(Metered, Protocol):
    fingerprint: str

    async def run(self, prompt: Prompt, tools: Tools) -> TeacherResult: ...


class PaintRequest(Value):
    trajectory: Trajectory
    prompt: Prompt
    reference_sha256: list[str] = Field(default_factory=list)  # chosen references, in order


class Painter(Protocol):
    fingerprint: str

    def paint(self, requests: list[PaintRequest]) -> tuple[list[Image], list[RowError]]: ...

    def concurrency_summary(self) -> dict[str, float]:
        """The painter endpoint's concurrency level for the run's record (`{}` for a local pipeline)."""
        ...


class JudgeInput(Value):
    prompt: Prompt
    trajectory: Trajectory
    image: Image
    subjects: list[str] = Field(default_factory=list)  # titles of the prompt's topics, main one first


class Judge(Metered, Protocol):
    fingerprint: str

    async def judge(self, item: JudgeInput) -> Judgement: ...


class ClaimExtractor(Metered, Protocol):
    """Evidence rows from a model's claims about a gen_prompt (`[llm.claims]`; without it the judge
    stage uses the deterministic fact extractor)."""

    fingerprint: str

    async def evidence(
        self, trajectory: Trajectory, task_prompt: str, subjects: Sequence[str]
    ) -> list[Evidence]: ...


class Corpus(Protocol):
    """The offline knowledge: articles and their links, searchable (`extractors/offline.py`)."""

    def linked_topics(self, topic: Topic) -> list[Topic]: ...

    @property
    def search(self) -> SearchBackend: ...


class Server(Protocol):
    """A local HTTP server running on a thread of this process (the offline corpus server)."""

    @property
    def port(self) -> int: ...

    def close(self) -> None: ...
