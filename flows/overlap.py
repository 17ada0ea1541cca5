"""Stages that overlap: the flow polls the batch stages in turn, so rows flow on as soon as a batch lands.

Each stage still reads what it owes from the warehouse (its pending query) and the flow process is
still the only writer; what changes is when the queries run. One loop, in the flow process:

1. write every finished batch of every stage (`flows.batches.write_result`, screened by the stage's
   `StageGuard`, exactly as the one-stage loop does);
2. for each stage with room (fewer than `in_flight_batches` batches out), re-run its pending query
   if something it depends on changed, leave out the rows already in flight, and submit batches;
3. wait for any batch to finish.

So the painter starts on the first answered trajectories while the teacher is still running, and the
number of rows in flight per stage is bounded (back-pressure: a slow painter never has more than
`in_flight_batches` batches queued). The task runner's futures (Prefect threads, Ray through
prefect-ray, or a plain executor: `flows/submit.py`) give the concurrency; there is no other scheduler.

Ending and failures keep `run_until_done`'s rules: a row that failed transiently `guard.passes` times
in this run waits for the next run, a batch that changed nothing hands its rows out no more in this run,
and a fatal error or an open breaker stops its stage and the stages after it (their batches in flight
are still written; stages before it go on, as they would have finished before it in order).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.batches import cancel_if_not_started, write_result
from flows.progress import reporter
from flows.results import BatchResult, StageCounts
from flows.stage_guard import StageGuard
from schemas.errors import RowError
from synthesis.circuit_breaker import reset_breakers
from warehouse.store import Warehouse

IDLE_POLL_S = 0.05  # how often the loop looks at futures that are not concurrent.futures (Ray)


@dataclass
class InFlight:
    ids: list[str]
    future: Any
    started: float


@dataclass
class StageWork:
    """One batch stage of the loop: its pending query and task, and what it has in flight."""

    name: str
    pending: Callable[[], Sequence[Any]]
    item_id: Callable[[Any], str]
    submit: Callable[[list[Any]], Any]
    batch_size: int
    in_flight_batches: int = 2
    guard: StageGuard = field(init=False)
    counts: StageCounts = field(default_factory=StageCounts)
    in_flight: list[InFlight] = field(default_factory=list)
    queued: list[Any] = field(default_factory=list)  # pending rows read but not submitted yet
    stuck: set[str] = field(default_factory=set)  # rows whose batch changed nothing: not again this run
    stale: bool = True  # something this stage reads changed since its last pending query
    halted: bool = False  # stopped itself, or a stage before it stopped: submits nothing more
    finished_at: float = 0.0
    busy_s: float = 0.0  # time with at least one batch in flight
    busy_since: float = 0.0

    def __post_init__(self) -> None:
        self.guard = StageGuard(self.name)

    def busy_ids(self) -> set[str]:
        return {row_id for batch in self.in_flight for row_id in batch.ids}


def run_overlapped(warehouse: Warehouse, run_id: str, stages: list[StageWork]) -> dict[str, dict[str, Any]]:
    """Run `stages` (in data order: each reads what the ones before it write) until none owes work.
    Returns each stage's counts (`StageCounts` fields) with `seconds`, when its last batch was
    written (from the start), and `busy_seconds`, how long it had batches in flight."""
    reset_breakers()  # this process's LLM clients start the stages with closed breakers
    started = time.perf_counter()
    while True:
        for index, work in enumerate(stages):
            if _write_finished(warehouse, run_id, work):
                for later in stages[index:]:
                    later.stale = True
            if work.guard.stopped and not work.halted:
                for later in stages[index:]:
                    _halt(later)
        submitted = [_hand_out(work) for work in stages]  # every stage, not only up to the first
        if not any(work.in_flight for work in stages):
            if any(submitted):
                continue
            if any(work.stale and not work.halted for work in stages):
                continue  # a last look at every stage's pending rows before ending
            break
        _wait_any([batch.future for work in stages for batch in work.in_flight])
    ended = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for work in stages:
        if work.guard.stopped:
            work.counts.stopped = work.guard.message(len(work.pending()))
        reporter().finish(work.name)
        results[work.name] = vars(work.counts) | {
            "seconds": round((work.finished_at or ended) - started, 3),
            "busy_seconds": round(work.busy_s, 3),
        }
    return results


def _halt(work: StageWork) -> None:
    """Submit nothing more; batches not started yet are cancelled, the rest are still written."""
    work.halted = True
    work.queued = []
    for batch in list(work.in_flight):
        if cancel_if_not_started(batch.future):
            work.in_flight.remove(batch)
            reporter().advance(work.name, len(batch.ids))
    _mark_idle(work)


def _hand_out(work: StageWork) -> bool:
    """Submit batches while the stage has room; True when it submitted any."""
    if work.halted or len(work.in_flight) >= work.in_flight_batches:
        return False
    if work.stale and not work.queued:
        busy = work.busy_ids()
        work.queued = [
            item
            for item in work.pending()
            if (row_id := work.item_id(item)) not in busy
            and row_id not in work.stuck
            and not work.guard.retry_later(row_id)
        ]
        work.stale = False
        if work.queued:
            reporter().start(work.name, len(work.queued) + len(busy))
    submitted = False
    while work.queued and len(work.in_flight) < work.in_flight_batches:
        batch, work.queued = work.queued[: work.batch_size], work.queued[work.batch_size :]
        now = time.perf_counter()
        if not work.in_flight:
            work.busy_since = now
        work.in_flight.append(InFlight([work.item_id(item) for item in batch], work.submit(batch), now))
        submitted = True
    return submitted


def _write_finished(warehouse: Warehouse, run_id: str, work: StageWork) -> bool:
    """Write every finished batch of `work`; True when any wrote a row, a failure or a done input."""
    changed = False
    for batch in [batch for batch in work.in_flight if _finished(batch.future)]:
        work.in_flight.remove(batch)
        try:
            result: BatchResult = batch.future.result()
        except Exception as error:  # the batch failed after its retries: record it per row, go on
            result = BatchResult(errors=[RowError.from_exception(row_id, error) for row_id in batch.ids])
        recorded_ids, recorded = work.guard.screen(batch.ids, result)
        counts = write_result(warehouse, work.name, run_id, recorded_ids, recorded)
        counts.inputs = len(batch.ids)
        work.counts.add(counts)
        if counts.rows_written == 0 and counts.failures == 0 and counts.done == 0:
            work.stuck.update(batch.ids)  # re-querying would hand out the same rows again
        else:
            changed = True
        work.finished_at = time.perf_counter()
        reporter().advance(work.name, len(batch.ids))
    _mark_idle(work)
    return changed


def _mark_idle(work: StageWork) -> None:
    if not work.in_flight and work.busy_since:
        work.busy_s += time.perf_counter() - work.busy_since
        work.busy_since = 0.0


def _inner(future: Any) -> Any:
    return getattr(future, "wrapped_future", future)


def _finished(future: Any) -> bool:
    """Whether a batch's future is done: a concurrent.futures future (threads, plain executor) or a
    Ray object reference (prefect-ray)."""
    inner = _inner(future)
    done = getattr(inner, "done", None)
    if callable(done):
        return bool(done())
    import ray

    ready, _ = ray.wait([inner], timeout=0)
    return bool(ready)


def _wait_any(futures: list[Any]) -> None:
    inner = [_inner(future) for future in futures]
    if inner and all(isinstance(future, concurrent.futures.Future) for future in inner):
        concurrent.futures.wait(inner, timeout=5.0, return_when=concurrent.futures.FIRST_COMPLETED)
    else:
        time.sleep(IDLE_POLL_S)
