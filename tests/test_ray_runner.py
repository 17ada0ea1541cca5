"""The offline pipeline on a local Ray instance (2 CPUs) gives exactly the rows of the default runner."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from flows.runner import run_regenerate, task_runner_for
from flows.submit import batch_resources
from schemas.config import Config, PainterConfig
from tests.test_pipeline_offline import content, small_config, table_ids

pytest.importorskip("prefect_ray")


def test_ray_runner_settings_and_batch_resources(monkeypatch, tmp_path):
    monkeypatch.setenv("GROUNDGEN_RAY_CPUS", "2")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    runner = task_runner_for(Config(workdir=tmp_path, runner="ray"))
    assert runner.init_kwargs["num_cpus"] == 2
    assert runner.init_kwargs["_node_ip_address"] == "127.0.0.1"
    assert runner.init_kwargs["runtime_env"]["env_vars"]["PREFECT_API_URL"] == "http://127.0.0.1:1/api"
    assert task_runner_for(Config(workdir=tmp_path, runner="ray:10.0.0.5:6379")).address == "10.0.0.5:6379"

    from prefect_ray.context import RemoteOptionsContext

    def options(config: Config, task: str) -> dict:
        with batch_resources(config, task):
            return dict(RemoteOptionsContext.get().current_remote_options)

    gpu = Config(runner="ray", painter=PainterConfig(device="cuda:0"))
    assert options(gpu, "paint-images") == {"num_gpus": 1}
    assert options(gpu, "run-teacher") == {"num_cpus": 1}
    assert options(Config(runner="ray"), "paint-images") == {"num_cpus": 1}
    assert options(Config(), "paint-images") == {}


@pytest.mark.slow
def test_local_ray_gives_the_same_rows_as_threads(tmp_path, monkeypatch, prefect_server):
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    monkeypatch.setenv("GROUNDGEN_RAY_TMPDIR", ray_tmp)
    monkeypatch.setenv("GROUNDGEN_RAY_CPUS", "2")
    try:
        threads = small_config(tmp_path / "threads", sft=3, rl=2)
        ray = small_config(tmp_path / "ray", sft=3, rl=2).model_copy(update={"runner": "ray"})
        expected = run_regenerate(threads)
        got = run_regenerate(ray)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert got["version"]["id"] == expected["version"]["id"] == "v1"
    assert table_ids(tmp_path / "ray") == table_ids(tmp_path / "threads")
    assert content(tmp_path / "ray") == content(tmp_path / "threads")
    assert content(tmp_path / "ray")["samples"], "the run kept samples"
    for name in ("sft", "rl"):
        ours = sorted((tmp_path / "ray/exports/v1/data").glob(f"{name}-*.parquet"))
        theirs = sorted((tmp_path / "threads/exports/v1/data").glob(f"{name}-*.parquet"))
        assert [p.read_bytes() for p in ours] == [p.read_bytes() for p in theirs]
