"""Painter weights from the Hugging Face Hub, downloaded once into the Hub cache with visible progress.

The painter's pipeline loads quietly (its bars would interleave with the stage bars), but a first
download of a multi-GB model is minutes of waiting the user must be able to see: this downloads what
`DiffusionPipeline.from_pretrained` would (the same file selection) with the Hub's progress bars on,
then the painter loads the local snapshot folder with `local_files_only`. Under HF_HUB_OFFLINE only
the cache is used, and a missing model is a `ConfigurationError` naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from schemas.dependencies import DIFFUSERS_PAINTER, LOCAL, require
from schemas.errors import ConfigurationError


def is_hub_id(model: str) -> bool:
    """A Hub repo id (`org/name`) rather than a local folder."""
    return bool(model) and not Path(model).expanduser().exists() and model.count("/") == 1


def download_pipeline(model: str, revision: str = "") -> str:
    """The local snapshot folder of Hub pipeline `model` (downloaded with progress bars if needed)."""
    diffusers = require("diffusers", LOCAL, DIFFUSERS_PAINTER.purpose)
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    offline = bool(constants.HF_HUB_OFFLINE)
    were_disabled = are_progress_bars_disabled()
    if not offline:
        print(f"painter: fetching {model} weights into the Hub cache (once)", file=sys.stderr, flush=True)
        enable_progress_bars()
    try:
        return str(
            diffusers.DiffusionPipeline.download(model, revision=revision or None, local_files_only=offline)
        )
    except Exception as error:
        where = "the Hub cache (HF_HUB_OFFLINE is set)" if offline else "the Hub"
        raise ConfigurationError(
            f"painter model {model!r} could not be loaded from {where}: {error}"
        ) from error
    finally:
        if were_disabled:
            disable_progress_bars()
