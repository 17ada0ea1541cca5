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
import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.errors import ImageValidationError
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
        rgb.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        rgb.save(buffer, "PNG", optimize=True)
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
    """`ImageDownloader`: fetch through the safe fetcher, validate, normalise, store in the blob store."""

    def __init__(
        self,
        fetcher: Fetcher,
        blobs: BlobWriter,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_side: int = DEFAULT_MIN_SIDE,
        formats: Iterable[str] = DEFAULT_FORMATS,
    ) -> None:
        self.fetcher = fetcher
        self.blobs = blobs
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.formats = tuple(formats)

    async def download(self, url: str) -> DownloadedImage:
        result = await self.fetcher.fetch(url, accept=IMAGE_CONTENT_TYPES)
        normalized = await asyncio.to_thread(
            validate_and_normalize,
            result.body,
            max_pixels=self.max_pixels,
            min_side=self.min_side,
            formats=self.formats,
        )
        sha256 = await asyncio.to_thread(self.blobs.put, normalized.data)
        return DownloadedImage(
            sha256=sha256,
            width=normalized.width,
            height=normalized.height,
            format=normalized.format,
            phash=normalized.phash,
            source_url=url,
        )
