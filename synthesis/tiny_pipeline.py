"""A tiny Stable Diffusion pipeline built from configs: the offline painter's model (no download).

About 1.7 M parameters, ~7 MB on disk; it paints noise-like 64x64 images, but it exercises exactly
the load / generate / save path a real diffusers model uses. Built once with a fixed seed, so every
machine builds identical weights; saved with `save_pretrained` into a temp folder renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from schemas.dependencies import DIFFUSERS_PAINTER

BUILD_SEED = 20260325
COMPLETE_MARKER = "model_index.json"
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def is_complete(path: Path) -> bool:
    path = Path(path)
    return (path / COMPLETE_MARKER).is_file() and all((path / name).is_dir() for name in _COMPONENTS)


def _tokenizer():
    from transformers import CLIPTokenizer

    # Byte-level characters as the vocabulary, no merges: every prompt tokenizes, nothing downloads.
    specials = ["<|startoftext|>", "<|endoftext|>"]
    byte_chars = [chr(c) for c in range(33, 127)] + [chr(c) + "</w>" for c in range(33, 127)]
    vocab = {token: index for index, token in enumerate(specials + byte_chars)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, pad_token="<|endoftext|>")


def _build_components():
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(BUILD_SEED)
    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_pipeline(path: Path | str) -> Path:
    """Build the tiny pipeline at `path` unless a complete one is already there; return `path`."""
    path = Path(path)
    if is_complete(path):
        return path
    DIFFUSERS_PAINTER.require()  # a missing `local` extra: MissingDependencyError, one line
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        **_build_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        pipeline.save_pretrained(temp, safe_serialization=True)  # type: ignore[attr-defined]
        (temp / "groundgen_tiny.json").write_text(json.dumps({"build_seed": BUILD_SEED}) + "\n")
        if path.exists() and not is_complete(path):
            shutil.rmtree(path)  # a half-built folder from an older crash
        try:
            os.rename(temp, path)
        except OSError:
            if not is_complete(path):  # not someone else's finished build: a real error
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return path
