"""Overlapping stages (flows/overlap.py): the painter starts while the teacher is still running, each
stage keeps at most `in_flight_batches` batches out, and the rows are those of a stage-by-stage run.

The runs go the production way: `run_regenerate`, the regenerate flow, the Prefect thread task runner
and the session's Prefect server; only the tasks' functions are wrapped to record when they ran."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows import tasks
from flows.runner import run_regenerate
from flows.stages import STAGE_NAMES
from tests.test_pipeline_offline import content, small_config

BATCH_TASKS = ("write_prompts", "run_teacher", "paint_images", "judge_images")


class Recorder:
    """Wraps the batch tasks' functions: records [task, started, finished] per batch; `delays` adds
    seconds to a task's batches (a slow remote teacher)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delays: dict[str, float] | None = None):
        self.batches: list[list[Any]] = []
        self.lock = threading.Lock()
        for name in BATCH_TASKS:
            task = getattr(tasks, name)
            monkeypatch.setattr(task, "fn", self.wrap(name, task.fn, (delays or {}).get(name, 0.0)))

    def wrap(self, name: str, fn: Any, delay: float) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            record = [name, time.perf_counter(), None]
            with self.lock:
                self.batches.append(record)
            try:
                time.sleep(delay)
                return fn(*args, **kwargs)
            finally:
                record[2] = time.perf_counter()

        return run


def most_running(batches: list[list[Any]], task: str) -> int:
    events = sorted(
        [(started, 1) for name, started, _ in batches if name == task]
        + [(finished, -1) for name, _, finished in batches if name == task]
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def threads() -> ThreadPoolTaskRunner:
    """Prefect's thread runner with room for every stage's batches in flight (4 stages x 2), so the
    bound below is the flow's, not the pool's."""
    return ThreadPoolTaskRunner(max_workers=8)


def test_painter_starts_before_the_last_trajectory_and_in_flight_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: str
) -> None:
    config = small_config(tmp_path / "run", sft=6, rl=4, batch_size=2)
    recorder = Recorder(monkeypatch, delays={"run_teacher": 1.5})
    result = run_regenerate(config, command="test", task_runner=threads())
    assert result["version"], "the run exported a version"
    batches = recorder.batches
    teacher_ends = [finished for name, _, finished in batches if name == "run_teacher"]
    paint_starts = [started for name, started, _ in batches if name == "paint_images"]
    assert len(teacher_ends) >= 4, "several teacher batches, or there is nothing to overlap"
    assert paint_starts, "the painter ran"
    # the painter started on the first answered trajectories, well before the teacher's last batch ended
    assert min(teacher_ends) <= min(paint_starts) < max(teacher_ends) - 1.0
    for task in BATCH_TASKS:
        assert most_running(batches, task) <= config.in_flight_batches
    counts = result["counts"]
    assert 0 < counts["trajectories"]["busy_seconds"] <= counts["trajectories"]["seconds"]
    assert counts["images"]["done"] == counts["trajectories"]["done"] > 0  # offline: every one answers


@pytest.mark.slow
def test_overlapped_run_writes_the_rows_and_export_of_a_stage_by_stage_run(
    tmp_path: Path, prefect_server: str
) -> None:
    overlapped = small_config(tmp_path / "overlapped", sft=6, rl=4, batch_size=2)
    in_order = small_config(tmp_path / "in_order", sft=6, rl=4, batch_size=2)
    run_regenerate(overlapped, command="test", task_runner=threads())
    for stage in STAGE_NAMES:
        run_regenerate(in_order, [stage], command="test", task_runner=threads())
    ours, theirs = content(tmp_path / "overlapped"), content(tmp_path / "in_order")
    assert ours == theirs
    assert ours["samples"], "the run kept samples"
    for name in ("sft", "rl"):
        shards = sorted((tmp_path / "overlapped/exports/v1/data").glob(f"{name}-*.parquet"))
        peers = sorted((tmp_path / "in_order/exports/v1/data").glob(f"{name}-*.parquet"))
        assert shards and [p.read_bytes() for p in shards] == [p.read_bytes() for p in peers]
