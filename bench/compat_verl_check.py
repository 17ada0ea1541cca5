"""Runs inside a virtual environment with verl installed (see bench/compat.py): verl's own loaders on
one `groundgen export --format verl` folder. Prints `PASS`/`FAIL` per row and a `SUMMARY` line.

Usage: python bench/compat_verl_check.py FOLDER [--run-tools]

- `RLHFDataset` (verl/utils/dataset/rl_dataset.py) reads train.parquet and test.parquet with the tool
  config, filters over-long prompts with a chat template, and returns each row's `raw_prompt`;
- `collate_fn` + `DataProto` give the batch the reward managers index, and each row's
  `reward_model.ground_truth`, `data_source` and `extra_info` are read the way verl's naive reward
  manager reads them; `extra_info.gt_image` must open as an image from the folder;
- `initialize_tools_from_config` builds the three tools from tool_config.yaml (`--run-tools` also
  runs one `search` call through them on groundgen's offline default backends).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import traceback
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def offline_tokenizer():
    """A word-level tokenizer with a Qwen-style chat template, built in memory (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def check_row(folder: Path, item: dict, position: int) -> str:
    """Empty when verl reads the row as groundgen means it, else what is wrong."""
    import numpy as np
    from PIL import Image
    from verl import DataProto
    from verl.utils.dataset.rl_dataset import collate_fn

    prompt = item["raw_prompt"]
    if [m["role"] for m in prompt] != ["system", "user"] or not all(
        isinstance(m["content"], str) for m in prompt
    ):
        return f"raw_prompt is not [system, user] text messages: {prompt!r:.200}"
    if '"name": "image_search"' not in prompt[0]["content"]:
        return "the system prompt does not carry the tool schemas"
    if any(key in item for key in ("images", "multi_modal_data", "multi_modal_inputs")):
        return "the row carries images for the policy"
    if item["index"] != position or item["extra_info"]["index"] != position:
        return f"index {item['index']} at position {position}"
    data = DataProto.from_single_dict(collate_fn([item]))
    row = data[0].non_tensor_batch
    ground_truth = row["reward_model"]["ground_truth"]
    if row["reward_model"]["style"] != "model" or not ground_truth["gen_prompt"]:
        return f"reward_model {row['reward_model']!r:.200}"
    if not isinstance(row["data_source"], str) or not row["data_source"]:
        return "no data_source"
    facts = ground_truth["facts"]
    if not isinstance(facts, list | np.ndarray):
        return f"facts is a {type(facts).__name__}"
    with Image.open(folder / row["extra_info"]["gt_image"]) as image:
        image.verify()
    return ""


def run_tools(folder: Path) -> list[tuple[str, str]]:
    from verl.tools.tool_registry import initialize_tools_from_config

    tools = {tool.name: tool for tool in initialize_tools_from_config(str(folder / "tool_config.yaml"))}
    results = [
        ("tool names", "" if sorted(tools) == ["browse", "image_search", "search"] else str(sorted(tools)))
    ]

    async def one_search() -> str:
        tool = tools["search"]
        instance, _ = await tool.create()
        try:
            response, _, metrics = await tool.execute(instance, {"queries": ["Eiffel Tower"], "top_k": 3})
        finally:
            await tool.release(instance)
        ok = metrics.get("ok") and response.text and "](" in response.text
        return "" if ok else f"search answered {response.text!r:.200} {metrics}"

    results.append(("search call", asyncio.run(one_search())))
    return results


def main() -> int:
    folder = Path(sys.argv[1]).resolve()
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer = offline_tokenizer()
    passed = failed = 0
    with tempfile.TemporaryDirectory() as cache:
        config = OmegaConf.create(
            {
                "cache_dir": cache,
                "prompt_key": "prompt",
                "max_prompt_length": 100_000,
                "filter_overlong_prompts": True,
                "filter_overlong_prompts_workers": 1,
                "tool_config_path": str(folder / "tool_config.yaml"),
                "return_raw_chat": True,
            }
        )
        for split in ("train", "test"):
            path = folder / f"{split}.parquet"
            rows = pq.read_metadata(path).num_rows
            if rows == 0:
                print(f"{split}: no rows")
                continue
            dataset = RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=config)
            if dataset.tool_schemas is None or len(dataset.tool_schemas) != 3:
                print(f"FAIL {split}: RLHFDataset did not load the three tools from tool_config.yaml")
                failed += rows
                continue
            if len(dataset) != rows:
                print(f"FAIL {split}: RLHFDataset kept {len(dataset)} of {rows} rows")
            for position in range(len(dataset)):
                item = dataset[position]
                try:
                    problem = check_row(folder, item, position)
                except Exception:  # noqa: BLE001 - a loader failure is this row's result
                    problem = traceback.format_exc(limit=3).strip().splitlines()[-1]
                row_id = item.get("extra_info", {}).get("id", position)
                print(f"{'FAIL' if problem else 'PASS'} {split} {row_id} {problem}".rstrip())
                passed, failed = passed + (not problem), failed + bool(problem)
            failed += rows - len(dataset)
    if "--run-tools" in sys.argv:
        for name, problem in run_tools(folder):
            print(f"{'FAIL' if problem else 'PASS'} tools {name} {problem}".rstrip())
    print(f"SUMMARY verl pass={passed} fail={failed}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
