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
class CurationTicket:
    """A trajectory ready for curation, by id: what `pending_curation` decides in one SQL query.

    `image_phash` lets the curator look up every candidate's perceptual neighbours before it loads
    any row; `curation_inputs` reads the rows of a batch of tickets when the curator gets to them."""

    trajectory_id: str
    prompt_id: str
    image_id: str | None
    judgement_id: str | None
    image_phash: str | None = None
    missing: str = ""  # why a needed upstream row is missing for good ("painter_failed", "judge_failed")


@dataclass(frozen=True)
class CurationInput:
    trajectory: Trajectory
    prompt: Prompt
    image: Image | None
    judgement: Judgement | None
    missing: str = ""  # why a needed upstream row is missing for good ("painter_failed", "judge_failed")


CURATION_SQL = (
    "WITH candidates AS (SELECT id, prompt_id, ending FROM trajectories WHERE "
    + current_trajectories_clause()
    + " AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.trajectory_id = trajectories.id AND s.curator = ?)), "
    # one ground-truth image per trajectory and one judgement per image: the greatest id, as before
    "painted AS (SELECT trajectory_id, max(id) AS image_id FROM images "
    "WHERE kind = 'ground_truth' AND painter = ? GROUP BY trajectory_id), "
    "judged AS (SELECT image_id, max(id) AS judgement_id FROM judgements WHERE judge = ? GROUP BY image_id), "
    "counted AS (SELECT stage, row_id, count(*) AS n FROM failures WHERE stage IN ('images', 'judgements') "
    f"AND {COUNTED_FAILURE} GROUP BY stage, row_id) "
    "SELECT c.id, c.prompt_id, c.ending, p.image_id, i.phash AS image_phash, j.judgement_id, "
    "coalesce(fi.n, 0) AS image_failures, coalesce(fj.n, 0) AS judgement_failures "
    "FROM candidates c LEFT JOIN painted p ON p.trajectory_id = c.id "
    "LEFT JOIN images i ON i.id = p.image_id "
    "LEFT JOIN judged j ON j.image_id = p.image_id "
    "LEFT JOIN counted fi ON fi.stage = 'images' AND fi.row_id = c.id "
    "LEFT JOIN counted fj ON fj.stage = 'judgements' AND fj.row_id = p.image_id ORDER BY c.id"
)


def pending_curation(
    warehouse: Warehouse, writer: str, teacher: str, painter: str, judge: str, curator: str, max_attempts: int
) -> list[CurationTicket]:
    """Trajectories with no curation decision yet whose upstream work is finished (or failed for good),
    in trajectory id order.

    One query decides which candidates are ready (joins and failure counts in SQL) and returns ids
    only; `curation_inputs` reads a batch's rows when the curator needs them, so a pass over 100k
    candidates never holds every trajectory in memory at once."""
    tickets: list[CurationTicket] = []
    for row in warehouse.query(CURATION_SQL, [teacher, writer, curator, painter, judge]).to_pylist():
        trajectory_id, prompt_id = row["id"], row["prompt_id"]
        if row["ending"] != "answer":
            tickets.append(CurationTicket(trajectory_id, prompt_id, None, None))
        elif row["image_id"] is None:
            if row["image_failures"] >= max_attempts:
                tickets.append(CurationTicket(trajectory_id, prompt_id, None, None, missing="painter_failed"))
        elif row["judgement_id"] is None:
            if row["judgement_failures"] >= max_attempts:
                tickets.append(
                    CurationTicket(
                        trajectory_id, prompt_id, row["image_id"], None, row["image_phash"], "judge_failed"
                    )
                )
        else:
            tickets.append(
                CurationTicket(
                    trajectory_id, prompt_id, row["image_id"], row["judgement_id"], row["image_phash"]
                )
            )
    return tickets


def curation_inputs(warehouse: Warehouse, tickets: list[CurationTicket]) -> list[CurationInput]:
    """The rows behind some tickets (one query per table), in the tickets' order."""
    if not tickets:
        return []
    trajectories = warehouse.rows_by_id(Trajectory, [ticket.trajectory_id for ticket in tickets])
    prompts = warehouse.rows_by_id(Prompt, [ticket.prompt_id for ticket in tickets])
    images = warehouse.rows_by_id(
        Image, [ticket.image_id for ticket in tickets if ticket.image_id is not None]
    )
    judgements = warehouse.rows_by_id(
        Judgement, [ticket.judgement_id for ticket in tickets if ticket.judgement_id is not None]
    )
    return [
        CurationInput(
            trajectories[ticket.trajectory_id],
            prompts[ticket.prompt_id],
            images[ticket.image_id] if ticket.image_id is not None else None,
            judgements[ticket.judgement_id] if ticket.judgement_id is not None else None,
            missing=ticket.missing,
        )
        for ticket in tickets
    ]


# The output that settles a failed input of each stage (any backend): failures of inputs that have one
# are history, the others are waiting on a retry or given up (`groundgen status`, `status --watch` and
# `groundgen retry` all read this one map).
OUTPUT_OF_INPUT = {
    "prompts": "SELECT topic_ids[1] FROM prompts",
    "trajectories": "SELECT prompt_id FROM trajectories",
    "images": "SELECT trajectory_id FROM images WHERE kind = 'ground_truth'",
    "judgements": "SELECT image_id FROM judgements",
    "samples": "SELECT trajectory_id FROM samples",
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
