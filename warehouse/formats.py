"""Training formats derived from an exported version folder (`exports/<version>/`).

- `export_llamafactory`: the SFT config as LLaMA-Factory "sharegpt" JSON (`messages` + `images` paths),
  an `images/` folder and the `dataset_info.json` entry that registers it.
- `export_rllm`: the RL config as `id`, `prompt`, `gt_image` (a path): the layout Gen-Searcher's RL
  trainer registers.
- `warehouse/verl_format.py`: the RL config as verl `RLHFDataset` Parquet plus a tool config.

Each streams the version's Parquet shards one batch at a time and writes each distinct image once,
named by its sha256. Every format folder is self-contained: image paths are relative to the folder
(`absolute_paths=True` opts into absolute ones), and a `README.md` in it gives the trainer's command
(templates `templates/format_<name>.md`). Rows a format cannot express are skipped and counted by reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import pyarrow.parquet as pq

from schemas.errors import GroundgenError
from warehouse.parquet_shards import image_extension

IMAGE_PLACEHOLDER = "<image>"
BATCH_ROWS = 100
TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class FormatReport:
    path: Path  # the main data file written
    rows: int
    skipped: int  # rows left out because they cannot be expressed in the format (see the function)
    images: int  # distinct image files written
    skip_reasons: dict[str, int] = field(default_factory=dict)  # reason -> rows, summing to `skipped`
    files: list[Path] = field(default_factory=list)  # every data file written (e.g. train and test)

    def summary(self, name: str) -> str:
        """`verl: 22 rows written, 2 skipped (no_gt_image: 2) -> path`: what the CLI prints."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skip_reasons.items())
        skipped = f"{self.skipped} skipped" + (f" ({reasons})" if reasons else "")
        targets = ", ".join(str(path) for path in self.files or [self.path])
        return f"{name}: {self.rows} rows written, {skipped}, {self.images} images -> {targets}"


def image_reference(out_dir: Path, relative: str, absolute_paths: bool) -> str:
    """How a record names an image: relative to the format folder, or absolute when asked."""
    return str((Path(out_dir) / relative).resolve()) if absolute_paths else relative


def write_format_readme(out_dir: Path, name: str, **values: object) -> Path:
    """The format folder's `README.md`: what is in it and the trainer's command (`templates/format_<name>.md`)."""
    text = Template((TEMPLATES / f"format_{name}.md").read_text(encoding="utf-8")).substitute(values)
    path = Path(out_dir) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


class FormatError(GroundgenError):
    """A training format cannot be written from this folder (it is not a dataset version)."""


def require_version_folder(version_dir: Path | str) -> Path:
    """The version folder, checked: a folder without `manifest.json` would silently give 0 rows."""
    folder = Path(version_dir)
    if not (folder / "manifest.json").is_file():
        raise FormatError(f"{folder} is not a dataset version folder (no manifest.json)")
    return folder


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


def sharegpt_skip_reason(row: dict[str, Any]) -> str:
    """Why an SFT row cannot become a sharegpt record ("" when it can)."""
    if sharegpt_messages(row["messages"]) is None:
        return "roles_do_not_alternate"
    placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in row["messages"])
    if placeholders != len(row["images"] or []):
        return "image_count_mismatch"
    return ""


def export_llamafactory(
    version_dir: Path | str,
    out_dir: Path | str,
    *,
    dataset_name: str = "groundgen_sft",
    absolute_paths: bool = False,
) -> FormatReport:
    """Write `out_dir/<dataset_name>.json`, `out_dir/images/` and register it in `out_dir/dataset_info.json`.

    Use with LLaMA-Factory's `dataset_dir=out_dir` and `dataset=<dataset_name>`; image paths are relative
    to `out_dir` (LLaMA-Factory's `media_dir`, which defaults to `dataset_dir`), absolute with
    `absolute_paths`. Rows whose roles cannot alternate, or whose `<image>` placeholders do not match
    their images, are skipped and counted by reason.
    """
    version_dir = require_version_folder(version_dir)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    skipped: Counter[str] = Counter()

    def records() -> Iterator[dict[str, Any]]:
        for row in iter_rows(Path(version_dir), "sft"):
            reason = sharegpt_skip_reason(row)
            if reason:
                skipped[reason] += 1
                continue
            yield {
                "id": row["id"],
                "messages": sharegpt_messages(row["messages"]),
                "images": [
                    image_reference(out_dir, write_image(image, images_dir, written), absolute_paths)
                    for image in row["images"] or []
                ],
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
    write_format_readme(out_dir, "llamafactory", dataset_name=dataset_name, rows=rows, images=len(written))
    return FormatReport(
        path=json_path,
        rows=rows,
        skipped=sum(skipped.values()),
        images=len(written),
        skip_reasons=dict(sorted(skipped.items())),
        files=[json_path],
    )


def export_rllm(
    version_dir: Path | str,
    out_dir: Path | str,
    *,
    dataset_name: str = "groundgen_rl",
    absolute_paths: bool = False,
) -> FormatReport:
    """Write `out_dir/<dataset_name>.json` (a list of `{id, prompt, gt_image}`) and `out_dir/images/`.

    `gt_image` is relative to `out_dir` by default (run the trainer's registration from the folder, or
    export with `absolute_paths=True` on the training machine: the trainer keeps rows whose image path
    exists). Rows without an image are skipped and counted.
    """
    version_dir = require_version_folder(version_dir)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    skipped: Counter[str] = Counter()

    def records() -> Iterator[dict[str, Any]]:
        for row in iter_rows(Path(version_dir), "rl"):
            if not row["gt_image"] or not row["gt_image"].get("bytes"):
                skipped["no_gt_image"] += 1
                continue
            path = write_image(row["gt_image"], images_dir, written)
            yield {
                "id": row["id"],
                "prompt": row["prompt"],
                "gt_image": image_reference(out_dir, path, absolute_paths),
            }

    json_path = out_dir / f"{dataset_name}.json"
    rows = _write_json_list(json_path, records())
    write_format_readme(out_dir, "rllm", dataset_name=dataset_name, rows=rows, images=len(written))
    return FormatReport(
        path=json_path,
        rows=rows,
        skipped=sum(skipped.values()),
        images=len(written),
        skip_reasons=dict(sorted(skipped.items())),
        files=[json_path],
    )
