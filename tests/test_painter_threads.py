"""The diffusers painter sets torch's thread count for its own pipeline calls only (CPU, tiny pipeline)."""

from __future__ import annotations

import os
import threading

import pytest

from schemas.config import PainterConfig
from synthesis.painter import DiffusersPainter, torch_threads
from synthesis.tiny_pipeline import build_tiny_pipeline
from testkit.synthesis_fakes import MemoryBlobs
from tests.test_synthesis_painter import request

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


def recording_painter(tiny_model, num_threads: int) -> tuple[DiffusersPainter, list[int]]:
    """A painter whose UNet records the thread count of every denoising step."""
    painter = DiffusersPainter(PainterConfig(), tiny_model, blobs=MemoryBlobs(), num_threads=num_threads)
    seen: list[int] = []
    painter._load().unet.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    return painter, seen


def test_paint_uses_its_threads_and_restores_the_process_count(tiny_model):
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    painter, seen = recording_painter(tiny_model, wanted)
    assert torch.get_num_threads() == before  # loading does not touch it either
    images, errors = painter.paint([request(0), request(1)])
    assert errors == [] and len(images) == 2
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before


def test_painters_in_threads_each_paint_with_their_own_count(tiny_model):
    before = torch.get_num_threads()
    painters = [recording_painter(tiny_model, count) for count in (1, 2)]
    failures: list[BaseException] = []

    def paint(painter: DiffusersPainter) -> None:
        try:
            painter.paint([request(index) for index in range(3)])
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            failures.append(error)

    threads = [threading.Thread(target=paint, args=(painter,)) for painter, _ in painters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert [set(seen) for _, seen in painters] == [{1}, {2}]
    assert torch.get_num_threads() == before


def test_torch_threads_restores_after_an_error_and_none_leaves_the_count():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), torch_threads(torch, before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(torch, None):
        assert torch.get_num_threads() == before
