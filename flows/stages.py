"""The stages of `groundgen run`, each declared once, in data order (docs/ARCHITECTURE.md, "The stage
contract"). Run, refresh, the CLI, the exit-code check and the bench read this list.

A batch stage names its pending query (the rows it still owes, from `warehouse/pending.py`), the task
of `flows/tasks.py` that processes a batch of them, its batch size and the table it writes; the flow
polls the batch stages together (`flows/overlap.py`). The other stages run alone in the flow process,
in order, through `run`.

This module does not import Prefect (it names tasks; `batch_task` imports `flows/tasks.py` when a batch
is submitted), so the CLI reads it before `flows/settings.py` has configured Prefect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from filters.subject import prompt_subjects
from flows.batches import write_result
from flows.curation import curate_pending
from flows.exporting import export_if_changed
from flows.overlap import StageWork
from flows.progress import reporter
from flows.results import BatchResult, StageCounts
from flows.submit import Submit
from schemas.config import Config
from schemas.protocols import JudgeInput, PaintRequest
from schemas.rows import Prompt, Trajectory
from warehouse import pending
from warehouse.store import Warehouse


@dataclass(frozen=True)
class Stage:
    """One stage. A batch stage has `pending`, `item_id`, `task` and `batch_size`; a stage that runs
    alone in the flow process has `run` (topics, curation and export: ordered and stateful)."""

    name: str  # as recorded in `failures.stage`, `runs.counts_json` and the funnel
    writes: str  # the table of its rows (a teacher also writes images and pages)
    pending: Callable[[Warehouse, Config], Sequence[Any]] | None = None  # inputs it still owes work for
    item_id: Callable[[Any], str] | None = None  # an input's id (its failures are recorded under it)
    task: str = ""  # the name of its batch task in flows/tasks.py
    batch_size: Callable[[Config], int] | None = None  # inputs per batch
    run: Callable[[Warehouse, Config, str, Submit], StageCounts] | None = None

    @property
    def batched(self) -> bool:
        return self.pending is not None

    def work(self, warehouse: Warehouse, config: Config, submit: Submit) -> StageWork:
        """This batch stage as the overlapping loop runs it."""
        if self.pending is None or self.item_id is None or self.batch_size is None:
            raise ValueError(f"stage {self.name} runs alone in the flow process, not in batches")
        owed, task = self.pending, batch_task(self.task)
        payload = config.model_dump(mode="json")
        return StageWork(
            self.name,
            pending=lambda: owed(warehouse, config),
            item_id=self.item_id,
            submit=lambda batch: submit(task, payload, batch),
            batch_size=self.batch_size(config),
            in_flight_batches=config.in_flight_batches,
        )


def batch_task(name: str) -> Any:
    """The Prefect task `name` of flows/tasks.py (imported here: importing it imports Prefect)."""
    from flows import tasks

    return getattr(tasks, name)


# --- pending queries: what each batch stage still owes, as the inputs its task takes ----------------


def topics_without_prompts(warehouse: Warehouse, config: Config) -> list[Any]:
    return pending.pending_topics(warehouse, config.writer_fingerprint(), config.max_attempts)


def prompts_without_trajectories(warehouse: Warehouse, config: Config) -> list[Any]:
    return pending.pending_prompts(
        warehouse, config.writer_fingerprint(), config.teacher_fingerprint(), config.max_attempts
    )


def paint_requests(warehouse: Warehouse, config: Config) -> list[PaintRequest]:
    """Answered trajectories without an image from this painter, with their prompt and references."""
    trajectories = pending.pending_paintings(
        warehouse,
        config.writer_fingerprint(),
        config.teacher_fingerprint(),
        config.painter_fingerprint(),
        config.max_attempts,
    )
    prompts = warehouse.rows_by_id(Prompt, [t.prompt_id for t in trajectories])
    requests = []
    for trajectory in trajectories:
        by_id = {reference.img_id: reference.sha256 for reference in trajectory.references}
        chosen = [by_id[c.img_id] for c in trajectory.chosen_references if c.img_id in by_id]
        requests.append(
            PaintRequest(trajectory=trajectory, prompt=prompts[trajectory.prompt_id], reference_sha256=chosen)
        )
    return requests


def judge_inputs(warehouse: Warehouse, config: Config) -> list[JudgeInput]:
    """Images without a judgement from this judge, with their trajectory, prompt and subjects."""
    images = pending.pending_judgements(
        warehouse, config.painter_fingerprint(), config.judge_fingerprint(), config.max_attempts
    )
    if not images:
        return []
    trajectories = warehouse.rows_by_id(Trajectory, [i.trajectory_id for i in images])
    prompts = warehouse.rows_by_id(Prompt, [t.prompt_id for t in trajectories.values()])
    topics = _topics_by_id(warehouse, [topic for p in prompts.values() for topic in p.topic_ids])
    return [
        JudgeInput(
            prompt=prompts[trajectories[image.trajectory_id].prompt_id],
            trajectory=trajectories[image.trajectory_id],
            image=image,
            subjects=prompt_subjects(prompts[trajectories[image.trajectory_id].prompt_id], topics),
        )
        for image in images
    ]


def _topics_by_id(warehouse: Warehouse, ids: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Topic id -> (title, linked titles): what the judge stage checks answers and references against."""
    if not ids:
        return {}
    table = warehouse.query(
        "SELECT id, title, linked_titles FROM topics WHERE id IN (SELECT unnest(?))", [sorted(set(ids))]
    )
    return {row["id"]: (row["title"], list(row["linked_titles"] or [])) for row in table.to_pylist()}


# --- the stages that run alone ---------------------------------------------------------------------


def mine_topics_into(warehouse: Warehouse, config: Config, run_id: str, submit: Submit) -> StageCounts:
    """Select `prompts_wanted` topics from the source (one `mine-topics` task) and write them."""
    wanted = config.sizes.prompts_wanted
    reporter().start("topics", wanted)
    topics = submit(batch_task("mine_topics"), config.model_dump(mode="json"), wanted).result()
    counts = write_result(warehouse, "topics", run_id, [], BatchResult(rows=list(topics)))
    counts.inputs = len(topics)
    reporter().finish("topics")
    return counts


def rows_per_batch(config: Config) -> int:
    return config.batch_size


def images_per_batch(config: Config) -> int:
    return config.painter.batch_size * 4


STAGES: tuple[Stage, ...] = (
    Stage("topics", writes="topics", run=mine_topics_into),
    Stage(
        "prompts",
        writes="prompts",
        pending=topics_without_prompts,
        item_id=lambda topic: topic.id,
        task="write_prompts",
        batch_size=rows_per_batch,
    ),
    Stage(
        "trajectories",
        writes="trajectories",
        pending=prompts_without_trajectories,
        item_id=lambda prompt: prompt.id,
        task="run_teacher",
        batch_size=rows_per_batch,
    ),
    Stage(
        "images",
        writes="images",
        pending=paint_requests,
        item_id=lambda request: request.trajectory.id,
        task="paint_images",
        batch_size=images_per_batch,
    ),
    Stage(
        "judgements",
        writes="judgements",
        pending=judge_inputs,
        item_id=lambda item: item.image.id,
        task="judge_images",
        batch_size=rows_per_batch,
    ),
    Stage(
        "samples",
        writes="samples",
        run=lambda warehouse, config, run_id, submit: curate_pending(warehouse, config, run_id),
    ),
    Stage(
        "export",
        writes="versions",
        run=lambda warehouse, config, run_id, submit: export_if_changed(warehouse, config, run_id),
    ),
)

BY_NAME = {stage.name: stage for stage in STAGES}
STAGE_NAMES = tuple(stage.name for stage in STAGES)
BATCH_STAGES = tuple(stage.name for stage in STAGES if stage.batched)  # they track `StageCounts.done`
