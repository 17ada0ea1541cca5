"""The stage registry (flows/stages.py): each stage declared once, and what run, refresh and the CLI
rely on in it."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import Task

from flows.refresh import REFRESH_STAGES
from flows.stages import BATCH_STAGES, BY_NAME, STAGE_NAMES, STAGES, batch_task
from flows.submit import executor_submit
from warehouse.store import TABLES

REPO = Path(__file__).resolve().parent.parent


def test_each_stage_is_either_batched_with_a_task_or_runs_alone_and_writes_a_table() -> None:
    assert len(set(STAGE_NAMES)) == len(STAGES)
    for stage in STAGES:
        assert stage.writes in TABLES, f"{stage.name} writes a warehouse table"
        if stage.batched:
            assert stage.item_id is not None and stage.batch_size is not None and stage.run is None
            assert isinstance(batch_task(stage.task), Task), f"{stage.name}: {stage.task} is a Prefect task"
        else:
            assert stage.run is not None and not stage.task


def test_batch_stages_are_one_run_between_topics_and_curation() -> None:
    # run_stages overlaps consecutive batch stages: all of them form one step after topics
    first = STAGE_NAMES.index(BATCH_STAGES[0])
    assert STAGE_NAMES[first : first + len(BATCH_STAGES)] == BATCH_STAGES
    assert STAGE_NAMES[0] == "topics" and STAGE_NAMES[-1] == "export"
    assert REFRESH_STAGES == (*BATCH_STAGES, "samples")
    assert BY_NAME["images"].batch_size is not None


def test_executor_submit_runs_the_task_function_without_prefect() -> None:
    with ThreadPoolExecutor(max_workers=1) as executor:
        future = executor_submit(executor)(Task(fn=lambda a, b: a + b), 2, 3)
        assert future.result() == 5


def test_the_registry_imports_no_prefect() -> None:
    # the CLI checks --stage names before flows/settings.py configures Prefect (home, log level)
    code = "import sys, flows.stages, flows.run_outcome; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
