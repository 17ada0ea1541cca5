"""Overlapping stages (flows/overlap.py): the painter starts while the teacher is still running, each
stage keeps at most `in_flight_batches` batches out, and the rows are those of a stage-by-stage run."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flows.batches import direct_executor
from flows.regenerate import regenerate
from tests.test_pipeline_offline import content, small_config


class RecordingExecutor(ThreadPoolExecutor):
    """The production task functions on plain threads, recording [task, submitted, finished, started]
    per batch; `delays` adds seconds to a task's batches (a slow remote teacher)."""

    def __init__(self, workers: int, delays: dict[str, float] | None = None):
        super().__init__(max_workers=workers)
        self.batches: list[list[Any]] = []
        self.delays = delays or {}
        self.lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        record = [fn.__name__, time.perf_counter(), None, None]
        with self.lock:
            self.batches.append(record)

        def run() -> Any:
            record[3] = time.perf_counter()
            try:
                time.sleep(self.delays.get(fn.__name__, 0.0))
                return fn(*args, **kwargs)
            finally:
                record[2] = time.perf_counter()

        return super().submit(run)


def run_direct(config: Any, executor: ThreadPoolExecutor, stages: list[str] | None = None) -> dict:
    token = direct_executor.set(executor)
    try:
        return regenerate.fn(config.model_dump(mode="json"), stages, "test")
    finally:
        direct_executor.reset(token)


def most_in_flight(batches: list[list[Any]], task: str) -> int:
    events = sorted(
        [(submitted, 1) for name, submitted, _, _ in batches if name == task]
        + [(finished, -1) for name, _, finished, _ in batches if name == task]
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_painter_starts_before_the_last_trajectory_and_in_flight_is_bounded(tmp_path: Path) -> None:
    config = small_config(tmp_path / "run", sft=6, rl=4, batch_size=2)
    with RecordingExecutor(workers=4, delays={"run_teacher": 1.5}) as executor:
        result = run_direct(config, executor)
    assert result["version"], "the run exported a version"
    batches = executor.batches
    teacher_ends = [finished for name, _, finished, _ in batches if name == "run_teacher"]
    paint_starts = [started for name, _, _, started in batches if name == "paint_images"]
    assert len(teacher_ends) >= 4, "several teacher batches, or there is nothing to overlap"
    assert paint_starts, "the painter ran"
    # the painter started on the first answered trajectories, well before the teacher's last batch ended
    assert min(teacher_ends) <= min(paint_starts) < max(teacher_ends) - 1.0
    for task in ("write_prompts", "run_teacher", "paint_images", "judge_images"):
        assert most_in_flight(batches, task) <= config.in_flight_batches
    counts = result["counts"]
    assert 0 < counts["trajectories"]["busy_seconds"] <= counts["trajectories"]["seconds"]
    assert counts["images"]["done"] == counts["trajectories"]["done"] > 0  # offline: every one answers


@pytest.mark.slow
def test_overlapped_run_writes_the_rows_and_export_of_a_stage_by_stage_run(tmp_path: Path) -> None:
    overlapped = small_config(tmp_path / "overlapped", sft=6, rl=4, batch_size=2)
    in_order = small_config(tmp_path / "in_order", sft=6, rl=4, batch_size=2)
    with ThreadPoolExecutor(max_workers=4) as executor:
        run_direct(overlapped, executor)
        for stage in ("topics", "prompts", "trajectories", "images", "judgements", "samples", "export"):
            run_direct(in_order, executor, [stage])
    ours, theirs = content(tmp_path / "overlapped"), content(tmp_path / "in_order")
    assert ours == theirs
    assert ours["samples"], "the run kept samples"
    for name in ("sft", "rl"):
        shards = sorted((tmp_path / "overlapped/exports/v1/data").glob(f"{name}-*.parquet"))
        peers = sorted((tmp_path / "in_order/exports/v1/data").glob(f"{name}-*.parquet"))
        assert shards and [p.read_bytes() for p in shards] == [p.read_bytes() for p in peers]
