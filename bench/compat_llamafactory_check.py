"""Runs inside a virtual environment with LLaMA-Factory installed (see bench/compat.py): its own dataset
code on one `groundgen export --format llamafactory` folder. Prints `PASS`/`FAIL` per row and a
`SUMMARY` line.

Usage: python bench/compat_llamafactory_check.py FOLDER

- `get_dataset_list` reads the folder's `dataset_info.json` (`dataset_dir` = the folder);
- the `sharegpt` converter (`get_dataset_converter`) turns each row into `_prompt` / `_response` /
  `_system` / `_images`, resolving image paths against `media_dir` (default: `dataset_dir`);
- the `qwen2_vl` multimodal plugin checks one image per `<image>` token (`_validate_messages`) and
  opens every image (`_regularize_images`).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import traceback
import types
from pathlib import Path


def _audio_free_import() -> str:
    """LLaMA-Factory's mm_plugin imports torchaudio at module level; PyPI has no torchaudio for every
    torch (none for 2.13). Image rows never reach the audio code, so an empty module stands in when
    torchaudio cannot be imported, and the run says so."""
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError) as error:
        stand_in = types.ModuleType("torchaudio")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stand_in
        return f"note: torchaudio not importable here ({type(error).__name__}); an empty module stands in"
    return ""


def check_row(converter, plugin, row: dict) -> str:
    out = converter(row)
    messages = out["_prompt"] + out["_response"]
    if not out["_prompt"] or not out["_response"]:
        return "the converter found no valid prompt/response (roles do not alternate)"
    if not out["_system"]:
        return "no system prompt"
    images = out["_images"] or []
    missing = [path for path in images if not (isinstance(path, str) and os.path.isfile(path))]
    if missing:
        return f"images not found from media_dir: {missing[:2]}"
    plugin._validate_messages(messages, images, [], [])
    opened = plugin._regularize_images(images, image_max_pixels=160_000, image_min_pixels=32)["images"]
    if len(opened) != len(images):
        return f"{len(opened)} of {len(images)} images opened"
    return ""


def main() -> int:
    folder = Path(sys.argv[1]).resolve()
    note = _audio_free_import()
    if note:
        print(note)
    import json

    import datasets
    from llamafactory.data.converter import get_dataset_converter
    from llamafactory.data.mm_plugin import get_mm_plugin
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments

    names = sorted(json.loads((folder / "dataset_info.json").read_text()))
    passed = failed = 0
    for attr in get_dataset_list(names, str(folder)):
        data_args = DataArguments(dataset_dir=str(folder))  # media_dir defaults to dataset_dir
        converter = get_dataset_converter(attr.formatting, attr, data_args)
        plugin = get_mm_plugin("qwen2_vl", image_token="<|image_pad|>")
        rows = datasets.load_dataset("json", data_files=str(folder / attr.dataset_name), split="train")
        for row in rows:
            try:
                problem = check_row(converter, plugin, row)
            except Exception:  # noqa: BLE001 - a loader failure is this row's result
                problem = traceback.format_exc(limit=3).strip().splitlines()[-1]
            print(
                f"{'FAIL' if problem else 'PASS'} {attr.dataset_name} {row.get('id', '?')} {problem}".rstrip()
            )
            passed, failed = passed + (not problem), failed + bool(problem)
    print(f"SUMMARY llamafactory pass={passed} fail={failed}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
