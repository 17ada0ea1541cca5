"""Training formats derived from an exported version folder (`exports/<version>/`).

- `export_llamafactory`: the SFT config as LLaMA-Factory "sharegpt" JSON (`messages` + `images` paths),
  an `images/` folder and the `dataset_info.json` entry that registers it.
- `export_rllm`: the RL config as `id`, `prompt`, `gt_image` (a path): the layout Gen-Searcher's RL
  trainer registers.

Both stream the version's Parquet shards one batch at a time and write each distinct image once, named
by its sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from warehouse.parquet_shards import image_extension

IMAGE_PLACEHOLDER = "<image>"
BATCH_ROWS = 100


@dataclass(frozen=True)
class FormatReport:
    path: Path  # the JSON file written
    rows: int
    skipped: int  # rows left out because they cannot be expressed in the format (see the function)
    images: int  # distinct image files written


def iter_rows(version_dir: Path, config: str) -> Iterator[dict[str, Any]]:
    for shard in sorted((Path(version_dir) / "data").glob(f"{config}-*.parquet")):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=BATCH_ROWS):
            yield from batch.to_pylist()


def write_image(image: dict[str, Any], images_dir: Path, written: set[str]) -> str:
    """Write an embedded image once; return its path relative to the dataset folder."""
    data = image["bytes"]
    name = f"{hashlib.sha256(data).hexdigest()}.{image_extension(data)}"
    if name not in written:
        target = images_dir / name
        if not target.exists():
            temp = target.with_name(f".{name}.tmp")
            temp.write_bytes(data)
            os.replace(temp, target)
        written.add(name)
    return f"{images_dir.name}/{name}"


def sharegpt_messages(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """System turn first, then strictly alternating user/assistant, ending with the assistant.

    Consecutive turns of one role (a tool response followed by the caller's "answer now" message) are
    joined with a newline, which keeps `<image>` placeholders in order. Returns None when the
    trajectory cannot alternate (no user turn first, or no final assistant turn).
    """
    merged: list[dict[str, str]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"] and message["role"] != "system":
            merged[-1] = {
                "role": message["role"],
                "content": merged[-1]["content"] + "\n" + message["content"],
            }
        else:
            merged.append({"role": message["role"], "content": message["content"]})
    body = merged[1:] if merged and merged[0]["role"] == "system" else merged
    if not body or body[-1]["role"] != "assistant":
        return None
    for index, message in enumerate(body):
        if message["role"] != ("user" if index % 2 == 0 else "assistant"):
            return None
    return merged


def _write_json_list(path: Path, records: Iterator[dict[str, Any]]) -> int:
    count = 0
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write("[")
        for record in records:
            handle.write(",\n" if count else "\n")
            handle.write(json.dumps(record, ensure_ascii=False))
            count += 1
        handle.write("\n]\n" if count else "]\n")
    os.replace(temp, path)
    return count


def export_llamafactory(
    version_dir: Path | str, out_dir: Path | str, *, dataset_name: str = "groundgen_sft"
) -> FormatReport:
    """Write `out_dir/<dataset_name>.json`, `out_dir/images/` and register it in `out_dir/dataset_info.json`.

    Use with LLaMA-Factory's `dataset_dir=out_dir` and `dataset=<dataset_name>`; image paths are relative
    to `out_dir`. Rows whose roles cannot alternate, or whose `<image>` placeholders do not match their
    images, are skipped and counted.
    """
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    skipped = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal skipped
        for row in iter_rows(Path(version_dir), "sft"):
            messages = sharegpt_messages(row["messages"])
            images = row["images"] or []
            placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in row["messages"])
            if messages is None or placeholders != len(images):
                skipped += 1
                continue
            yield {
                "id": row["id"],
                "messages": messages,
                "images": [write_image(image, images_dir, written) for image in images],
            }

    json_path = out_dir / f"{dataset_name}.json"
    rows = _write_json_list(json_path, records())
    info_path = out_dir / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[dataset_name] = {
        "file_name": json_path.name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    info_path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return FormatReport(path=json_path, rows=rows, skipped=skipped, images=len(written))


def export_rllm(
    version_dir: Path | str,
    out_dir: Path | str,
    *,
    dataset_name: str = "groundgen_rl",
    absolute_paths: bool = True,
) -> FormatReport:
    """Write `out_dir/<dataset_name>.json` (a list of `{id, prompt, gt_image}`) and `out_dir/images/`.

    `gt_image` is an absolute path by default (the trainer keeps rows whose image path exists);
    `absolute_paths=False` writes paths relative to `out_dir`. Rows without an image are skipped.
    """
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    skipped = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal skipped
        for row in iter_rows(Path(version_dir), "rl"):
            if not row["gt_image"]:
                skipped += 1
                continue
            path = write_image(row["gt_image"], images_dir, written)
            yield {
                "id": row["id"],
                "prompt": row["prompt"],
                "gt_image": str((out_dir / path).resolve()) if absolute_paths else path,
            }

    json_path = out_dir / f"{dataset_name}.json"
    rows = _write_json_list(json_path, records())
    return FormatReport(path=json_path, rows=rows, skipped=skipped, images=len(written))
