"""Reference-image validation and normalisation on hostile inputs, and the downloader end to end."""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import zlib
from collections.abc import Iterator

import imagehash
import pytest
from PIL import ExifTags, Image

from extractors.fetcher import SafeFetcher
from extractors.images import ReferenceImageDownloader, validate_and_normalize
from schemas.config import FetchConfig
from schemas.errors import FetchError, ImageValidationError, UnsafeURLError
from testkit.servers.hostile import HostileServer, serve_hostile


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 4 % 256, y * 5 % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    return image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny (wrong) body: a decompression bomb's
    shape without its weight. The size check must refuse it before any pixel is decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def test_png_is_normalised_and_hashed() -> None:
    source = gradient()
    result = validate_and_normalize(encode(source, "PNG"))
    assert (result.width, result.height, result.format) == (64, 48, "PNG")
    decoded = Image.open(io.BytesIO(result.data))
    assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "RGB", (64, 48))
    assert decoded.tobytes() == source.tobytes()  # lossless
    assert result.phash == str(imagehash.phash(source))
    assert len(result.phash) == 16 and int(result.phash, 16) >= 0


def test_jpeg_stays_jpeg_at_quality_90() -> None:
    result = validate_and_normalize(encode(gradient(), "JPEG", quality=95))
    assert result.format == "JPEG"
    assert Image.open(io.BytesIO(result.data)).format == "JPEG"


def test_rgba_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    result = validate_and_normalize(encode(image, "PNG"))
    assert Image.open(io.BytesIO(result.data)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_gps_is_stripped_and_orientation_applied() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.Base.Orientation] = 6  # rotate 90° clockwise when displayed
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    source = encode(gradient(64, 48), "JPEG", exif=exif)
    assert Image.open(io.BytesIO(source)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the input has GPS
    assert b"SpyCam" in source
    result = validate_and_normalize(source)
    output = Image.open(io.BytesIO(result.data))
    assert dict(output.getexif()) == {}
    assert b"SpyCam" not in result.data and b"Exif" not in result.data
    assert (result.width, result.height) == (48, 64)  # rotated upright before the EXIF was dropped


def test_animated_gif_becomes_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(source)).n_frames == 3
    result = validate_and_normalize(source)
    output = Image.open(io.BytesIO(result.data))
    assert (result.format, getattr(output, "n_frames", 1)) == ("PNG", 1)
    assert output.convert("RGB").getpixel((20, 20)) == (255, 0, 0)


def test_webp_is_accepted() -> None:
    assert validate_and_normalize(encode(gradient(), "WEBP")).format == "PNG"


def test_png_decompression_bomb_is_refused_from_the_header() -> None:
    with pytest.raises(
        ImageValidationError, match=r"decompression bomb refused: 6000x6000 = 36000000 pixels > 10000000"
    ):
        validate_and_normalize(png_with_header_size(6000, 6000), max_pixels=10_000_000)


def test_png_bomb_beyond_pillows_own_limit_is_refused() -> None:
    with pytest.raises(ImageValidationError, match="decompression bomb refused"):
        validate_and_normalize(png_with_header_size(100_000, 100_000), max_pixels=10**12)


def test_truncated_jpeg() -> None:
    data = encode(gradient(128, 128), "JPEG")
    with pytest.raises(ImageValidationError, match="^broken JPEG"):
        validate_and_normalize(data[: len(data) // 2])


def test_truncated_png() -> None:
    data = encode(gradient(128, 128), "PNG")
    with pytest.raises(ImageValidationError, match="^broken PNG"):
        validate_and_normalize(data[: len(data) - 200])


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><image href="http://169.254.169.254/latest"/></svg>',
        b'<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg>&x;</svg>',
        b'   \n<svg><use xlink:href="https://example.com/a.svg#x"/></svg>',
    ],
)
def test_svg_with_external_references_is_refused(svg: bytes) -> None:
    with pytest.raises(ImageValidationError, match="^SVG images are refused"):
        validate_and_normalize(svg)


def test_zero_byte_image() -> None:
    with pytest.raises(ImageValidationError, match=r"^empty image \(0 bytes\)$"):
        validate_and_normalize(b"")


def test_tiny_image() -> None:
    with pytest.raises(ImageValidationError, match=r"^image too small: 8x8 \(min side 32\)$"):
        validate_and_normalize(encode(Image.new("RGB", (8, 8)), "PNG"))


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_format_outside_the_allowlist(fmt: str) -> None:
    with pytest.raises(
        ImageValidationError, match=r"^not an image in an allowed format \(PNG, JPEG, WEBP, GIF\)$"
    ):
        validate_and_normalize(encode(gradient(), fmt))


def test_gif_can_be_refused_by_the_allowlist() -> None:
    with pytest.raises(ImageValidationError, match="not an image in an allowed format"):
        validate_and_normalize(encode(gradient(), "GIF"), formats=("PNG", "JPEG"))


def test_garbage_bytes() -> None:
    with pytest.raises(ImageValidationError, match="not an image"):
        validate_and_normalize(b"<html>not an image</html>")


class MemoryBlobs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        self.blobs[sha256] = data
        return sha256

    def read(self, sha256: str) -> bytes:
        return self.blobs[sha256]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    server, _ = serve_hostile()
    server.files.update(
        {
            "photo": encode(gradient(), "JPEG"),
            "empty": b"",
            "truncated": encode(gradient(128, 128), "JPEG")[:500],
            "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><image href="http://10.0.0.1/x"/></svg>',
        }
    )
    yield server
    server.shutdown()
    server.server_close()


def download(server: HostileServer, url: str, blobs: MemoryBlobs):
    async def run():
        config = FetchConfig(allow_hosts=[f"127.0.0.1:{server.server_address[1]}"], timeout_s=5)
        async with SafeFetcher(config) as fetcher:
            return await ReferenceImageDownloader(fetcher, blobs).download(url)

    return asyncio.run(run())


@pytest.mark.slow
def test_downloader_stores_the_normalised_image(hostile: HostileServer) -> None:
    blobs = MemoryBlobs()
    url = hostile.base_url + "/bytes?type=image/jpeg&file=photo"
    image = download(hostile, url, blobs)
    assert (image.width, image.height, image.format, image.source_url) == (64, 48, "JPEG", url)
    stored = blobs.read(image.sha256)
    assert hashlib.sha256(stored).hexdigest() == image.sha256
    assert image.phash == str(imagehash.phash(Image.open(io.BytesIO(stored))))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("file", "content_type", "error", "message"),
    [
        ("empty", "image/png", ImageValidationError, "empty image"),
        ("truncated", "image/jpeg", ImageValidationError, "broken JPEG"),
        ("svg", "image/svg+xml", ImageValidationError, "SVG images are refused"),
        ("photo", "text/html", FetchError, "content type 'text/html' not accepted"),
    ],
)
def test_downloader_errors(
    hostile: HostileServer, file: str, content_type: str, error: type, message: str
) -> None:
    blobs = MemoryBlobs()
    with pytest.raises(error, match=message):
        download(hostile, f"{hostile.base_url}/bytes?type={content_type}&file={file}", blobs)
    assert blobs.blobs == {}


@pytest.mark.slow
def test_downloader_uses_the_guard(hostile: HostileServer) -> None:
    with pytest.raises(UnsafeURLError, match="^metadata_address"):
        download(hostile, "http://169.254.169.254/latest/meta-data/iam.png", MemoryBlobs())
