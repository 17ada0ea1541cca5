"""In-memory backends implementing schemas.protocols, for the synthesis tests (no network)."""

from __future__ import annotations

import hashlib
import io
import re

from schemas.errors import FetchError, ImageValidationError
from schemas.ids import sha256_bytes
from schemas.protocols import DownloadedImage, ImageHit, Page, SearchHit, Tools

DOCUMENTS = [
    {
        "title": "Eiffel Tower",
        "url": "http://corpus.test/wiki/Eiffel_Tower",
        "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.\n"
        "It was designed by the company of Gustave Eiffel and built from 1887 to 1889.\n"
        "The tower is 330 metres tall and was the tallest man-made structure until 1930.\n"
        "Tickets are sold at the base.",
        "images": ["http://corpus.test/img/eiffel-1.png", "http://corpus.test/img/eiffel-2.png"],
    },
    {
        "title": "Gustave Eiffel",
        "url": "http://corpus.test/wiki/Gustave_Eiffel",
        "text": "Gustave Eiffel was a French civil engineer born in 1832 in Dijon.\n"
        "His company built the Eiffel Tower for the 1889 World's Fair.",
        "images": ["http://corpus.test/img/gustave.png", "http://corpus.test/img/broken.png"],
    },
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class FakeSearch:
    def __init__(self, documents=DOCUMENTS):
        self.documents = documents
        self.queries: list[str] = []

    def _ranked(self, query: str):
        scored = [
            (10 * len(_words(query) & _words(d["title"])) + len(_words(query) & _words(d["text"])), i, d)
            for i, d in enumerate(self.documents)
        ]
        return [d for score, _, d in sorted(scored, key=lambda s: (-s[0], s[1])) if score]

    async def search(self, query: str, top_k: int) -> list[SearchHit]:
        self.queries.append(query)
        if query == "fail":
            raise FetchError("search backend down", status=503, retryable=True)
        return [
            SearchHit(title=d["title"], url=d["url"], snippet=d["text"].split("\n")[0])
            for d in self._ranked(query)
        ][:top_k]

    async def image_search(self, query: str, top_k: int) -> list[ImageHit]:
        hits = []
        for d in self._ranked(query)[:1]:
            for url in d["images"]:
                hits.append(ImageHit(url=url, title=f"{d['title']} photo", page_url=d["url"]))
        return hits[:top_k]


class FakeBrowser:
    def __init__(self, documents=DOCUMENTS):
        self.pages = {d["url"]: d for d in documents}

    async def browse(self, url: str, query: str) -> Page:
        if url not in self.pages:
            raise FetchError(f"HTTP 404 for {url}", status=404)
        d = self.pages[url]
        return Page(url=url, final_url=url, status=200, title=d["title"], text=d["text"])


class MemoryBlobs:
    def __init__(self):
        self.data: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        self.data[digest] = data
        return digest

    def read(self, sha256: str) -> bytes:
        if sha256 not in self.data:
            raise FileNotFoundError(f"blob {sha256} is missing")
        return self.data[sha256]


def png_for(seed: str, size: int = 48) -> bytes:
    from PIL import Image

    digest = hashlib.sha256(seed.encode()).digest()
    image = Image.new("RGB", (size, size), tuple(digest[:3]))
    for x in range(0, size, 8):
        for y in range(0, size, 8):
            image.putpixel((x, y), tuple(digest[3:6]))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class FakeDownloader:
    """Makes a PNG per URL (the same for the '-copy' twin, to test repeated images); 'broken' fails."""

    def __init__(self, blobs: MemoryBlobs):
        self.blobs = blobs

    async def download(self, url: str) -> DownloadedImage:
        if "broken" in url:
            raise ImageValidationError("image is undecodable")
        data = png_for(url.replace("-copy", ""))
        digest = self.blobs.put(data)
        return DownloadedImage(
            sha256=digest, width=48, height=48, format="PNG", phash="0" * 16, source_url=url
        )


def fake_tools(blobs: MemoryBlobs | None = None) -> Tools:
    blobs = blobs or MemoryBlobs()
    return Tools(search=FakeSearch(), browser=FakeBrowser(), images=FakeDownloader(blobs))
