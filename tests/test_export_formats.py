"""Training formats: LLaMA-Factory sharegpt JSON and the rllm RL layout, from an exported version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from schemas.config import Config
from tests.test_export_helpers import CURATOR, curated  # noqa: F401  (fixture)
from warehouse.export import export_version
from warehouse.formats import export_llamafactory, export_rllm, sharegpt_messages


def _version(curated, tmp_path) -> Path:  # noqa: F811
    warehouse, blobs = curated
    version = export_version(
        warehouse, blobs, tmp_path / "exports", Config(), curator=CURATOR, code_version="t"
    )
    return Path(version.path)


def test_llamafactory_sharegpt_roles_alternate_and_images_match_placeholders(curated, tmp_path):  # noqa: F811
    warehouse, _ = curated
    out = tmp_path / "lf"
    report = export_llamafactory(_version(curated, tmp_path), out)
    assert (report.rows, report.skipped, report.images) == (6, 0, 12)
    rows = json.loads((out / "groundgen_sft.json").read_text())
    expected = warehouse.query("SELECT id, images FROM sft_rows WHERE curator = ? ORDER BY id", [CURATOR])
    assert [row["id"] for row in rows] == expected.column("id").to_pylist()
    for row, shas in zip(rows, expected.column("images").to_pylist(), strict=True):
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system"
        assert roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
        assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"]) == 2
        for path, sha in zip(row["images"], shas, strict=True):
            assert path == f"images/{sha}.png"
            assert hashlib.sha256((out / path).read_bytes()).hexdigest() == sha
    assert json.loads((out / "dataset_info.json").read_text()) == {
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


def test_rllm_rows_are_id_prompt_and_existing_gt_image_paths(curated, tmp_path):  # noqa: F811
    warehouse, _ = curated
    out = tmp_path / "rllm"
    report = export_rllm(_version(curated, tmp_path), out)
    assert (report.rows, report.skipped, report.images) == (6, 0, 6)
    rows = json.loads((out / "groundgen_rl.json").read_text())
    expected = warehouse.query(
        "SELECT id, prompt, gt_image FROM rl_rows WHERE curator = ? ORDER BY id", [CURATOR]
    )
    assert [sorted(row) for row in rows] == [["gt_image", "id", "prompt"]] * 6
    assert [(r["id"], r["prompt"]) for r in rows] == list(
        zip(expected.column("id").to_pylist(), expected.column("prompt").to_pylist(), strict=True)
    )
    for row, sha in zip(rows, expected.column("gt_image").to_pylist(), strict=True):
        path = Path(row["gt_image"])
        assert path.is_absolute() and path == (out / "images" / f"{sha}.png").resolve()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    relative = export_rllm(_version_dir(tmp_path), tmp_path / "rel", absolute_paths=False)
    first = json.loads(relative.path.read_text())[0]
    assert first["gt_image"].startswith("images/") and (tmp_path / "rel" / first["gt_image"]).exists()


def _version_dir(tmp_path: Path) -> Path:
    return tmp_path / "exports" / "v1"
