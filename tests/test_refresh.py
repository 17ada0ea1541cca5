"""Incremental refresh: only new topics are processed, the manifest's `added` is exactly the new samples,
a refresh with nothing new exports nothing, quotas grow by the new topics' share, one refresh at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from extractors.topic_selection import interleave_by_category
from extractors.wiki_offline import WikiOfflineSource
from flows.refresh import RefreshLockedError, raised_sizes, refresh_lock, run_refresh
from flows.runner import run_regenerate
from schemas.config import Config, SizesConfig, TopicsConfig
from schemas.rows import Prompt, SourceState, Topic, Trajectory
from warehouse.store import Warehouse

FIRST = ["history", "politics", "sports"]  # 5 Technology articles: a first run mines them all
MORE = [*FIRST, "film", "geography"]  # 5 more


def config_for(workdir: Path, categories: list[str]) -> Config:
    return Config(
        workdir=workdir,
        batch_size=4,
        sizes=SizesConfig(sft=3, rl=2),
        topics=TopicsConfig(source_categories=["Technology"], categories=categories),
    )


def test_raised_sizes_add_the_new_topics_share():
    sizes = SizesConfig(sft=6, rl=4)
    assert raised_sizes(sizes, {"sft": 6, "rl": 3}, 5).model_dump() == {"sft": 9, "rl": 6, "oversample": 1.25}
    assert raised_sizes(sizes, {"sft": 9, "rl": 1}, 1).model_dump() == {
        "sft": 10,
        "rl": 5,
        "oversample": 1.25,
    }
    assert raised_sizes(sizes, {"sft": 2, "rl": 1}, 0).model_dump() == {"sft": 6, "rl": 4, "oversample": 1.25}


def test_refresh_lock_names_the_holder_and_takes_over_a_dead_one(tmp_path):
    with refresh_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(
            RefreshLockedError, match=rf"another groundgen refresh is running .* \(pid {os.getpid()},"
        ):
            with refresh_lock(tmp_path):
                pass
    assert not (tmp_path / "groundgen.lock").exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / "groundgen.lock").write_text(json.dumps({"pid": int(dead.stdout), "since": "x"}))
    with refresh_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_cli_refresh_refuses_while_another_holds_the_lock(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "groundgen.lock").write_text(
            json.dumps({"pid": holder.pid, "since": "2026-01-01T00:00:00+00:00", "command": "refresh"})
        )
        result = CliRunner().invoke(app, ["refresh", "-w", str(tmp_path)])
        # a run refuses the same work directory while the refresh holds it
        run = CliRunner().invoke(app, ["run", "-w", str(tmp_path), "--quiet"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2
    assert (
        f"another groundgen refresh is running in {tmp_path} (pid {holder.pid}, since 2026-01-01T00:00:00+00:00)"
        in " ".join(result.output.split())
    )
    assert run.exit_code == 2
    assert f"another groundgen refresh is running in {tmp_path}" in " ".join(run.output.split())


def _ids(workdir: Path, model) -> set[str]:
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return warehouse.ids(model)


def _kept(workdir: Path) -> set[str]:
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        return {
            r[0]
            for r in warehouse.connection.execute("select id from samples where status='kept'").fetchall()
        }


@pytest.mark.slow
def test_refresh_processes_only_new_topics_and_exports_exactly_them(tmp_path, prefect_server):
    workdir = tmp_path / "w"
    first = run_regenerate(config_for(workdir, FIRST))
    assert first["version"]["id"] == "v1"
    topics_before, prompts_before = _ids(workdir, Topic), _ids(workdir, Prompt)
    trajectories_before, kept_before = _ids(workdir, Trajectory), _kept(workdir)
    assert len(topics_before) == 5

    nothing = run_refresh(config_for(workdir, FIRST), max_topics=10)
    assert (nothing["new_topics"], nothing["new_samples"], nothing["version"]) == (0, 0, None)
    assert nothing["message"] == "refresh: nothing new since the last refresh; no version exported"
    assert nothing["counts"]["prompts"]["inputs"] == 0
    assert _ids(workdir, Prompt) == prompts_before

    # a newly enabled category: 5 new topics, at most 4 taken, in the category-interleaved order
    source = WikiOfflineSource(source_categories=["Technology"], categories=MORE)
    expected = [t.id for t in interleave_by_category(t for t in source.topics() if t.id not in topics_before)]
    assert len(expected) == 5
    result = run_refresh(config_for(workdir, MORE), max_topics=4, min_new=1)
    assert result["new_topics"] == 4
    assert _ids(workdir, Topic) - topics_before == set(expected[:4])
    new_prompts = _ids(workdir, Prompt) - prompts_before
    assert result["counts"]["prompts"]["inputs"] == 4  # only the new topics were processed
    with Warehouse(workdir / "warehouse.duckdb", read_only=True) as warehouse:
        prompts = {p.id: p for p in warehouse.rows(Prompt)}
        state = warehouse.rows(SourceState)
    assert {prompts[p].topic_ids[0] for p in new_prompts} == set(expected[:4])
    assert result["counts"]["trajectories"]["inputs"] == len(new_prompts)
    assert len(_ids(workdir, Trajectory) - trajectories_before) == len(new_prompts)
    new_kept = _kept(workdir) - kept_before
    assert new_kept and result["new_samples"] == len(new_kept)
    assert result["version"] == "v2"
    manifest = json.loads((workdir / "exports" / "v2" / "manifest.json").read_text())
    added = set(manifest["changes"]["sft"]["added"]) | set(manifest["changes"]["rl"]["added"])
    assert added == new_kept
    assert manifest["changes"]["sft"]["removed"] == manifest["changes"]["rl"]["removed"] == []
    assert [s.id for s in state] == ["wiki_offline"] and state[0].watermark

    # the fifth topic: kept samples below --min-new export nothing; then nothing new at all
    few = run_refresh(config_for(workdir, MORE), max_topics=4, min_new=50)
    assert few["new_topics"] == 1 and few["version"] is None
    assert "fewer than --min-new 50); no version exported" in few["message"]
    assert not (workdir / "exports" / "v3").exists()
    again = run_refresh(config_for(workdir, MORE), max_topics=4, min_new=1)
    assert again["new_topics"] == 0
    if few["new_samples"]:  # kept but not yet exported rows are what the next version adds
        assert again["version"] == "v3"
    else:
        assert again["version"] is None
