"""The tiny offline pipeline and the diffusers painter (CPU, 64x64, 3 steps)."""

from __future__ import annotations

import os
import time

import pytest

from schemas.config import Config, PainterConfig
from schemas.errors import ConfigurationError
from schemas.ids import content_id
from schemas.protocols import PaintRequest
from schemas.rows import Prompt, Trajectory
from synthesis.painter import DiffusersPainter, painter_fingerprint, row_seed
from synthesis.tiny_pipeline import build_tiny_pipeline, is_complete
from testkit.synthesis_fakes import MemoryBlobs, png_for

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


def test_build_is_complete_and_reused(tiny_model):
    assert is_complete(tiny_model)
    stamp = (tiny_model / "model_index.json").stat().st_mtime_ns
    assert build_tiny_pipeline(tiny_model) == tiny_model
    assert (tiny_model / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in tiny_model.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_build_is_deterministic(tiny_model, tmp_path):
    other = build_tiny_pipeline(tmp_path / "again")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (other / weights).read_bytes() == (tiny_model / weights).read_bytes()


def test_paint_writes_png_rows_and_is_byte_identical_after_reload(tiny_model):
    blobs = MemoryBlobs()
    config = PainterConfig(seed=7)
    images, errors = DiffusersPainter(config, tiny_model, blobs=blobs).paint([request(0), request(1)])
    assert errors == []
    first = images[0]
    fingerprint = painter_fingerprint(config)
    assert fingerprint == Config(painter=config).painter_fingerprint()
    assert first.id == content_id("trajectory-0", fingerprint)
    assert (first.kind, first.width, first.height, first.format, first.steps) == (
        "ground_truth",
        64,
        64,
        "PNG",
        3,
    )
    assert first.seed == row_seed(7, "trajectory-0") and first.painter == fingerprint
    assert first.model == "groundgen-tiny-sd" and first.guidance == 4.0 and first.elapsed_s > 0
    assert len(first.phash) == 16 and int(first.phash, 16) >= 0
    assert blobs.read(first.sha256)[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[0].sha256 != images[1].sha256

    reloaded, _ = DiffusersPainter(config, tiny_model, blobs=MemoryBlobs()).paint([request(1), request(0)])
    assert [image.sha256 for image in reloaded] == [images[1].sha256, images[0].sha256]


def test_exact_mode_does_not_depend_on_batch_composition(tiny_model):
    config = PainterConfig(batch_size=3)
    painter = DiffusersPainter(config, tiny_model, blobs=MemoryBlobs())
    alone, _ = painter.paint([request(2)])
    together, _ = painter.paint([request(0), request(1), request(2)])
    assert together[2].sha256 == alone[0].sha256


def test_batched_mode_keeps_the_perceptual_hash(tiny_model):
    painter = DiffusersPainter(PainterConfig(batch_size=4), tiny_model, blobs=MemoryBlobs(), exact=False)
    alone, _ = painter.paint([request(3)])
    together, _ = painter.paint([request(0), request(1), request(2), request(3)])
    assert together[3].phash == alone[0].phash


def test_seed_changes_the_image(tiny_model):
    blobs = MemoryBlobs()
    a, _ = DiffusersPainter(PainterConfig(seed=0), tiny_model, blobs=blobs).paint([request(0)])
    b, _ = DiffusersPainter(PainterConfig(seed=1), tiny_model, blobs=blobs).paint([request(0)])
    assert a[0].sha256 != b[0].sha256 and a[0].id != b[0].id


def test_reference_rows_use_image_to_image(tiny_model):
    blobs = MemoryBlobs()
    red, blue = blobs.put(png_for("red", 64)), blobs.put(png_for("blue", 64))
    painter = DiffusersPainter(PainterConfig(), tiny_model, blobs=blobs)
    images, errors = painter.paint([request(0, [red]), request(1)])
    assert errors == [] and [image.trajectory_id for image in images] == ["trajectory-0", "trajectory-1"]
    text_only, _ = painter.paint([request(0)])
    assert images[0].sha256 != text_only[0].sha256  # the reference changed the picture
    other_reference, _ = painter.paint([request(0, [blue])])
    assert other_reference[0].sha256 != images[0].sha256
    again, _ = painter.paint([request(0, [red])])
    assert again[0].sha256 == images[0].sha256


def test_row_errors_do_not_stop_the_batch(tiny_model):
    painter = DiffusersPainter(PainterConfig(), tiny_model, blobs=MemoryBlobs())
    images, errors = painter.paint([request(0, gen_prompt=""), request(1, ["f" * 64])])
    assert images == []
    assert [(e.row_id, e.error_class) for e in errors] == [
        ("trajectory-0", "PainterError"),
        ("trajectory-1", "PainterError"),
    ]


def test_missing_model_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="no painter model"):
        DiffusersPainter(PainterConfig(), None, blobs=MemoryBlobs())


def test_cpu_time_per_image(tiny_model, capsys):
    painter = DiffusersPainter(PainterConfig(), tiny_model, blobs=MemoryBlobs())
    painter.paint([request(0)])  # load
    started = time.process_time()
    wall = time.perf_counter()
    images, _ = painter.paint([request(i) for i in range(8)])
    cpu = (time.process_time() - started) / 8
    with capsys.disabled():
        print(
            f"\ntiny painter: {cpu:.3f} s CPU, {(time.perf_counter() - wall) / 8:.3f} s wall per 64x64 image"
        )
    assert len(images) == 8 and cpu < 5
