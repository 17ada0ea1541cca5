"""`groundgen export --format verl`: the record layout verl's RLHFDataset, agent loop and reward managers
read (pinned field by field), the hash split, the tool config, and the tool adapter verl runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from flows.exporting import write_training_format
from schemas.config import Config, TeacherConfig
from schemas.rows import Prompt
from synthesis.agent_protocol import TOOL_SCHEMAS, opening_messages
from synthesis.episode import ModelReply, run_episode
from synthesis.toolbox import Toolbox
from testkit.synthesis_fakes import MemoryBlobs, fake_tools
from tests.test_export_helpers import CURATOR, curated  # noqa: F401  (fixture)
from warehouse.export import export_version, version_folder
from warehouse.formats import FormatError
from warehouse.verl_format import DATA_SOURCE, TOOL_CLASS, required_facts, split_of

COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]
EXTRA_INFO = ["index", "id", "split", "gt_image", "category", "difficulty"]


def _version(warehouse, blobs, tmp_path: Path) -> Path:
    version = export_version(
        warehouse, blobs, tmp_path / "exports", Config(), curator=CURATOR, code_version="t"
    )
    return version_folder(warehouse.path.parent, version)


def _set_facts(warehouse) -> None:
    warehouse.connection.execute(
        "UPDATE prompts SET required_facts = ['the year ' || id, 'the name'] WHERE id LIKE 'prompt-0%'"
    ).fetchall()


def _rows(folder: Path) -> list[dict]:
    return [
        row for split in ("train", "test") for row in pq.read_table(folder / f"{split}.parquet").to_pylist()
    ]


def test_verl_rows_pin_the_fields_verl_reads_and_resolve_from_a_copied_folder(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    _set_facts(warehouse)
    config = Config()
    out = tmp_path / "verl"
    report = write_training_format(
        config,
        _version(warehouse, blobs, tmp_path),
        out,
        "verl",
        test_ratio=0.5,
        facts=required_facts(warehouse),
    )
    assert (report.rows, report.skipped, report.images) == (6, 0, 6)
    for split in ("train", "test"):
        schema = pq.read_schema(out / f"{split}.parquet")
        assert schema.names == COLUMNS  # no `images` column: the ground truth is never the policy's input
    moved = tmp_path / "elsewhere" / "verl"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    rows = _rows(moved)
    expected = warehouse.query(
        "SELECT id, prompt, gen_prompt, gt_image, category, difficulty FROM rl_rows WHERE curator = ? ORDER BY id",
        [CURATOR],
    ).to_pylist()
    assert sorted(r["extra_info"]["id"] for r in rows) == [e["id"] for e in expected]
    system = opening_messages("", config.teacher)[0].content
    by_id = {e["id"]: e for e in expected}
    for row in rows:
        info = row["extra_info"]
        source = by_id[info["id"]]
        assert list(info) == EXTRA_INFO
        assert row["data_source"] == DATA_SOURCE and row["ability"]
        # a list of chat messages (a string would render as an empty chat in verl)
        assert row["prompt"] == [
            {"role": "system", "content": system},
            {"role": "user", "content": source["prompt"]},
        ]
        assert all("<image>" not in m["content"] for m in row["prompt"])  # no image tokens without images
        assert row["reward_model"] == {
            "style": "model",
            "ground_truth": {
                "gen_prompt": source["gen_prompt"],
                "facts": [f"the year prompt-{info['id'][-3:]}", "the name"],
            },
        }
        assert info["split"] == split_of(info["id"], 0.5)
        assert (info["category"], info["difficulty"]) == (source["category"], source["difficulty"])
        assert info["gt_image"] == f"images/{source['gt_image']}.png"
        assert hashlib.sha256((moved / info["gt_image"]).read_bytes()).hexdigest() == source["gt_image"]
    for split in ("train", "test"):
        indexes = [r["extra_info"]["index"] for r in rows if r["extra_info"]["split"] == split]
        assert indexes == list(range(len(indexes)))
    assert {r["extra_info"]["split"] for r in rows} == {"train", "test"}  # both files hold rows
    assert "data.train_files=/path/to/this/folder/train.parquet" in (moved / "README.md").read_text()


def test_verl_prompt_is_how_the_teachers_trajectories_begin():
    teacher = TeacherConfig(date="2026-10-01", max_model_calls=5, max_tool_calls=4)
    prompt = Prompt(id="p", topic_ids=["t"], category="art", difficulty="easy", prompt="Draw X.", writer="w")

    async def answer(messages):
        return ModelReply("<think>x</think><answer>{}</answer>")

    trajectory = asyncio.run(
        run_episode(prompt, answer, Toolbox(fake_tools()), teacher="T", config=teacher)
    ).trajectory
    begins = [m.model_dump(include={"role", "content"}) for m in trajectory.messages[:2]]
    assert begins == [m.model_dump(include={"role", "content"}) for m in opening_messages("Draw X.", teacher)]
    assert "2026-10-01" in begins[0]["content"] and '"name": "image_search"' in begins[0]["content"]


def test_split_is_a_stable_hash_of_the_id_at_the_ratio():
    ids = [f"sample-{n}" for n in range(20_000)]
    test_share = sum(split_of(i, 0.05) == "test" for i in ids) / len(ids)
    assert 0.045 < test_share < 0.055
    assert [split_of(i, 0.05) for i in ids[:500]] == [split_of(i, 0.05) for i in ids[:500]]
    assert {split_of(i, 0.0) for i in ids[:500]} == {"train"} and {split_of(i, 1.0) for i in ids[:500]} == {
        "test"
    }
    # a row's split depends on its id alone: a larger ratio only moves rows from train to test
    assert all(split_of(i, 0.2) == "test" for i in ids if split_of(i, 0.05) == "test")
    with pytest.raises(ValueError):
        split_of("x", 1.5)


def test_a_row_keeps_its_split_when_other_rows_are_added(curated, tmp_path):  # noqa: F811
    from tests.test_export_helpers import add_samples

    warehouse, blobs = curated
    first = write_training_format(
        Config(), _version(warehouse, blobs, tmp_path), tmp_path / "a", "verl", test_ratio=0.5
    )
    add_samples(warehouse, blobs, 12, 20)
    version = export_version(
        warehouse, blobs, tmp_path / "exports", Config(), curator=CURATOR, code_version="t"
    )
    second = write_training_format(
        Config(), version_folder(warehouse.path.parent, version), tmp_path / "b", "verl", test_ratio=0.5
    )
    assert (first.rows, second.rows) == (6, 10)
    before = {r["extra_info"]["id"]: r["extra_info"]["split"] for r in _rows(tmp_path / "a")}
    after = {r["extra_info"]["id"]: r["extra_info"]["split"] for r in _rows(tmp_path / "b")}
    assert {key: after[key] for key in before} == before


def test_verl_absolute_paths_and_skipped_rows(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    version_dir = _version(warehouse, blobs, tmp_path)
    (shard,) = sorted((version_dir / "data").glob("rl-*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["gt_image"] = None
    rows[1]["prompt"] = "Draw <image> here."
    pq.write_table(table.from_pylist(rows, schema=table.schema), shard)
    out = tmp_path / "verl"
    report = write_training_format(Config(), version_dir, out, "verl", absolute_paths=True)
    assert (report.rows, report.skipped) == (4, 2)
    assert report.skip_reasons == {"image_placeholder_in_prompt": 1, "no_gt_image": 1}
    assert report.summary("verl").startswith(
        "verl: 4 rows written, 2 skipped (image_placeholder_in_prompt: 1, no_gt_image: 1), 4 images -> "
    )
    for row in _rows(out):
        path = Path(row["extra_info"]["gt_image"])
        assert path.is_absolute() and path.exists()


def test_a_missing_version_folder_is_an_error_not_zero_rows(tmp_path):
    with pytest.raises(FormatError, match="no manifest.json"):
        write_training_format(Config(), tmp_path / "exports" / "v1", tmp_path / "verl", "verl")


def test_tool_config_follows_verls_tool_config_layout(curated, tmp_path):  # noqa: F811
    warehouse, blobs = curated
    out = tmp_path / "verl"
    write_training_format(Config(), _version(warehouse, blobs, tmp_path), out, "verl")
    config = yaml.safe_load((out / "tool_config.yaml").read_text())
    assert [tool["tool_schema"]["function"]["name"] for tool in config["tools"]] == [
        "search",
        "image_search",
        "browse",
    ]
    for tool, schema in zip(config["tools"], TOOL_SCHEMAS, strict=True):
        assert tool["class_name"] == TOOL_CLASS and tool["config"]["type"] == "native"
        assert tool["tool_schema"] == schema
        # what verl's OpenAIFunctionToolSchema requires: type, function name/description, typed properties
        function = tool["tool_schema"]["function"]
        assert tool["tool_schema"]["type"] == "function" and function["description"]
        assert function["parameters"]["type"] == "object"
        assert all("type" in prop for prop in function["parameters"]["properties"].values())
    module, name = TOOL_CLASS.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[name]), name).__name__ == name


class _ToolResponse:
    def __init__(self, text=None, image=None):
        self.text, self.image = text, image


@pytest.fixture
def verl_schemas(monkeypatch):
    """verl's ToolResponse module, as the agent loop's environment provides it (verl is too heavy for CI)."""
    for name in ("verl", "verl.tools"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = types.ModuleType("verl.tools.schemas")
    module.ToolResponse = _ToolResponse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "verl.tools.schemas", module)


def test_groundgen_tool_runs_the_teachers_toolbox_per_rollout(verl_schemas):
    from contextlib import asynccontextmanager

    from flows.verl_tools import GroundgenTool

    blobs = MemoryBlobs()
    tools = fake_tools(blobs)

    @asynccontextmanager
    async def open_tools():
        yield tools, blobs

    schemas = {schema["function"]["name"]: schema for schema in TOOL_SCHEMAS}
    image_search = GroundgenTool({"type": "native"}, schemas["image_search"], open_tools=open_tools)
    search = GroundgenTool({"type": "native"}, schemas["search"], open_tools=open_tools)

    async def call(tool, arguments, rollout):
        """What verl's ToolAgentLoop does for every tool call: create, execute, release."""
        instance, _ = await tool.create(create_kwargs={})
        try:
            return await tool.execute(
                instance, arguments, agent_data=types.SimpleNamespace(request_id=rollout)
            )
        finally:
            await tool.release(instance)

    async def rollouts():
        first = await call(image_search, {"query": "Eiffel Tower"}, "rollout-1")
        repeated = await call(image_search, {"query": "eiffel tower"}, "rollout-1")
        second = await call(image_search, {"query": "Gustave Eiffel"}, "rollout-1")
        other = await call(image_search, {"query": "Eiffel Tower"}, "rollout-2")
        found = await call(search, {"queries": ["Gustave Eiffel"], "top_k": 2}, "rollout-1")
        return first, repeated, second, other, found

    first, repeated, second, other, found = asyncio.run(rollouts())
    response, reward, metrics = first
    assert reward == 0.0 and metrics["ok"] and metrics["images"] == len(response.image) >= 1
    assert response.text.startswith('### Images for "Eiffel Tower"') and "IMG_001" in response.text
    assert "<image>" not in response.text and "<tool_response>" not in response.text
    assert response.image[0].mode == "RGB"
    # one memory per rollout across calls and tools: repeats refused, image ids keep counting
    assert not repeated[2]["ok"] and "already used" in repeated[0].text
    shown = len(response.image)
    assert second[2]["ok"] and f"IMG_{shown + 1:03d}" in second[0].text
    assert other[2]["ok"] and "IMG_001" in other[0].text  # another rollout starts afresh
    assert found[0].image is None
    assert "[Gustave Eiffel](http://corpus.test/wiki/Gustave_Eiffel)" in found[0].text


def test_cli_export_verl_prints_rows_written_and_skipped(curated, tmp_path, monkeypatch):  # noqa: F811
    from flows.cli import app

    warehouse, _ = curated
    warehouse.close()
    monkeypatch.setattr(Config, "curation_fingerprint", lambda self: CURATOR)
    result = CliRunner().invoke(
        app, ["export", "--workdir", str(tmp_path), "--format", "verl", "--test-ratio", "0.5"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("exported v1: 6 SFT rows, 6 RL rows")
    target = tmp_path / "exports" / "v1-verl"
    assert lines[1] == (
        f"verl: 6 rows written, 0 skipped, 6 images -> {target / 'train.parquet'}, {target / 'test.parquet'}"
    )
    assert json.loads(json.dumps(_rows(target)[0]["extra_info"]))["gt_image"].startswith("images/")
