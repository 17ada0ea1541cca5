"""DiffusersPainter: reference modes (text2img / img2img / edit), memory options on CPU, revisions,
and the error a missing diffusers gives."""

from __future__ import annotations

import sys

import pytest

from schemas.config import PainterConfig
from schemas.dependencies import MissingDependencyError
from schemas.errors import ConfigurationError
from synthesis.painter import DiffusersPainter, accepts, resolved_revision, row_seed
from testkit.synthesis_fakes import MemoryBlobs, png_for
from tests.test_synthesis_painter import request, tiny_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


class RecordingEditPipeline:
    """Stands in for an image-editing pipeline (QwenImageEditPlusPipeline's call convention)."""

    def __init__(self):
        self.calls = []

    def __call__(
        self,
        image=None,
        prompt=None,
        num_inference_steps=50,
        guidance_scale=1.0,
        generator=None,
        height=None,
        width=None,
    ):
        from PIL import Image

        self.calls.append(
            {
                "image": image,
                "prompt": prompt,
                "steps": num_inference_steps,
                "guidance": guidance_scale,
                "seeds": [g.initial_seed() for g in generator],
                "size": (width, height),
            }
        )
        colour = tuple(image[0].getpixel((0, 0))) if image else (0, 0, 0)
        return type("Output", (), {"images": [Image.new("RGB", (width, height), colour)]})()


def fitted(blobs: MemoryBlobs, sha256: str) -> bytes:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(blobs.read(sha256))).convert("RGB")
    image.thumbnail((64, 48), Image.Resampling.LANCZOS)
    return image.tobytes()


def test_edit_mode_passes_every_chosen_reference_as_a_list():
    blobs = MemoryBlobs()
    red, blue, green = (blobs.put(png_for(colour, 96)) for colour in ("red", "blue", "green"))
    fake = RecordingEditPipeline()
    config = PainterConfig(
        pipeline="edit", max_references=2, seed=3, width=64, height=48, model="org/edit-model"
    )
    painter = DiffusersPainter(config, "org/edit-model", blobs=blobs, pipeline=fake, local_files_only=True)
    images, errors = painter.paint([request(0, [red, blue, green]), request(1), request(2, [green])])
    assert [(e.row_id, e.error_class) for e in errors] == [("trajectory-1", "PainterError")]
    assert [image.trajectory_id for image in images] == ["trajectory-0", "trajectory-2"]
    first, second = fake.calls
    assert [reference.tobytes() for reference in first["image"]] == [fitted(blobs, red), fitted(blobs, blue)]
    assert all(reference.size == (48, 48) for reference in first["image"])  # aspect kept, fitted in 64x48
    assert first["prompt"] == ["a museum poster number 0"] and first["size"] == (64, 48)
    assert first["seeds"] == [row_seed(3, "trajectory-0")] and (first["steps"], first["guidance"]) == (3, 4.0)
    assert len(second["image"]) == 1
    assert images[0].model == "org/edit-model" and images[0].seed == row_seed(3, "trajectory-0")


def test_auto_mode_uses_an_edit_pipeline_as_one():
    blobs = MemoryBlobs()
    red = blobs.put(png_for("red", 64))
    fake = RecordingEditPipeline()
    painter = DiffusersPainter(PainterConfig(), "x", blobs=blobs, pipeline=fake, local_files_only=True)
    assert painter.reference_mode() == "edit"
    images, errors = painter.paint([request(0, [red])])
    assert errors == [] and len(fake.calls[0]["image"]) == 1


def test_explicit_modes_on_the_tiny_pipeline(tiny_model):  # noqa: F811
    blobs = MemoryBlobs()
    red = blobs.put(png_for("red", 64))
    auto = DiffusersPainter(PainterConfig(), tiny_model, blobs=blobs)
    assert auto.reference_mode() == "img2img"
    img2img, _ = DiffusersPainter(PainterConfig(pipeline="img2img"), tiny_model, blobs=blobs).paint(
        [request(0, [red])]
    )
    by_auto, _ = auto.paint([request(0, [red])])
    assert img2img[0].sha256 == by_auto[0].sha256
    ignored, _ = DiffusersPainter(PainterConfig(pipeline="text2img"), tiny_model, blobs=blobs).paint(
        [request(0, [red])]
    )
    text_only, _ = auto.paint([request(0)])
    assert ignored[0].sha256 == text_only[0].sha256 != img2img[0].sha256
    with pytest.raises(ConfigurationError, match="does not take image"):
        DiffusersPainter(PainterConfig(pipeline="edit"), tiny_model, blobs=blobs).paint([request(0, [red])])


def test_memory_options_run_on_cpu_float32(tiny_model):  # noqa: F811
    plain, _ = DiffusersPainter(PainterConfig(), tiny_model, blobs=MemoryBlobs()).paint([request(0)])
    config = PainterConfig(device="cpu", dtype="float32", attention_slicing=True, cpu_offload=True)
    painter = DiffusersPainter(config, tiny_model, blobs=MemoryBlobs())
    images, errors = painter.paint([request(0)])
    assert errors == [] and images[0].id == plain[0].id  # runtime options are not in the fingerprint
    assert images[0].phash == plain[0].phash
    assert painter._load().device.type == "cpu"  # cpu_offload is a no-op on the CPU


def test_cpu_offload_needs_cuda_and_accelerate(tiny_model):  # noqa: F811
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("accelerate") is None:
        pytest.skip("cpu_offload needs a CUDA device and the accelerate package (neither is here)")
    config = PainterConfig(device="cuda", dtype="float16", cpu_offload=True)
    images, errors = DiffusersPainter(config, tiny_model, blobs=MemoryBlobs()).paint([request(0)])
    assert errors == [] and len(images) == 1


def test_bfloat16_on_cpu(tiny_model):  # noqa: F811
    images, errors = DiffusersPainter(PainterConfig(dtype="bfloat16"), tiny_model, blobs=MemoryBlobs()).paint(
        [request(0)]
    )
    assert errors == [] and images[0].width == 64


def test_revision_is_recorded(tmp_path, monkeypatch, tiny_model):  # noqa: F811
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--painter"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolved_revision("org/painter") == commit
    assert resolved_revision("org/painter", "v2") == "v2"
    assert resolved_revision("org/not-cached") == ""
    assert resolved_revision(str(tiny_model)) == ""
    fake = RecordingEditPipeline()
    painter = DiffusersPainter(PainterConfig(model="org/painter"), None, blobs=MemoryBlobs(), pipeline=fake)
    assert painter.model_name == f"org/painter@{commit}"
    pinned = DiffusersPainter(
        PainterConfig(model="org/painter", revision="v2"), None, blobs=MemoryBlobs(), pipeline=fake
    )
    assert pinned.model_name == "org/painter@v2"
    tiny = DiffusersPainter(PainterConfig(), tiny_model, blobs=MemoryBlobs())
    assert tiny.model_name == "groundgen-tiny-sd"


def test_missing_diffusers_names_what_to_install(tiny_model, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    painter = DiffusersPainter(PainterConfig(), tiny_model, blobs=MemoryBlobs())
    with pytest.raises(
        MissingDependencyError,
        match=r"needs diffusers, which is not installed: pip install 'groundgen\[local\]'",
    ):
        painter.paint([request(0)])


def test_accepts():
    def plain(prompt, image=None): ...

    def anything(prompt, **kwargs): ...

    assert accepts(plain, "image") and not accepts(plain, "strength") and accepts(anything, "strength")
    assert not accepts(anything, "image", any_keyword=False)
