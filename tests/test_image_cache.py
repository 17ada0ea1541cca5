"""Reference images fetched and normalised once per work directory (extractors/image_cache.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from extractors.image_cache import ImageCache
from extractors.images import ReferenceImageDownloader
from schemas.errors import FetchError, ImageValidationError, UnsafeURLError
from schemas.protocols import FetchResult
from tests.test_images import encode, gradient
from warehouse.blobs import BlobStore

PHOTO = encode(gradient(), "JPEG")
DIAGRAM = encode(gradient(80, 60), "PNG")


class CountingFetcher:
    """Serves fixed bodies by URL (or raises the error given for it) and counts the fetches."""

    def __init__(self, bodies: dict[str, bytes | Exception]):
        self.bodies = bodies
        self.calls: list[str] = []

    async def fetch(self, url: str, *, accept: tuple[str, ...] = ()) -> FetchResult:
        self.calls.append(url)
        await asyncio.sleep(0)
        body = self.bodies[url]
        if isinstance(body, Exception):
            raise body
        return FetchResult(url=url, final_url=url, status=200, content_type="image/jpeg", body=body)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def downloader(
    tmp_path: Path, fetcher: CountingFetcher, clock: Clock | None = None
) -> ReferenceImageDownloader:
    return ReferenceImageDownloader(
        fetcher,
        BlobStore(tmp_path / "blobs"),
        cache=ImageCache(tmp_path / "cache" / "images.sqlite", clock=clock or Clock()),
        clock=clock or Clock(),
    )


def test_a_url_is_fetched_and_normalised_once_across_downloaders(tmp_path: Path) -> None:
    fetcher = CountingFetcher({"http://a/photo.jpg": PHOTO})
    first = downloader(tmp_path, fetcher)
    image = asyncio.run(first.download("http://a/photo.jpg"))
    again = downloader(tmp_path, fetcher)  # the next batch, or the next run: same work dir
    assert asyncio.run(again.download("http://a/photo.jpg")) == image
    assert fetcher.calls == ["http://a/photo.jpg"] and again.normalizations == 0


def test_the_same_bytes_under_another_url_are_fetched_but_not_normalised_again(tmp_path: Path) -> None:
    fetcher = CountingFetcher({"http://a/1.jpg": PHOTO, "http://b/copy.jpg": PHOTO})
    images = downloader(tmp_path, fetcher)
    first = asyncio.run(images.download("http://a/1.jpg"))
    second = asyncio.run(images.download("http://b/copy.jpg"))
    assert second.sha256 == first.sha256 and second.source_url == "http://b/copy.jpg"
    assert len(fetcher.calls) == 2 and images.normalizations == 1


def test_concurrent_downloads_of_one_url_share_one_fetch(tmp_path: Path) -> None:
    fetcher = CountingFetcher({"http://a/d.png": DIAGRAM})
    images = downloader(tmp_path, fetcher)

    async def many():
        return await asyncio.gather(*(images.download("http://a/d.png") for _ in range(8)))

    results = asyncio.run(many())
    assert len({r.sha256 for r in results}) == 1 and fetcher.calls == ["http://a/d.png"]


def test_errors_follow_the_page_cache_rules(tmp_path: Path) -> None:
    clock = Clock()
    fetcher = CountingFetcher(
        {
            "http://a/broken.jpg": PHOTO[:300],
            "http://a/busy.jpg": FetchError("HTTP 503", status=503, retryable=True),
            "http://10.0.0.1/x.jpg": UnsafeURLError("private_address: 10.0.0.1"),
        }
    )
    images = downloader(tmp_path, fetcher, clock)
    for _ in range(2):
        with pytest.raises(ImageValidationError):
            asyncio.run(images.download("http://a/broken.jpg"))
        with pytest.raises(FetchError, match="503"):
            asyncio.run(images.download("http://a/busy.jpg"))
        with pytest.raises(UnsafeURLError):
            asyncio.run(images.download("http://10.0.0.1/x.jpg"))
    # the broken image and the 503 were served from the cache the second time; the guard re-checks
    assert fetcher.calls.count("http://a/broken.jpg") == 1
    assert fetcher.calls.count("http://a/busy.jpg") == 1
    assert fetcher.calls.count("http://10.0.0.1/x.jpg") == 2
    clock.now += 121  # past the short retry TTL, within the day a permanent error is kept
    fetcher.bodies["http://a/busy.jpg"] = PHOTO
    assert asyncio.run(images.download("http://a/busy.jpg")).format == "JPEG"
    with pytest.raises(ImageValidationError):
        asyncio.run(images.download("http://a/broken.jpg"))
    assert fetcher.calls.count("http://a/broken.jpg") == 1


def test_a_hit_whose_blob_is_gone_is_fetched_again(tmp_path: Path) -> None:
    fetcher = CountingFetcher({"http://a/photo.jpg": PHOTO})
    images = downloader(tmp_path, fetcher)
    image = asyncio.run(images.download("http://a/photo.jpg"))
    BlobStore(tmp_path / "blobs").path(image.sha256).unlink()
    assert asyncio.run(images.download("http://a/photo.jpg")) == image
    assert len(fetcher.calls) == 2 and images.normalizations == 2
