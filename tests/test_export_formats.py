"""Training formats: LLaMA-Factory sharegpt JSON and the rllm RL layout, from an exported version.

Each format folder must load wherever it is copied: paths are relative to the folder by default, and
the tests resolve them from a copy of the folder in another place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from schemas.config import Config
from tests.test_export_helpers import CURATOR, curated  # noqa: F401  (fixture)
from warehouse.export import export_version, version_folder
from warehouse.formats import (
    FormatError,
    FormatReport,
    export_llamafactory,
    export_rllm,
    sharegpt_messages,
)

SHAREGPT_INFO = {
    "groundgen_sft": {
        "file_name": "groundgen_sft.json",
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
}


def _version(curated, tmp_path, config: Config | None = None) -> Path:  # noqa: F811
    warehouse, blobs = curated
    version = export_version(
        warehouse, blobs, tmp_path / "exports", config or Config(), curator=CURATOR, code_version="t"
    )
    return version_folder(warehouse.path.parent, version)


def _moved(folder: Path, tmp_path: Path) -> Path:
    """Copy a format folder somewhere else and delete the original: nothing may point back at it."""
    target = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, target)
    shutil.rmtree(folder)
    return target


def _rewrite_shard(version_dir: Path, config: str, change) -> None:
    """Apply `change(list of rows)` to a version's only shard of `config` (same schema)."""
    (shard,) = sorted((version_dir / "data").glob(f"{config}-*.parquet"))
    table = pq.read_table(shard)
    rows = change(table.to_pylist())
    pq.write_table(table.from_pylist(rows, schema=table.schema), shard)


def test_llamafactory_sharegpt_roles_alternate_and_images_match_placeholders(curated, tmp_path):  # noqa: F811
    warehouse, _ = curated
    out = tmp_path / "lf"
    report = export_llamafactory(_version(curated, tmp_path), out)
    assert (report.rows, report.skipped, report.images, report.skip_reasons) == (6, 0, 12, {})
    assert json.loads((out / "dataset_info.json").read_text()) == SHAREGPT_INFO
    readme = (out / "README.md").read_text()
    assert "--dataset_dir /path/to/this/folder --dataset groundgen_sft" in readme and "media_dir" in readme
    moved = _moved(out, tmp_path)
    rows = json.loads((moved / "groundgen_sft.json").read_text())
    expected = warehouse.query("SELECT id, images FROM sft_rows WHERE curator = ? ORDER BY id", [CURATOR])
    assert [row["id"] for row in rows] == expected.column("id").to_pylist()
    for row, shas in zip(rows, expected.column("images").to_pylist(), strict=True):
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system"
        assert roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
        # LLaMA-Factory's mm plugin demands one image per <image> token, in order
        assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"]) == 2
        for path, sha in zip(row["images"], shas, strict=True):
            assert path == f"images/{sha}.png"  # relative to dataset_dir (= media_dir by default)
            assert hashlib.sha256((moved / path).read_bytes()).hexdigest() == sha


def test_llamafactory_absolute_paths_on_request(curated, tmp_path):  # noqa: F811
    out = tmp_path / "lf-abs"
    export_llamafactory(_version(curated, tmp_path), out, absolute_paths=True)
    paths = [path for row in json.loads((out / "groundgen_sft.json").read_text()) for path in row["images"]]
    assert len(paths) == 12
    assert all(Path(path).is_absolute() and Path(path).parent == (out / "images").resolve() for path in paths)


def test_llamafactory_counts_skipped_rows_by_reason(curated, tmp_path):  # noqa: F811
    version_dir = _version(curated, tmp_path)

    def break_two(rows):
        rows[0]["images"] = rows[0]["images"][:1]  # two <image> tokens, one image
        rows[1]["messages"] = rows[1]["messages"][:2]  # no assistant turn
        return rows

    _rewrite_shard(version_dir, "sft", break_two)
    report = export_llamafactory(version_dir, tmp_path / "lf")
    assert (report.rows, report.skipped) == (4, 2)
    assert report.skip_reasons == {"image_count_mismatch": 1, "roles_do_not_alternate": 1}
    assert report.summary("llamafactory") == (
        "llamafactory: 4 rows written, 2 skipped (image_count_mismatch: 1, roles_do_not_alternate: 1), "
        f"8 images -> {tmp_path / 'lf' / 'groundgen_sft.json'}"
    )


def test_sharegpt_merges_repeated_roles_and_rejects_unfinished_trajectories():
    def m(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    merged = sharegpt_messages(
        [
            m("system", "S"),
            m("user", "task"),
            m("assistant", "call"),
            m("user", "<image>"),
            m("user", "answer now"),
            m("assistant", "A"),
        ]
    )
    assert merged == [
        m("system", "S"),
        m("user", "task"),
        m("assistant", "call"),
        m("user", "<image>\nanswer now"),
        m("assistant", "A"),
    ]
    assert sharegpt_messages([m("system", "S"), m("user", "task")]) is None  # no final answer
    assert (
        sharegpt_messages([m("system", "S"), m("assistant", "hi"), m("user", "x"), m("assistant", "y")])
        is None
    )


def test_rllm_rows_are_id_prompt_and_relative_gt_image_paths(curated, tmp_path):  # noqa: F811
    warehouse, _ = curated
    out = tmp_path / "rllm"
    report = export_rllm(_version(curated, tmp_path), out)
    assert (report.rows, report.skipped, report.images) == (6, 0, 6)
    assert "DatasetRegistry.register_dataset" in (out / "README.md").read_text()
    moved = _moved(out, tmp_path)
    rows = json.loads((moved / "groundgen_rl.json").read_text())
    expected = warehouse.query(
        "SELECT id, prompt, gt_image FROM rl_rows WHERE curator = ? ORDER BY id", [CURATOR]
    )
    assert [sorted(row) for row in rows] == [["gt_image", "id", "prompt"]] * 6
    assert [(r["id"], r["prompt"]) for r in rows] == list(
        zip(expected.column("id").to_pylist(), expected.column("prompt").to_pylist(), strict=True)
    )
    for row, sha in zip(rows, expected.column("gt_image").to_pylist(), strict=True):
        assert row["gt_image"] == f"images/{sha}.png"
        assert hashlib.sha256((moved / row["gt_image"]).read_bytes()).hexdigest() == sha


def test_rllm_absolute_paths_on_request_and_rows_without_image_skipped(curated, tmp_path):  # noqa: F811
    version_dir = _version(curated, tmp_path)

    def drop_image(rows):
        rows[2]["gt_image"] = None
        return rows

    _rewrite_shard(version_dir, "rl", drop_image)
    out = tmp_path / "abs"
    report = export_rllm(version_dir, out, absolute_paths=True)
    assert (report.rows, report.skipped, report.skip_reasons) == (5, 1, {"no_gt_image": 1})
    for row in json.loads(report.path.read_text()):
        path = Path(row["gt_image"])
        assert path.is_absolute() and path.exists() and path.parent == (out / "images").resolve()


def test_card_marks_sft_default_so_load_dataset_needs_no_config_name(curated, tmp_path):  # noqa: F811
    datasets = pytest.importorskip("datasets")
    folder = _version(curated, tmp_path)
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert [c.get("default", False) for c in header["configs"]] == [True, False]
    assert 'load_dataset("path/to/v1", split="train")' in card  # no repo known: a local path
    moved = _moved(folder, tmp_path)
    cache = str(tmp_path / "hf-cache")
    default = datasets.load_dataset(str(moved), split="train", cache_dir=cache)
    sft = datasets.load_dataset(str(moved), "sft", split="train", cache_dir=cache)
    assert default.num_rows == 6 and default["id"] == sft["id"]
    assert "messages" in default.column_names and "gt_image" not in default.column_names


def test_card_shows_the_hub_repo_when_known(curated, tmp_path):  # noqa: F811
    config = Config.model_validate({"hub": {"repo": "my-org/gen-searcher-data"}})
    card = (_version(curated, tmp_path, config) / "README.md").read_text()
    assert 'load_dataset("my-org/gen-searcher-data", revision="v1", split="train")' in card
    assert 'load_dataset("my-org/gen-searcher-data", "rl", revision="v1", split="train")' in card
    assert "path/to/" not in card


def test_a_folder_that_is_not_a_version_is_an_error_not_zero_rows(tmp_path):
    for writer in (export_llamafactory, export_rllm):
        with pytest.raises(FormatError, match="no manifest.json"):
            writer(tmp_path / "exports" / "v9", tmp_path / "out")


def test_format_report_summary_without_skips():
    report = FormatReport(path=Path("out/x.json"), rows=3, skipped=0, images=2)
    assert report.summary("rllm") == "rllm: 3 rows written, 0 skipped, 2 images -> out/x.json"
