"""Dataset versions: deterministic sharded Parquet with embedded images, manifest diffs, card, loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.config import Config, ExportConfig, LLMConfig, LLMEndpointConfig
from schemas.rows import Sample, Version
from tests.test_export_helpers import CURATOR, add_samples, curated  # noqa: F401  (fixture)
from warehouse.blobs import BlobStore
from warehouse.export import ExportError, export_version, next_version_name
from warehouse.manifest import loads_manifest
from warehouse.store import Warehouse


def export(warehouse, blobs, root, config=None, **kwargs) -> Version:
    return export_version(
        warehouse, blobs, root, config or Config(), curator=CURATOR, code_version="0.1.0", **kwargs
    )


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_layout_counts_and_version_row(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    version = export(warehouse, blobs, tmp_path / "exports")
    assert (version.id, version.parent, version.sft_rows, version.rl_rows) == ("v1", "", 6, 6)
    folder = tmp_path / "exports" / "v1"
    assert sorted(folder_bytes(folder)) == [
        "README.md",
        "data/rl-00000-of-00001.parquet",
        "data/sft-00000-of-00001.parquet",
        "funnel.png",
        "manifest.json",
    ]
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["v1"]  # no temp folder left
    assert warehouse.rows(Version) == [version]
    manifest = loads_manifest((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"sft": 6, "rl": 6}
    assert manifest["ids"]["sft"] == [f"sample-{n:03d}" for n in range(0, 12, 2)]  # curator-b rows absent
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    table = pq.read_table(folder / "data/sft-00000-of-00001.parquet")
    assert table.column("id").to_pylist() == manifest["ids"]["sft"]  # ordered by id
    assert b"huggingface" in table.schema.metadata


def test_two_exports_of_the_same_warehouse_are_byte_identical(tmp_path):
    folders = []
    for name in ("a", "b"):
        blobs = BlobStore(tmp_path / name / "blobs")
        with Warehouse(tmp_path / name / "warehouse.duckdb") as warehouse:
            add_samples(warehouse, blobs, 0, 12)
            config = Config(export=ExportConfig(max_shard_bytes=2048))
            export(warehouse, blobs, tmp_path / name / "exports", config)
        folders.append(folder_bytes(tmp_path / name / "exports" / "v1"))
    assert len([p for p in folders[0] if p.startswith("data/sft-")]) > 1  # really sharded
    assert folders[0] == folders[1]


def test_shards_are_bounded_and_named_of_n(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    config = Config(export=ExportConfig(max_shard_bytes=1024))
    export(warehouse, blobs, tmp_path / "exports", config)
    manifest = loads_manifest((tmp_path / "exports/v1/manifest.json").read_text())
    sft = [f for f in manifest["files"] if f["config"] == "sft"]
    # each row holds two ~200-byte images plus text, so at most a couple of rows fit under 1 KiB
    assert len(sft) >= 3
    assert [f["path"] for f in sft] == [
        f"data/sft-{i:05d}-of-{len(sft):05d}.parquet" for i in range(len(sft))
    ]
    assert sum(f["rows"] for f in sft) == 6


def test_datasets_loads_both_configs_from_files_and_folder(curated, tmp_path):  # noqa: F811
    datasets = pytest.importorskip("datasets")
    warehouse, blobs = curated
    export(warehouse, blobs, tmp_path / "exports", Config(export=ExportConfig(max_shard_bytes=2048)))
    folder = tmp_path / "exports" / "v1"
    cache = str(tmp_path / "hf-cache")
    expected = warehouse.query(
        "SELECT id, images, gt_image FROM sft_rows WHERE curator = ? ORDER BY id", [CURATOR]
    )
    for name, rows in (("sft", 6), ("rl", 6)):
        files = sorted(str(p) for p in (folder / "data").glob(f"{name}-*.parquet"))
        by_files = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
        by_folder = datasets.load_dataset(str(folder), name, split="train", cache_dir=cache)
        for dataset in (by_files, by_folder):
            assert dataset.num_rows == rows
            image_feature = (
                dataset.features["images"].feature if name == "sft" else dataset.features["gt_image"]
            )
            assert isinstance(image_feature, datasets.Image)
    sft = datasets.load_dataset(str(folder), "sft", split="train", cache_dir=cache)
    sft = sft.cast_column("images", datasets.List(datasets.Image(decode=False)))
    assert sft["id"] == expected.column("id").to_pylist()
    for row, shas in zip(sft, expected.column("images").to_pylist(), strict=True):
        assert [hashlib.sha256(image["bytes"]).hexdigest() for image in row["images"]] == shas
        assert row["messages"][0]["role"] == "system"
        assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"]) == 2


def test_manifest_records_added_and_removed_ids_against_the_parent(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    v1 = export(warehouse, blobs, tmp_path / "exports")
    add_samples(warehouse, blobs, 12, 15)  # 12, 14 -> sft; 13 -> rl
    dropped = warehouse.rows(Sample, "id = 'sample-001'")[0].model_copy(
        update={"status": "dropped", "reason": "judge_low_score"}
    )
    warehouse.replace(dropped)
    v2 = export(warehouse, blobs, tmp_path / "exports")
    assert (v2.id, v2.parent, v2.sft_rows, v2.rl_rows) == ("v2", "v1", 8, 6)
    manifest = loads_manifest((tmp_path / "exports/v2/manifest.json").read_text())
    assert manifest["parent"] == "v1"
    assert manifest["changes"] == {
        "sft": {"added": ["sample-012", "sample-014"], "removed": []},
        "rl": {"added": ["sample-013"], "removed": ["sample-001"]},
    }
    assert json.loads(v2.manifest_json) == manifest
    assert [v.id for v in warehouse.rows(Version, order_by="created_at")] == [v1.id, "v2"]


def test_unchanged_warehouse_makes_no_new_version_and_explicit_names_are_checked(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    v1 = export(warehouse, blobs, tmp_path / "exports")
    assert export(warehouse, blobs, tmp_path / "exports") == v1
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["v1"]
    with pytest.raises(ExportError, match="version v1 already exists"):
        export(warehouse, blobs, tmp_path / "exports", version="v1")
    forced = export(warehouse, blobs, tmp_path / "exports", version="v1-rerun")
    assert (forced.id, forced.parent) == ("v1-rerun", "v1")


def test_version_names():
    assert next_version_name([], ExportConfig()) == "v1"
    assert next_version_name(["v1", "v9", "v10", "1.0.0"], ExportConfig()) == "v11"
    assert next_version_name(["v1"], ExportConfig(version_scheme="semver", semver="1.2.0")) == "1.2.0"
    with pytest.raises(ExportError, match="semantic version"):
        next_version_name([], ExportConfig(version_scheme="semver", semver="one"))


def test_card_has_hub_yaml_and_no_secrets(curated, tmp_path, monkeypatch):  # noqa: F811
    warehouse, blobs = curated
    secret = "sk-very-secret-value-123"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("JUDGE_KEY", secret)
    judge = LLMEndpointConfig(base_url="http://127.0.0.1:1/v1", model="judge", api_key_env="JUDGE_KEY")
    config = Config(llm=LLMConfig(judge=judge))
    export(warehouse, blobs, tmp_path / "exports", config)
    folder = tmp_path / "exports" / "v1"
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    card = (folder / "README.md").read_text()
    import yaml

    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-sa-4.0"
    assert "text-to-image" in header["task_categories"]
    assert header["size_categories"] == ["n<1K"]
    assert header["configs"] == [
        {
            "config_name": "sft",
            "data_files": [{"split": "train", "path": "data/sft-*.parquet"}],
            "default": True,
        },
        {"config_name": "rl", "data_files": [{"split": "train", "path": "data/rl-*.parquet"}]},
    ]
    assert header["dataset_info"][1]["features"][2] == {"name": "gt_image", "dtype": "image"}
    assert "| 6 | samples | kept_sft | 7 |" in card
    assert "| astronomy | 2 | 2 |" in card
    assert "CC BY-SA 4.0" in card and "Wikipedia" in card
    assert 'load_dataset("path/to/v1", "rl", split="train")' in card  # no Hub repo known: a local path


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=40))
def test_round_trip_row_parquet_duckdb_export_unchanged(tmp_path_factory, text):
    """Warehouse row -> exported Parquet -> DuckDB -> re-export: text and image bytes unchanged."""
    root = tmp_path_factory.mktemp("round")
    blobs = BlobStore(root / "blobs")
    with Warehouse(root / "warehouse.duckdb") as warehouse:
        add_samples(warehouse, blobs, 0, 2)
        warehouse.connection.execute(
            "UPDATE prompts SET prompt = ? WHERE id = 'prompt-000'", [text]
        ).fetchall()
        export(warehouse, blobs, root / "exports")
        expected = warehouse.query(
            "SELECT id, prompt, gen_prompt, messages, images FROM sft_rows ORDER BY id"
        ).to_pylist()
    shard = str(root / "exports/v1/data/sft-00000-of-00001.parquet")
    with duckdb.connect() as connection:
        rows = connection.execute(
            "SELECT id, prompt, gen_prompt, messages, list_transform(images, lambda i: sha256(i.bytes)) "
            f"FROM read_parquet('{shard}') ORDER BY id"
        ).fetchall()
    assert rows[0][1] == text
    got = [{"id": r[0], "prompt": r[1], "gen_prompt": r[2], "messages": r[3], "images": r[4]} for r in rows]
    assert got == expected


def test_a_failed_export_leaves_no_folder_and_no_version(curated, tmp_path):  # noqa: F811
    from warehouse.blobs import BlobNotFoundError

    warehouse, blobs = curated
    sha = warehouse.query("SELECT gt_image FROM rl_rows ORDER BY id LIMIT 1").column(0)[0].as_py()
    blobs.path(sha).unlink()
    with pytest.raises(BlobNotFoundError):
        export(warehouse, blobs, tmp_path / "exports")
    assert list((tmp_path / "exports").iterdir()) == []
    assert warehouse.rows(Version) == []
