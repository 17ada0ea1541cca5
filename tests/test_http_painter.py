"""The OpenAI-images-compatible painter against a scripted images server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from schemas.config import Config, PainterConfig
from schemas.errors import ConfigurationError
from schemas.ids import content_id, sha256_bytes
from schemas.protocols import PaintRequest
from schemas.rows import Prompt, Trajectory
from synthesis.http_painter import HTTPPainter, decode_image_response
from synthesis.painter import painter_fingerprint, row_seed
from testkit.servers.images_server import Body, ImagesServer, Picture, Status, generated_png
from testkit.synthesis_fakes import MemoryBlobs, png_for

pytestmark = pytest.mark.slow  # starts a server

SECRET = "sk-images-test-secret-0123456789"
KEY_ENV = "GROUNDGEN_TEST_IMAGES_KEY"
PROMPT = Prompt(id="p", topic_ids=["t"], category="art", difficulty="easy", prompt="a poster", writer="w")


def request(index: int, references: list[str] = (), gen_prompt: str | None = None) -> PaintRequest:
    trajectory = Trajectory(
        id=f"trajectory-{index}",
        prompt_id="p",
        teacher="teacher",
        messages=[],
        ending="answer",
        gen_prompt=f"a museum poster number {index}" if gen_prompt is None else gen_prompt,
    )
    return PaintRequest(trajectory=trajectory, prompt=PROMPT, reference_sha256=list(references))


@pytest.fixture
def server():
    with ImagesServer(api_key=SECRET) as running:
        yield running


@pytest.fixture
def sleeps():
    return []


def make(
    server: ImagesServer, sleeps: list[float], monkeypatch, **options
) -> tuple[HTTPPainter, MemoryBlobs]:
    monkeypatch.setenv(KEY_ENV, SECRET)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    config = PainterConfig(
        kind="http", model="img-model", base_url=server.base_url, api_key_env=KEY_ENV, **options
    )
    blobs = MemoryBlobs()
    return HTTPPainter(config, blobs, fingerprint=painter_fingerprint(config), sleep=sleep), blobs


def test_generations_success_rows_and_request(server, sleeps, monkeypatch):
    painter, blobs = make(server, sleeps, monkeypatch, seed=5, revision="r1", width=64, height=48)
    images, errors = painter.paint([request(0), request(1)])
    assert errors == [] and [image.trajectory_id for image in images] == ["trajectory-0", "trajectory-1"]
    sent = sorted(server.requests, key=lambda r: r.fields["prompt"])
    assert [r.path for r in sent] == ["/v1/images/generations"] * 2
    assert sent[0].fields == {
        "model": "img-model",
        "prompt": "a museum poster number 0",
        "n": 1,
        "size": "64x48",
        "response_format": "b64_json",
        "seed": row_seed(5, "trajectory-0"),
    }
    assert sent[0].headers["authorization"] == f"Bearer {SECRET}"
    first = images[0]
    expected = generated_png(f"a museum poster number 0|{row_seed(5, 'trajectory-0')}|")
    assert blobs.read(first.sha256)[:8] == b"\x89PNG\r\n\x1a\n"
    assert (first.width, first.height, first.format, first.kind) == (64, 64, "PNG", "ground_truth")
    assert (
        first.id == content_id("trajectory-0", painter.fingerprint) and first.painter == painter.fingerprint
    )
    assert (first.model, first.seed, first.steps, first.guidance) == (
        "img-model@r1",
        row_seed(5, "trajectory-0"),
        3,
        4.0,
    )
    assert first.elapsed_s >= 0 and len(first.phash) == 16
    # the stored blob is the normalised (metadata-free, re-encoded) form of what the server sent
    from extractors.images import validate_and_normalize

    assert first.sha256 == sha256_bytes(validate_and_normalize(expected, min_side=8).data)
    assert sleeps == []


def test_429_with_retry_after_then_success(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch)
    server.reply(Status(429, retry_after="7"), Status(503))
    images, errors = painter.paint([request(0)])
    assert errors == [] and len(images) == 1
    assert len(server.requests) == 3
    assert sleeps[0] == 7.0 and len(sleeps) == 2 and 0 <= sleeps[1] <= 2.0  # jittered backoff


def test_500_exhausted_is_a_row_error_and_other_rows_go_on(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch, max_retries=2, max_concurrency=1)
    server.reply(Status(500, message="overloaded"), Status(500), Status(500, message="still overloaded"))
    images, errors = painter.paint([request(0), request(1)])
    assert [image.trajectory_id for image in images] == ["trajectory-1"]
    assert [(e.row_id, e.error_class) for e in errors] == [("trajectory-0", "PainterError")]
    assert errors[0].message == "images API: HTTP 500 after 3 attempts: still overloaded"
    assert len(sleeps) == 2


def test_400_is_not_retried(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch)
    server.reply(Status(400, message="content policy"))
    images, errors = painter.paint([request(0)])
    assert images == [] and errors[0].message == "images API: HTTP 400: content policy"
    assert len(server.requests) == 1 and sleeps == []


def test_broken_images_are_row_errors(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch, max_concurrency=1)
    good = png_for("red", 64)
    server.reply(
        Picture(good[: len(good) // 2]),  # truncated PNG
        Picture(b"not an image at all"),
        Body({"data": [{"url": "http://127.0.0.1/x.png"}]}),
        Body({"data": [{"b64_json": "***not base64***"}]}),
    )
    images, errors = painter.paint([request(i) for i in range(5)])
    assert [image.trajectory_id for image in images] == ["trajectory-4"]
    assert [e.error_class for e in errors] == ["PainterError"] * 4
    messages = [e.message for e in errors]
    assert messages[0].startswith("images API returned an unusable image: broken PNG")
    assert messages[1].startswith("images API returned an unusable image: not an image")
    assert "URL" in messages[2] and "invalid base64" in messages[3]


def test_edits_send_the_chosen_references(server, sleeps, monkeypatch):
    painter, blobs = make(server, sleeps, monkeypatch, pipeline="edit", max_references=2)
    red, blue, green = (blobs.put(png_for(color, 64)) for color in ("red", "blue", "green"))
    images, errors = painter.paint([request(0, [red, blue, green]), request(1)])
    assert errors == [] and len(images) == 2
    by_path = {r.path: r for r in server.requests}
    edit = by_path["/v1/images/edits"]
    assert [(name, filename) for name, filename, _ in edit.files] == [
        ("image[]", "reference-1.png"),
        ("image[]", "reference-2.png"),
    ]
    assert [data for _, _, data in edit.files] == [blobs.read(red), blobs.read(blue)]
    assert edit.fields["prompt"] == "a museum poster number 0" and edit.fields["n"] == "1"
    assert edit.fields["seed"] == str(row_seed(0, "trajectory-0"))
    assert by_path["/v1/images/generations"].fields["prompt"] == "a museum poster number 1"

    img2img, _ = make(server, sleeps, monkeypatch, pipeline="img2img")
    img2img.blobs = blobs
    server.requests.clear()
    img2img.paint([request(0, [red, blue])])
    assert [(name, data) for name, _, data in server.requests[0].files] == [("image", blobs.read(red))]


def test_references_are_ignored_unless_edits_are_asked_for(server, sleeps, monkeypatch):
    painter, blobs = make(server, sleeps, monkeypatch)
    red = blobs.put(png_for("red", 64))
    images, errors = painter.paint([request(0, [red])])
    assert errors == [] and [r.path for r in server.requests] == ["/v1/images/generations"]


def test_missing_reference_and_empty_prompt_are_row_errors(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch, pipeline="edit")
    images, errors = painter.paint([request(0, ["f" * 64]), request(1, gen_prompt=" ")])
    assert images == [] and server.requests == []
    assert [(e.row_id, e.error_class) for e in errors] == [
        ("trajectory-0", "PainterError"),
        ("trajectory-1", "PainterError"),
    ]


def test_no_seed_option_and_size_override(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch, send_seed=False, size="1024x1024", response_format="")
    images, _ = painter.paint([request(0)])
    assert server.requests[0].fields == {
        "model": "img-model",
        "prompt": "a museum poster number 0",
        "n": 1,
        "size": "1024x1024",
    }
    assert images[0].seed == 0


def test_the_key_never_reaches_the_logs(server, sleeps, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    painter, _ = make(server, sleeps, monkeypatch, max_retries=1)
    server.reply(
        Status(429, retry_after="0", message=f"key {SECRET} is rate limited"), Status(500, message=SECRET)
    )
    images, errors = painter.paint([request(0)])
    assert images == [] and SECRET not in errors[0].message and "***" in errors[0].message
    assert len(caplog.records) > 0 and SECRET not in caplog.text


def test_unreachable_server_is_retried_then_a_row_error(sleeps, monkeypatch):
    from flows.prefect_server import free_port

    monkeypatch.setenv(KEY_ENV, SECRET)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    config = PainterConfig(
        kind="http",
        model="m",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key_env=KEY_ENV,
        max_retries=1,
    )
    images, errors = HTTPPainter(config, MemoryBlobs(), sleep=sleep).paint([request(0)])
    assert (
        images == [] and errors[0].message == "images API: ConnectError after 2 attempts" and len(sleeps) == 1
    )


def test_paint_works_inside_a_running_event_loop(server, sleeps, monkeypatch):
    painter, _ = make(server, sleeps, monkeypatch)

    async def inside() -> int:
        images, _ = painter.paint([request(0)])
        return len(images)

    assert asyncio.run(inside()) == 1


def test_configuration_errors(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="base_url"):
        HTTPPainter(PainterConfig(kind="http", model="m"), MemoryBlobs())
    with pytest.raises(ConfigurationError, match=KEY_ENV):
        HTTPPainter(
            PainterConfig(kind="http", model="m", base_url="http://127.0.0.1:1", api_key_env=KEY_ENV),
            MemoryBlobs(),
        )


def test_decode_image_response():
    encoded = base64.b64encode(b"\x89PNGdata").decode()
    assert decode_image_response(f'{{"data": [{{"b64_json": "{encoded}"}}]}}'.encode()) == b"\x89PNGdata"


def test_new_painter_fields_keep_old_fingerprints():
    """New optional PainterConfig fields are left out of dumps at their defaults: ids do not move."""
    assert "pipeline" not in PainterConfig().model_dump()
    assert "pipeline" in PainterConfig(pipeline="edit").model_dump()
    assert painter_fingerprint(PainterConfig()) == Config().painter_fingerprint()
    assert Config().painter_fingerprint() == "63ddf65507670cbda92ec1f5"  # as before the new fields
    assert Config().fingerprint() == "13ccf8d6f62d95de6bd5c161"
    # runtime-only settings never change what an image is
    fast = PainterConfig(timeout_s=10, max_concurrency=32, max_retries=0, batch_size=9)
    assert painter_fingerprint(fast) == painter_fingerprint(PainterConfig())
    assert Config(painter=fast).painter_fingerprint() == Config().painter_fingerprint()
    assert painter_fingerprint(PainterConfig(pipeline="edit")) != painter_fingerprint(PainterConfig())
