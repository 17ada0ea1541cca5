"""The whole offline pipeline, end to end: in-process flow, CLI, idempotent rerun, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.runner import run_regenerate
from schemas.config import Config, SizesConfig
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

TABLES = ("topics", "prompts", "trajectories", "images", "judgements", "samples", "versions")


def small_config(workdir: Path, sft: int = 6, rl: int = 4, batch_size: int = 4) -> Config:
    return Config(workdir=workdir, batch_size=batch_size, sizes=SizesConfig(sft=sft, rl=rl))


def table_ids(workdir: Path) -> dict[str, list[str]]:
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return {
            table: [
                row[0]
                for row in warehouse.connection.execute(f"select id from {table} order by id").fetchall()
            ]
            for table in TABLES
        }


def content(workdir: Path) -> dict[str, object]:
    """Every stage's rows, all columns but measured timings."""
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return {
            table: warehouse.query(f"select * exclude (elapsed_s) from {table} order by id").to_pylist()
            if table == "images"
            else warehouse.query(f"select * from {table} order by id").to_pylist()
            for table in TABLES
            if table != "versions"
        }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, prefect_server):
    workdir = tmp_path_factory.mktemp("run")
    config = small_config(workdir)
    result = run_regenerate(config)
    return workdir, config, result


def test_whole_pipeline_produces_a_version(finished_run):
    workdir, config, result = finished_run
    counts = result["counts"]
    assert counts["topics"]["rows_written"] == config.sizes.prompts_wanted
    assert counts["prompts"]["rows_written"] >= config.sizes.prompts_wanted
    version = result["version"]
    assert version["id"] == "v1"
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        sft = warehouse.count("sft_rows")
        rl = warehouse.count("rl_rows")
        funnel = warehouse.query("select * from funnel").to_pylist()
        unexplained = warehouse.query(
            "select count(*) n from trajectories t where not exists (select 1 from samples s where s.trajectory_id = t.id)"
        ).to_pylist()[0]["n"]
    assert (version["sft_rows"], version["rl_rows"]) == (sft, rl)
    assert sft + rl > 0
    assert sft <= config.sizes.sft and rl <= config.sizes.rl
    assert unexplained == 0, "every trajectory gets a curation decision (kept or a drop reason)"
    assert any(row["stage"] == "samples" for row in funnel)
    manifest = json.loads((workdir / "exports" / "v1" / "manifest.json").read_text())
    assert manifest["version"] == "v1"


def test_export_is_readable_by_datasets(finished_run):
    import datasets

    workdir, _, result = finished_run
    export = workdir / "exports" / "v1"
    sft = datasets.load_dataset(str(export), "sft", split="train")
    rl = datasets.load_dataset(str(export), "rl", split="train")
    assert len(sft) == result["version"]["sft_rows"]
    assert len(rl) == result["version"]["rl_rows"]
    if len(rl):
        assert isinstance(rl.features["gt_image"], datasets.Image)
        assert rl[0]["gt_image"].size == (64, 64)
    if len(sft):
        row = sft[0]
        assert row["messages"][0]["role"] == "system"
        placeholders = sum(message["content"].count("<image>") for message in row["messages"])
        assert placeholders == len(row["images"])


def test_second_run_does_no_new_work(finished_run):
    workdir, config, _ = finished_run
    before = table_ids(workdir)
    result = run_regenerate(config)
    written = {stage: counts["rows_written"] for stage, counts in result["counts"].items()}
    assert written == dict.fromkeys(written, 0)
    assert result["version"] is None
    assert table_ids(workdir) == before


def test_cli_sql_answers_on_the_run(finished_run):
    from typer.testing import CliRunner

    from flows.cli import app

    workdir, _, result = finished_run
    output = CliRunner().invoke(
        app, ["sql", "select count(*) as n from sft_rows", "-w", str(workdir), "-f", "json"]
    )
    assert output.exit_code == 0, output.output
    assert json.loads(output.output) == {"n": result["version"]["sft_rows"]}


def _blob_count(workdir: Path) -> int:
    return sum(1 for _ in (workdir / "blobs").rglob("*")) if (workdir / "blobs").exists() else 0


def test_resume_after_sigkill_gives_the_same_rows(tmp_path, finished_run, prefect_server):
    reference_dir, _, _ = finished_run
    workdir = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "--sft",
        "6",
        "--rl",
        "4",
        "--batch-size",
        "4",
        "--workdir",
        str(workdir),
        "--quiet",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    # kill mid-run: once the teacher has stored a few reference images, before the run can finish
    while time.monotonic() < deadline and process.poll() is None and _blob_count(workdir) < 6:
        time.sleep(0.05)
    assert process.poll() is None, (
        "the run finished before it could be killed: " + process.stdout.read().decode()
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert table_ids(workdir) == table_ids(reference_dir)
    assert content(workdir) == content(reference_dir)
    exported = sorted(p.name for p in (workdir / "exports" / "v1" / "data").iterdir())
    reference = sorted(p.name for p in (reference_dir / "exports" / "v1" / "data").iterdir())
    assert exported == reference
    for name in exported:
        assert (workdir / "exports/v1/data" / name).read_bytes() == (
            reference_dir / "exports/v1/data" / name
        ).read_bytes()


def test_cli_export_formats_and_push_to_a_hub(finished_run, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from testkit.servers.hub_server import run_hub_server

    workdir, _, result = finished_run
    cli = CliRunner()
    exported = cli.invoke(app, ["export", "-w", str(workdir)])
    assert exported.exit_code == 0, exported.output
    assert exported.output.startswith("unchanged since v1:")  # no change since the run's own export
    llamafactory = cli.invoke(
        app, ["export", "-w", str(workdir), "-f", "llamafactory", "-o", str(tmp_path / "lf")]
    )
    assert llamafactory.exit_code == 0, llamafactory.output
    rows = json.loads((tmp_path / "lf" / "groundgen_sft.json").read_text())
    assert len(rows) == result["version"]["sft_rows"]
    assert json.loads((tmp_path / "lf" / "dataset_info.json").read_text())

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with run_hub_server(token="hf_secret_token_for_tests") as (endpoint, state):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_tests")
        pushed = cli.invoke(app, ["push", "--repo", "org/groundgen-test", "-w", str(workdir)])
        assert pushed.exit_code == 0, pushed.output
        assert pushed.output.startswith(f"pushed v1 to {endpoint}/datasets/org/groundgen-test @ ")
        again = cli.invoke(
            app, ["push", "--repo", "org/groundgen-test", "-w", str(workdir), "--version", "v1"]
        )
        assert again.output.strip() == "org/groundgen-test already has v1 (tag v1); nothing changed"
        missing = cli.invoke(
            app, ["push", "--repo", "org/groundgen-test", "-w", str(workdir), "--version", "v9"]
        )
        assert missing.exit_code == 2
        assert "version v9 does not exist (versions: v1)" in missing.output
        assert "hf_secret_token_for_tests" not in pushed.output + again.output + missing.output
