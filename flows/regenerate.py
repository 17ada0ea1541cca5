"""The `regenerate` flow: every arrow of docs/ARCHITECTURE.md's diagram, each stage reading its pending rows.

A run killed at any point and started again finishes with the same rows: every stage writes after
each batch, ids are content hashes, and writes are insert-if-absent.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from prefect import flow

from filters.subject import prompt_subjects
from flows import tasks
from flows.batches import StageCounts, direct_executor, run_until_done
from flows.ledger import RunLedger, finish_status
from flows.live_status import serve_readers
from flows.overlap import StageWork, run_overlapped
from flows.settings import code_version
from flows.stage_names import STAGE_ORDER
from flows.workspace import Workspace
from schemas.config import Config
from schemas.protocols import JudgeInput, PaintRequest
from schemas.rows import Prompt, Trajectory
from synthesis.circuit_breaker import configure_breakers
from warehouse import pending
from warehouse.export import latest_version, version_folder
from warehouse.store import Warehouse


def _submit(task: Any, config: Config) -> Any:
    payload = config.model_dump(mode="json")
    executor = direct_executor.get()
    if executor is not None:
        return lambda batch: executor.submit(task.fn, payload, batch)
    from flows.runner import batch_resources

    def submit(batch: list[Any]) -> Any:
        with batch_resources(config, task.name):
            return task.submit(payload, batch)

    return submit


def stage_topics(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return tasks.mine_topics_into(warehouse, config, run_id)


def stage_prompts(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return run_until_done(
        warehouse,
        "prompts",
        run_id,
        pending=lambda: pending.pending_topics(warehouse, config.writer_fingerprint(), config.max_attempts),
        item_id=lambda topic: topic.id,
        submit=_submit(tasks.write_prompts, config),
        batch_size=config.batch_size,
    )


def stage_trajectories(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return run_until_done(
        warehouse,
        "trajectories",
        run_id,
        pending=lambda: pending.pending_prompts(
            warehouse, config.writer_fingerprint(), config.teacher_fingerprint(), config.max_attempts
        ),
        item_id=lambda prompt: prompt.id,
        submit=_submit(tasks.run_teacher, config),
        batch_size=config.batch_size,
    )


def _paint_requests(warehouse: Warehouse, config: Config) -> list[PaintRequest]:
    trajectories = pending.pending_paintings(
        warehouse,
        config.writer_fingerprint(),
        config.teacher_fingerprint(),
        config.painter_fingerprint(),
        config.max_attempts,
    )
    prompts = _prompts_by_id(warehouse, [t.prompt_id for t in trajectories])
    requests = []
    for trajectory in trajectories:
        by_id = {reference.img_id: reference.sha256 for reference in trajectory.references}
        chosen = [by_id[c.img_id] for c in trajectory.chosen_references if c.img_id in by_id]
        requests.append(
            PaintRequest(trajectory=trajectory, prompt=prompts[trajectory.prompt_id], reference_sha256=chosen)
        )
    return requests


def _prompts_by_id(warehouse: Warehouse, ids: list[str]) -> dict[str, Prompt]:
    if not ids:
        return {}
    return {p.id: p for p in warehouse.rows(Prompt, "id IN (SELECT unnest(?))", [sorted(set(ids))])}


def stage_images(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return run_until_done(
        warehouse,
        "images",
        run_id,
        pending=lambda: _paint_requests(warehouse, config),
        item_id=lambda request: request.trajectory.id,
        submit=_submit(tasks.paint_images, config),
        batch_size=config.painter.batch_size * 4,
    )


def _judge_inputs(warehouse: Warehouse, config: Config) -> list[JudgeInput]:
    images = pending.pending_judgements(
        warehouse, config.painter_fingerprint(), config.judge_fingerprint(), config.max_attempts
    )
    if not images:
        return []
    trajectories = {
        t.id: t
        for t in warehouse.rows(
            Trajectory, "id IN (SELECT unnest(?))", [sorted({i.trajectory_id for i in images})]
        )
    }
    prompts = _prompts_by_id(warehouse, [t.prompt_id for t in trajectories.values()])
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


def stage_judgements(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return run_until_done(
        warehouse,
        "judgements",
        run_id,
        pending=lambda: _judge_inputs(warehouse, config),
        item_id=lambda item: item.image.id,
        submit=_submit(tasks.judge_images, config),
        batch_size=config.batch_size,
    )


def stage_samples(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return tasks.curate_into(warehouse, config, run_id)


def stage_export(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    return tasks.export_into(warehouse, config, run_id)


def _works(warehouse: Warehouse, config: Config) -> dict[str, StageWork]:
    """The batch stages as the overlapping loop runs them: the same pending queries and tasks."""
    bound = config.in_flight_batches
    return {
        "prompts": StageWork(
            "prompts",
            pending=lambda: pending.pending_topics(
                warehouse, config.writer_fingerprint(), config.max_attempts
            ),
            item_id=lambda topic: topic.id,
            submit=_submit(tasks.write_prompts, config),
            batch_size=config.batch_size,
            in_flight_batches=bound,
        ),
        "trajectories": StageWork(
            "trajectories",
            pending=lambda: pending.pending_prompts(
                warehouse, config.writer_fingerprint(), config.teacher_fingerprint(), config.max_attempts
            ),
            item_id=lambda prompt: prompt.id,
            submit=_submit(tasks.run_teacher, config),
            batch_size=config.batch_size,
            in_flight_batches=bound,
        ),
        "images": StageWork(
            "images",
            pending=lambda: _paint_requests(warehouse, config),
            item_id=lambda request: request.trajectory.id,
            submit=_submit(tasks.paint_images, config),
            batch_size=config.painter.batch_size * 4,
            in_flight_batches=bound,
        ),
        "judgements": StageWork(
            "judgements",
            pending=lambda: _judge_inputs(warehouse, config),
            item_id=lambda item: item.image.id,
            submit=_submit(tasks.judge_images, config),
            batch_size=config.batch_size,
            in_flight_batches=bound,
        ),
    }


# Stages the flow runs together, polling each in turn (flows.overlap); the others run alone, in order.
OVERLAPPING = ("prompts", "trajectories", "images", "judgements")


def run_stages(
    warehouse: Warehouse, config: Config, run_id: str, stages: list[str], counts: dict[str, Any]
) -> None:
    """Run `stages` (in STAGE_ORDER) into `counts`: topics alone, then the batch stages overlapping,
    then curation and export alone. Stops after a step where a stage stopped (a fatal error or an open
    breaker: later stages would work on a partial stage)."""
    steps: list[list[str]] = []
    for stage in stages:
        if stage in OVERLAPPING and steps and steps[-1][0] in OVERLAPPING:
            steps[-1].append(stage)
        else:
            steps.append([stage])
    for step in steps:
        started = time.perf_counter()
        if step[0] in OVERLAPPING:
            works = _works(warehouse, config)
            counts.update(run_overlapped(warehouse, run_id, [works[stage] for stage in step]))
        else:
            counts[step[0]] = vars(STAGES[step[0]](warehouse, config, run_id))
            counts[step[0]]["seconds"] = round(time.perf_counter() - started, 3)
        if any(counts[stage].get("stopped") for stage in step):
            break


STAGES = {
    "topics": stage_topics,
    "prompts": stage_prompts,
    "trajectories": stage_trajectories,
    "images": stage_images,
    "judgements": stage_judgements,
    "samples": stage_samples,
    "export": stage_export,
}


@flow(name="regenerate", log_prints=True)
def regenerate(
    config_data: dict[str, Any], stages: list[str] | None = None, command: str = "run"
) -> dict[str, Any]:
    """Regenerate the datasets: run the selected stages (default: all) on their pending rows."""
    config = Config.model_validate(config_data)
    configure_breakers(config.breaker_threshold, config.breaker_cooldown_s)
    selected = [stage for stage in STAGE_ORDER if stages is None or stage in stages]
    workspace = Workspace(config.workdir).create()
    counts: dict[str, dict[str, float]] = {}
    with Warehouse(workspace.database) as warehouse, serve_readers(warehouse, workspace.root):
        ledger = RunLedger.start(
            warehouse,
            run_id=uuid.uuid4().hex[:24],
            command=command,
            config_fingerprint=config.fingerprint(),
            code_version=code_version(),
            workdir=workspace.root,
        )
        run = ledger.run
        try:
            run_stages(warehouse, config, run.id, selected, counts)
        except BaseException as error:
            ledger.finish(finish_status(error), counts)
            raise
        stopped = any(stage_counts.get("stopped") for stage_counts in counts.values())
        ledger.finish("failed" if stopped else "completed", counts)
        version = latest_version(warehouse) if counts.get("export", {}).get("rows_written") else None
    return {
        "run_id": run.id,
        "counts": counts,
        "version": version.model_dump(mode="json", include={"id", "sft_rows", "rl_rows"})
        | {"path": str(version_folder(workspace.root, version))}
        if version
        else None,
    }
