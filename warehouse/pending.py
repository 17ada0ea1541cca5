"""Pending-work queries: the rows a stage still owes work for, as anti-joins.

A row is pending when it has no output under the stage's current backend fingerprint and has not
failed permanently `max_attempts` times already. Finished rows are skipped, which gives resume,
incremental refresh and idempotent reruns at once.

Only permanent failures count (`COUNTED_FAILURE`): a transient one (the endpoint was down, 429, 5xx)
says nothing about the row, so a later run retries it however often it happened; failures re-queued
by `groundgen retry` stay in `failures` as history and count no more.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import LEGACY_TRANSIENT_CLASSES
from schemas.rows import Image, Judgement, Prompt, Topic, Trajectory
from warehouse.store import Warehouse

# Stage names, as recorded in `failures.stage` and `runs.counts_json`.
STAGES = ("topics", "prompts", "trajectories", "images", "judgements", "samples")


# A `failures` row that uses up one of its row's attempts: permanent and not re-queued.
COUNTED_FAILURE = (
    "requeued_at IS NULL AND (coalesce(kind, '') = 'permanent' OR (coalesce(kind, '') = '' AND "
    "error_class NOT IN (" + ", ".join(f"'{name}'" for name in LEGACY_TRANSIENT_CLASSES) + ")))"
)


def _not_exhausted(alias: str, stage: str) -> str:
    return (
        f"{alias}.id NOT IN (SELECT row_id FROM failures WHERE stage = '{stage}' AND {COUNTED_FAILURE} "
        f"GROUP BY row_id HAVING count(*) >= ?)"
    )


def counted_failures(warehouse: Warehouse, stage: str, row_id: str) -> int:
    """Failures of a row that count against `max_attempts` (permanent, not re-queued)."""
    return warehouse.count("failures", f"stage = ? AND row_id = ? AND {COUNTED_FAILURE}", [stage, row_id])


def pending_topics(
    warehouse: Warehouse, writer: str, max_attempts: int, limit: int | None = None
) -> list[Topic]:
    """Topics that have no prompt from this writer yet."""
    where = (
        "NOT EXISTS (SELECT 1 FROM prompts p WHERE p.writer = ? AND p.topic_ids[1] = topics.id) AND "
        + _not_exhausted("topics", "prompts")
    )
    topics = warehouse.rows(Topic, where, [writer, max_attempts])
    return topics[:limit] if limit is not None else topics


def pending_prompts(warehouse: Warehouse, writer: str, teacher: str, max_attempts: int) -> list[Prompt]:
    """This writer's prompts that have no trajectory from this teacher yet."""
    where = (
        "writer = ? AND NOT EXISTS (SELECT 1 FROM trajectories t WHERE t.prompt_id = prompts.id "
        "AND t.teacher = ?) AND " + _not_exhausted("prompts", "trajectories")
    )
    return warehouse.rows(Prompt, where, [writer, teacher, max_attempts])


def current_trajectories_clause() -> str:
    return "teacher = ? AND prompt_id IN (SELECT id FROM prompts WHERE writer = ?)"


def pending_paintings(
    warehouse: Warehouse, writer: str, teacher: str, painter: str, max_attempts: int
) -> list[Trajectory]:
    """Answered trajectories with no ground-truth image from this painter yet."""
    where = (
        current_trajectories_clause() + " AND ending = 'answer' AND NOT EXISTS (SELECT 1 FROM images i "
        "WHERE i.kind = 'ground_truth' AND i.trajectory_id = trajectories.id AND i.painter = ?) AND "
        + _not_exhausted("trajectories", "images")
    )
    return warehouse.rows(Trajectory, where, [teacher, writer, painter, max_attempts])


def pending_judgements(warehouse: Warehouse, painter: str, judge: str, max_attempts: int) -> list[Image]:
    """Ground-truth images from this painter with no judgement from this judge yet."""
    where = (
        "kind = 'ground_truth' AND painter = ? AND NOT EXISTS (SELECT 1 FROM judgements j "
        "WHERE j.image_id = images.id AND j.judge = ?) AND " + _not_exhausted("images", "judgements")
    )
    return warehouse.rows(Image, where, [painter, judge, max_attempts])


@dataclass(frozen=True)
class CurationInput:
    trajectory: Trajectory
    prompt: Prompt
    image: Image | None
    judgement: Judgement | None
    missing: str = ""  # why a needed upstream row is missing for good ("painter_failed", "judge_failed")


def pending_curation(
    warehouse: Warehouse, writer: str, teacher: str, painter: str, judge: str, curator: str, max_attempts: int
) -> list[CurationInput]:
    """Trajectories with no curation decision yet whose upstream work is finished (or failed for good)."""
    trajectories = warehouse.rows(
        Trajectory,
        current_trajectories_clause()
        + " AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.trajectory_id = trajectories.id AND s.curator = ?)",
        [teacher, writer, curator],
    )
    if not trajectories:
        return []
    prompts = {p.id: p for p in warehouse.rows(Prompt, "writer = ?", [writer])}
    images = {
        i.trajectory_id: i for i in warehouse.rows(Image, "kind = 'ground_truth' AND painter = ?", [painter])
    }
    judgements = {j.image_id: j for j in warehouse.rows(Judgement, "judge = ?", [judge])}
    ready = []
    for trajectory in trajectories:
        prompt = prompts[trajectory.prompt_id]
        if trajectory.ending != "answer":
            ready.append(CurationInput(trajectory, prompt, None, None))
            continue
        image = images.get(trajectory.id)
        if image is None:
            if counted_failures(warehouse, "images", trajectory.id) >= max_attempts:
                ready.append(CurationInput(trajectory, prompt, None, None, missing="painter_failed"))
            continue
        judgement = judgements.get(image.id)
        if judgement is None:
            if counted_failures(warehouse, "judgements", image.id) >= max_attempts:
                ready.append(CurationInput(trajectory, prompt, image, None, missing="judge_failed"))
            continue
        ready.append(CurationInput(trajectory, prompt, image, judgement))
    return ready


# The output that settles a failed input of each stage (any backend): failures of inputs that have one
# are history, the others are waiting on a retry or given up.
OUTPUT_OF_INPUT = {
    "prompts": "SELECT topic_ids[1] FROM prompts",
    "trajectories": "SELECT prompt_id FROM trajectories",
    "images": "SELECT trajectory_id FROM images WHERE kind = 'ground_truth'",
    "judgements": "SELECT image_id FROM judgements",
}


def failed_rows_sql(max_attempts: int) -> str:
    """Rows of each stage that failed and still have no output, by stage and latest error class:
    `waiting` (a later run retries them: only transient failures, or fewer counted failures than
    `max_attempts`) and `given_up` (counted failures reached `max_attempts`; `groundgen retry`
    re-queues them)."""
    settled = " UNION ALL ".join(
        f"SELECT '{stage}' AS stage, id FROM ({sql}) AS o(id)" for stage, sql in OUTPUT_OF_INPUT.items()
    )
    return (
        "WITH per_row AS (SELECT stage, row_id, arg_max(error_class, attempt) AS error_class, "
        f"count(*) FILTER (WHERE {COUNTED_FAILURE}) AS counted FROM failures GROUP BY stage, row_id), "
        f"settled AS ({settled}) "
        f"SELECT stage, error_class, count(*) FILTER (WHERE counted < {int(max_attempts)}) AS waiting, "
        f"count(*) FILTER (WHERE counted >= {int(max_attempts)}) AS given_up FROM per_row r "
        "WHERE NOT EXISTS (SELECT 1 FROM settled s WHERE s.stage = r.stage AND s.id = r.row_id) "
        "GROUP BY stage, error_class ORDER BY stage, error_class"
    )
