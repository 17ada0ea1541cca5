"""Running one stage as batches of tasks and writing their rows back: the only loop the flows own.

Tasks return rows; this module (in the flow process) is the warehouse's one writer. A batch whose task
raised after Prefect's retries becomes one failure row per input row; the run goes on. Failure kinds
(`flows.stage_guard`): a fatal error or an open circuit breaker stops the stage (`StageCounts.stopped`
says why), transient failures never use up a row's attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from flows.ledger import record_batch
from flows.progress import reporter
from flows.results import BatchResult, StageCounts, add_usage
from flows.stage_guard import StageGuard
from schemas.errors import RowError
from synthesis.circuit_breaker import reset_breakers
from warehouse.store import Warehouse, table_for


def chunk(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def write_result(
    warehouse: Warehouse, stage: str, run_id: str, input_ids: list[str], result: BatchResult
) -> StageCounts:
    """Insert a batch's rows (grouped by type) and record failures, including silent non-results."""
    counts = StageCounts(inputs=len(input_ids), batches=1)
    counts.done = len(set(result.done_ids) & set(input_ids))
    add_usage(counts.usage, result.usage)
    by_type: dict[type, list[BaseModel]] = {}
    for row in result.rows:
        by_type.setdefault(type(row), []).append(row)
    for model, rows in by_type.items():
        written = warehouse.insert(rows)
        counts.rows_written += written
        table = table_for(model)
        counts.tables[table] = counts.tables.get(table, 0) + written
    errors = list(result.errors)
    accounted = set(result.done_ids) | {error.row_id for error in errors}
    errors += [
        RowError(row_id, "EmptyOutput", f"the {stage} stage produced no row and no error for this input")
        for row_id in input_ids
        if row_id not in accounted
    ]
    counts.failures += len(warehouse.record_failures(stage, errors, run_id))
    record_batch(run_id, counts.usage)  # the run's ledger: usage and cost so far, after every batch
    return counts


def run_batches(
    warehouse: Warehouse,
    stage: str,
    run_id: str,
    items: Sequence[Any],
    item_id: Callable[[Any], str],
    submit: Callable[[list[Any]], Any],
    batch_size: int,
    guard: StageGuard | None = None,
) -> StageCounts:
    """Submit every batch (the task runner runs them concurrently), then write results in order.
    Once `guard` says stop, batches not started yet are cancelled and the rest only write rows."""
    guard = guard or StageGuard(stage)
    counts = StageCounts()
    batches = chunk(items, batch_size)
    futures = [submit(batch) for batch in batches]
    for batch, future in zip(batches, futures, strict=True):
        input_ids = [item_id(item) for item in batch]
        if guard.stopped and cancel_if_not_started(future):
            continue
        try:
            result: BatchResult = future.result()
        except Exception as error:  # the batch failed after its retries: record it per row, go on
            result = BatchResult(errors=[RowError.from_exception(row_id, error) for row_id in input_ids])
        recorded_ids, recorded = guard.screen(input_ids, result)
        batch_counts = write_result(warehouse, stage, run_id, recorded_ids, recorded)
        batch_counts.inputs = len(input_ids)
        counts.add(batch_counts)
        reporter().advance(stage, len(batch))
    return counts


def cancel_if_not_started(future: Any) -> bool:
    """Cancel a batch that has not started (thread runner, plain executor); False if it runs."""
    inner = getattr(future, "wrapped_future", future)
    cancel = getattr(inner, "cancel", None)
    return bool(cancel()) if callable(cancel) and hasattr(inner, "cancelled") else False


def run_until_done(
    warehouse: Warehouse,
    stage: str,
    run_id: str,
    pending: Callable[[], Sequence[Any]],
    item_id: Callable[[Any], str],
    submit: Callable[[list[Any]], Any],
    batch_size: int,
) -> StageCounts:
    """Process pending rows in passes until none is left; failed rows retry until max attempts.

    Each pass either writes a row or records a failure for every input; pending queries exclude rows
    that failed permanently `max_attempts` times, and rows that failed transiently `guard.passes`
    times in this run wait for the next run, so this ends. A fatal error or an open breaker stops
    the stage: `stopped` holds the one line that says why and how many rows wait.
    """
    reset_breakers()  # this process's LLM clients start the stage with closed breakers
    guard = StageGuard(stage)
    total = StageCounts()
    items = pending()
    reporter().start(stage, len(items))
    while items:
        counts = run_batches(warehouse, stage, run_id, items, item_id, submit, batch_size, guard)
        total.add(counts)
        if guard.stopped:
            total.stopped = guard.message(len(pending()))
            break
        if counts.rows_written == 0 and counts.failures == 0 and counts.done == 0:
            break  # nothing changed: re-querying would return the same rows
        items = [item for item in pending() if not guard.retry_later(item_id(item))]
        if items:
            reporter().start(stage, len(items))
    reporter().finish(stage)
    return total
