"""Reference images: validate untrusted bytes, strip metadata, normalise, hash; download them safely.

`validate_and_normalize` is the pure core. Order matters for safety:
1. refuse empty input and SVG (XML with possible external references; never rasterised here);
2. open with Pillow restricted to the allowed formats (no other decoder plugin ever sees the bytes) and
   check width x height against `max_pixels` from the header, *before* any pixel is decoded;
3. `verify()` the file structure, then decode the first frame (animations are reduced to it); a
   truncated file fails here;
4. apply the EXIF orientation, flatten transparency onto white, convert to RGB and re-encode from the
   pixels alone, so no EXIF (GPS included), XMP, ICC or text chunk survives.

Output format: JPEG sources become JPEG at quality 90 (photographs; PNG would make them 5-10x bigger),
every other format becomes PNG (lossless: diagrams, logos, screenshots, GIF/WEBP frames). pHash is
imagehash's 64-bit DCT hash of the stored (re-encoded) image, as 16 hex characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from extractors.image_cache import CachedImage, ImageCache, StoredImage
from extractors.page_cache import (
    DEFAULT_ERROR_TTL_S,
    DEFAULT_RETRY_TTL_S,
    error_ttl,
    rebuild_error,
    single_flight,
)
from schemas.errors import GroundgenError, ImageValidationError
from schemas.protocols import BlobWriter, DownloadedImage, Fetcher

DEFAULT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 32
JPEG_QUALITY = 90
IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes
    width: int
    height: int
    format: str  # "PNG" or "JPEG"
    phash: str  # 16 hex characters


def _looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head


def _sniff_format(data: bytes) -> str:
    """The format the magic bytes claim (for error messages when Pillow cannot even open the file)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"GIF8"):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return ""


def validate_and_normalize(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    formats: Iterable[str] = DEFAULT_FORMATS,
) -> NormalizedImage:
    """Validate untrusted image bytes and return them normalised. Raises ImageValidationError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    allowed = [f.upper() for f in formats if f.upper() != "SVG"]
    if not data:
        raise ImageValidationError("empty image (0 bytes)")
    if _looks_like_svg(data):
        raise ImageValidationError("SVG images are refused (vector/XML, may reference external resources)")
    source_format = _sniff_format(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=allowed) as probe:
                source_format = probe.format or source_format
                width, height = probe.size
                _check_size(width, height, max_pixels, min_side)
                probe.verify()
            with Image.open(io.BytesIO(data), formats=allowed) as image:
                image.seek(0)  # the first frame of an animation
                image.load()
                rgb = _to_rgb(ImageOps.exif_transpose(image) or image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageValidationError(f"decompression bomb refused: {error}") from error
        except UnidentifiedImageError as error:
            raise ImageValidationError(f"not an image in an allowed format ({', '.join(allowed)})") from error
        except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated/corrupt
            raise ImageValidationError(f"broken {source_format or 'image'}: {error}") from error
    _check_size(rgb.width, rgb.height, max_pixels, min_side)
    output_format = "JPEG" if source_format == "JPEG" else "PNG"
    buffer = io.BytesIO()
    if output_format == "JPEG":
        rgb.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        rgb.save(buffer, "PNG")  # zlib's default level: `optimize=True` cost ~5x the CPU for a few % of size
    encoded = buffer.getvalue()
    if output_format == "JPEG":  # hash what is stored, so a re-hash of the blob gives the same value
        with Image.open(io.BytesIO(encoded)) as stored:
            rgb = stored.convert("RGB")
    return NormalizedImage(encoded, rgb.width, rgb.height, output_format, perceptual_hash(rgb))


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageValidationError(
            f"decompression bomb refused: {width}x{height} = {width * height} pixels > {max_pixels}"
        )
    if min(width, height) < min_side:
        raise ImageValidationError(f"image too small: {width}x{height} (min side {min_side})")


def _to_rgb(image):  # PIL.Image.Image -> PIL.Image.Image
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def perceptual_hash(image) -> str:
    """64-bit DCT perceptual hash as 16 hex characters (imagehash.phash)."""
    import imagehash

    return str(imagehash.phash(image))


class ReferenceImageDownloader:
    """`ImageDownloader`: fetch through the safe fetcher, validate, normalise, store in the blob store.

    With an `ImageCache` (`extractors/image_cache.py`), each URL is fetched and normalised once per work
    directory, the same bytes under another URL are normalised once, and errors are remembered by the
    page cache's rules; concurrent downloads of one URL share one fetch."""

    def __init__(
        self,
        fetcher: Fetcher,
        blobs: BlobWriter,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int = DEFAULT_MIN_SIDE,
        formats: Iterable[str] = DEFAULT_FORMATS,
        cache: ImageCache | None = None,
        retry_ttl_s: float = DEFAULT_RETRY_TTL_S,
        error_ttl_s: float = DEFAULT_ERROR_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fetcher = fetcher
        self.blobs = blobs
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.formats = tuple(formats)
        self.cache = cache
        self.retry_ttl_s = retry_ttl_s
        self.error_ttl_s = error_ttl_s
        self.clock = clock
        self.fetches = 0  # fetches made (cache misses)
        self.normalizations = 0  # images decoded and re-encoded (content misses)
        self._in_flight: dict[str, asyncio.Future[StoredImage]] = {}

    async def download(self, url: str) -> DownloadedImage:
        if self.cache is None:
            stored = await self._fetch_and_store(url)
        else:
            stored = await self._cached(url, self.cache)
        return DownloadedImage(
            sha256=stored.sha256,
            width=stored.width,
            height=stored.height,
            format=stored.format,
            phash=stored.phash,
            source_url=url,
        )

    async def _cached(self, url: str, cache: ImageCache) -> StoredImage:
        entry = await asyncio.to_thread(cache.get_url, url)
        if entry is not None:
            if entry.error_class:
                raise rebuild_error(entry.error_class, entry.error, entry.error_status, entry.retryable)
            if entry.image is not None and self.blobs.exists(entry.image.sha256):
                return entry.image
        return await single_flight(self._in_flight, url, lambda: self._fetch_and_remember(url, cache))

    async def _fetch_and_remember(self, url: str, cache: ImageCache) -> StoredImage:
        """Fetch and store the image, and remember the outcome (an error by the page cache's rules)."""
        try:
            stored = await self._fetch_and_store(url)
        except GroundgenError as error:
            now = self.clock()
            ttl = error_ttl(error, self.retry_ttl_s, self.error_ttl_s)
            if ttl > 0:
                await asyncio.to_thread(cache.put_url, CachedImage.from_error(url, error, now, now + ttl))
            raise
        await asyncio.to_thread(cache.put_url, CachedImage(url, self.clock(), None, stored))
        return stored

    async def _fetch_and_store(self, url: str) -> StoredImage:
        self.fetches += 1
        result = await self.fetcher.fetch(url, accept=IMAGE_CONTENT_TYPES)
        raw_sha256 = hashlib.sha256(result.body).hexdigest()
        if self.cache is not None:
            known = await asyncio.to_thread(self.cache.get_content, raw_sha256)
            if known is not None and self.blobs.exists(known.sha256):
                return known
        self.normalizations += 1
        normalized = await asyncio.to_thread(
            validate_and_normalize,
            result.body,
            max_pixels=self.max_pixels,
            min_side=self.min_side,
            formats=self.formats,
        )
        sha256 = await asyncio.to_thread(self.blobs.put, normalized.data)
        stored = StoredImage(sha256, normalized.width, normalized.height, normalized.format, normalized.phash)
        if self.cache is not None:
            await asyncio.to_thread(self.cache.put_content, raw_sha256, stored)
        return stored
