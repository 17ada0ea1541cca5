"""The RL config as verl data: `train.parquet` / `test.parquet` for `RLHFDataset`, plus a tool config.

One row per RL sample, in the layout verl's `RLHFDataset`, agent loop and reward managers read:

- `data_source` (the reward function's dispatch key), `ability`;
- `prompt`: chat messages, the system prompt with the three tool schemas and then the task, exactly as
  the teacher's trajectories (the SFT rows) begin (the caller passes the system prompt that
  `synthesis/agent_protocol.py` `opening_messages` builds: this folder imports only `schemas`);
- `reward_model`: `{style: "model", ground_truth: {gen_prompt, facts}}` for a model-judged reward;
- `extra_info`: `{index, id, split, gt_image, category, difficulty}`; `gt_image` is a path to the
  ground-truth image, relative to the folder by default.

There is no `images` column: verl feeds that column to the policy, and the ground-truth image is what
the reward compares against, never an input. Rows go to `test` by a hash of their id
(`split_of`), so a row keeps its split in every version, whatever rows are added or removed.
`tool_config.yaml` registers the tools for verl's multi-turn tool agent
(`actor_rollout_ref.rollout.multi_turn.tool_config_path`).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from warehouse.formats import (
    IMAGE_PLACEHOLDER,
    FormatReport,
    image_reference,
    iter_rows,
    require_version_folder,
    write_format_readme,
    write_image,
)
from warehouse.store import Warehouse

DATA_SOURCE = "groundgen/gen-searcher"
ABILITY = "search_augmented_image_generation"
REWARD_STYLE = "model"
TOOL_CLASS = "flows.verl_tools.GroundgenTool"
DEFAULT_TEST_RATIO = 0.05

_MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
VERL_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string()),
        pa.field("prompt", pa.list_(_MESSAGE)),
        pa.field("ability", pa.string()),
        pa.field(
            "reward_model",
            pa.struct(
                [
                    pa.field("style", pa.string()),
                    pa.field(
                        "ground_truth",
                        pa.struct(
                            [pa.field("gen_prompt", pa.string()), pa.field("facts", pa.list_(pa.string()))]
                        ),
                    ),
                ]
            ),
        ),
        pa.field(
            "extra_info",
            pa.struct(
                [
                    pa.field("index", pa.int64()),
                    pa.field("id", pa.string()),
                    pa.field("split", pa.string()),
                    pa.field("gt_image", pa.string()),
                    pa.field("category", pa.string()),
                    pa.field("difficulty", pa.string()),
                ]
            ),
        ),
    ]
)


def split_of(row_id: str, test_ratio: float) -> str:
    """`test` for a fixed `test_ratio` share of ids, chosen by a hash of the id alone."""
    if not 0 <= test_ratio <= 1:
        raise ValueError(f"test_ratio must be within [0, 1], got {test_ratio}")
    bucket = int.from_bytes(hashlib.sha256(f"split:{row_id}".encode()).digest()[:8], "big")
    return "test" if bucket < test_ratio * 2**64 else "train"


def required_facts(warehouse: Warehouse) -> dict[str, list[str]]:
    """RL sample id -> the facts its prompt demands (`prompts.required_facts`)."""
    table = warehouse.query(
        "SELECT r.id, p.required_facts FROM rl_rows r JOIN prompts p ON p.id = r.prompt_id ORDER BY r.id"
    )
    ids = table.column("id").to_pylist()
    facts = table.column("required_facts").to_pylist()
    return {row_id: list(values or []) for row_id, values in zip(ids, facts, strict=True)}


def tool_config(tool_schemas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """verl's tool config: one entry per tool, `class_name` + `config` + the OpenAI `tool_schema`."""
    return {
        "tools": [
            {
                "class_name": TOOL_CLASS,
                "config": {"type": "native", "groundgen_config": ""},
                "tool_schema": dict(schema),
            }
            for schema in tool_schemas
        ]
    }


def verl_record(
    row: dict[str, Any],
    *,
    system_prompt: str,
    facts: Sequence[str],
    split: str,
    index: int,
    gt_image: str,
) -> dict[str, Any]:
    """One verl row from one exported RL row (a pure function)."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": row["prompt"]},
        ],
        "ability": ABILITY,
        "reward_model": {
            "style": REWARD_STYLE,
            "ground_truth": {"gen_prompt": row["gen_prompt"] or "", "facts": list(facts)},
        },
        "extra_info": {
            "index": index,
            "id": row["id"],
            "split": split,
            "gt_image": gt_image,
            "category": row["category"],
            "difficulty": row["difficulty"],
        },
    }


def skip_reason(row: dict[str, Any]) -> str:
    """Why an RL row cannot become a verl row ("" when it can)."""
    if not row["gt_image"] or not row["gt_image"].get("bytes"):
        return "no_gt_image"
    if not (row["prompt"] or "").strip():
        return "empty_prompt"
    if IMAGE_PLACEHOLDER in row["prompt"]:
        return "image_placeholder_in_prompt"  # verl would look for an image the row does not carry
    return ""


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(records, schema=VERL_SCHEMA), temp, compression="zstd")
    os.replace(temp, path)


def export_verl(
    version_dir: Path | str,
    out_dir: Path | str,
    *,
    system_prompt: str,
    tool_schemas: Sequence[Mapping[str, Any]],
    facts: Mapping[str, Iterable[str]] | None = None,
    test_ratio: float = DEFAULT_TEST_RATIO,
    absolute_paths: bool = False,
) -> FormatReport:
    """Write `train.parquet`, `test.parquet`, `images/`, `tool_config.yaml` and `README.md` to `out_dir`.

    `system_prompt` opens every prompt (the teacher's, with the tool schemas); `tool_schemas` go to the
    tool config; `facts` maps RL ids to their prompt's required facts (`required_facts(warehouse)`;
    missing ids get none). Rows without a ground-truth image or with an unusable prompt are skipped
    with a reason.
    """
    facts = facts or {}
    version_dir = require_version_folder(version_dir)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    skipped: Counter[str] = Counter()
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for row in iter_rows(Path(version_dir), "rl"):
        reason = skip_reason(row)
        if reason:
            skipped[reason] += 1
            continue
        split = split_of(row["id"], test_ratio)
        relative = write_image(row["gt_image"], images_dir, written)
        record = verl_record(
            row,
            system_prompt=system_prompt,
            facts=list(facts.get(row["id"], [])),
            split=split,
            index=len(splits[split]),
            gt_image=image_reference(out_dir, relative, absolute_paths),
        )
        splits[split].append(record)
    for split, records in splits.items():
        _write_parquet(out_dir / f"{split}.parquet", records)
    (out_dir / "tool_config.yaml").write_text(
        yaml.safe_dump(tool_config(tool_schemas), sort_keys=False, allow_unicode=True, width=1000),
        encoding="utf-8",
    )
    write_format_readme(
        out_dir,
        "verl",
        train_rows=len(splits["train"]),
        test_rows=len(splits["test"]),
        test_ratio=test_ratio,
        data_source=DATA_SOURCE,
    )
    return FormatReport(
        path=out_dir / "train.parquet",
        rows=len(splits["train"]) + len(splits["test"]),
        skipped=sum(skipped.values()),
        images=len(written),
        skip_reasons=dict(sorted(skipped.items())),
        files=[out_dir / "train.parquet", out_dir / "test.parquet"],
    )
