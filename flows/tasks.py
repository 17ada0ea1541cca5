"""Prefect tasks: each wraps one stage core over a batch of rows and returns rows (never writes the DB).

Tasks receive the config as plain data and build their backends in the worker (`flows.resources`), so
the same task runs in a thread or a Ray worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NONE

from flows.resources import resources_for
from flows.results import BatchResult
from schemas.config import Config
from schemas.errors import GroundgenError, RowError, error_kind
from schemas.protocols import JudgeInput, PaintRequest
from schemas.rows import Prompt, Topic
from synthesis.llm_client import UsageMeter

ItemT = TypeVar("ItemT")


def retry_unless_fatal(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries a failed batch, except on a fatal error (a refused key, an unknown model):
    no retry fixes those, and the flow stops the stage on them."""
    error = state.data if isinstance(state.data, BaseException) else None
    return error is None or error_kind(error) != "fatal"


def batch_task(name: str, *, retries: int = 2, retry_delay_seconds: list[float] | None = None) -> Any:
    """A stage's batch task: never cached, retried by Prefect on anything but a fatal error."""
    return task(
        name=name,
        cache_policy=NONE,
        retries=retries,
        retry_delay_seconds=retry_delay_seconds or [1, 5],
        retry_condition_fn=retry_unless_fatal,
    )


async def _gather_rows(
    items: Sequence[ItemT],
    item_id: Callable[[ItemT], str],
    work: Callable[[ItemT], Awaitable[list[Any]]],
    concurrency: int,
) -> BatchResult:
    """Run `work` on every item concurrently; expected errors become per-row errors, in item order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(item: ItemT) -> tuple[list[Any], RowError | None]:
        async with slots:
            try:
                return await work(item), None
            except GroundgenError as error:
                return [], RowError.from_exception(item_id(item), error)

    outcomes = await asyncio.gather(*(one(item) for item in items))
    result = BatchResult()
    for item, (rows, error) in zip(items, outcomes, strict=True):
        if error is not None:
            result.errors.append(error)
        elif rows:
            result.rows.extend(rows)
            result.done_ids.append(item_id(item))
    return result


@batch_task("write-prompts")
def write_prompts(config_data: dict[str, Any], topics: list[Topic]) -> BatchResult:
    resources = resources_for(Config.model_validate(config_data))
    writer = resources.writer()

    async def write(topic: Topic) -> list[Any]:
        return list(await writer.write(topic, resources.linked_topics(topic)))

    with UsageMeter() as meter:
        result = asyncio.run(
            _gather_rows(topics, lambda t: t.id, write, resources.model_concurrency("writer"))
        )
    result.usage = meter.by_role(writer.model_clients())
    return result


@batch_task("run-teacher")
def run_teacher(config_data: dict[str, Any], prompts: list[Prompt]) -> BatchResult:
    from extractors.page_cache import page_records

    resources = resources_for(Config.model_validate(config_data))
    teacher = resources.teacher()

    async def batch() -> BatchResult:
        async with resources.tools() as tools:

            async def run(prompt: Prompt) -> list[Any]:
                outcome = await teacher.run(prompt, tools)
                return [*outcome.reference_images, outcome.trajectory]

            result = await _gather_rows(prompts, lambda p: p.id, run, resources.model_concurrency("teacher"))
            result.rows.extend(page_records(tools))  # the pages browsed: the flow fills `pages`
            return result

    with UsageMeter() as meter:
        result = asyncio.run(batch())
    result.usage = meter.by_role(teacher.model_clients())
    return result


@batch_task("paint-images", retries=1, retry_delay_seconds=[5])
def paint_images(config_data: dict[str, Any], requests: list[PaintRequest]) -> BatchResult:
    resources = resources_for(Config.model_validate(config_data))
    images, errors = resources.paint(requests)
    levels = resources.painter().concurrency_summary()  # the HTTP painter's AIMD level ({} for local)
    return BatchResult(
        rows=list(images),
        errors=list(errors),
        done_ids=[image.trajectory_id for image in images],
        usage={"painter": levels} if levels else {},
    )


def _blob_or_none(blobs: Any, sha256: str) -> bytes | None:
    try:
        return bytes(blobs.read(sha256))
    except OSError:  # a missing blob: curation's image rule drops the row with its own reason
        return None


@batch_task("judge-images")
def judge_images(config_data: dict[str, Any], items: list[JudgeInput]) -> BatchResult:
    """The configured judge's verdict, plus the deterministic scores and the evidence rows behind them."""
    from filters.quality_scores import score_judgement
    from filters.subject import subject_aliases

    resources = resources_for(Config.model_validate(config_data))
    judge = resources.judge()

    claims = resources.claim_extractor()

    async def one(item: JudgeInput) -> list[Any]:
        claimed = None
        if claims is not None:
            claimed = await claims.evidence(
                item.trajectory, item.prompt.prompt, subject_aliases(item.subjects)
            )
        judgement, evidence = score_judgement(
            await judge.judge(item),
            item.trajectory,
            item.prompt.prompt,
            item.subjects,
            _blob_or_none(resources.blobs, item.image.sha256),
            claimed,
        )
        return [judgement, *evidence]

    with UsageMeter() as meter:
        result = asyncio.run(
            _gather_rows(items, lambda i: i.image.id, one, resources.model_concurrency("judge"))
        )
    result.usage = meter.by_role(
        {**judge.model_clients(), **(claims.model_clients() if claims is not None else {})}
    )
    return result


# --- the topics stage's task (the stage runs alone in the flow process: flows/stages.py) ----------


@task(name="mine-topics", cache_policy=NONE)
def mine_topics(config_data: dict[str, Any], wanted: int) -> list[Topic]:
    from extractors.topic_selection import select_topics

    resources = resources_for(Config.model_validate(config_data))
    return select_topics(resources.topic_source().topics(), wanted)
