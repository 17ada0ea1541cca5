"""The flow's side of failure kinds for one stage: which row errors become `failures` rows, when the
stage stops, and what the user is told.

- permanent errors are recorded (they count against the row's `max_attempts`);
- transient errors are recorded with their kind (they never count) and feed a circuit breaker per
  endpoint; `threshold` consecutive ones open it and the stage stops with one line: "endpoint X
  unreachable since HH:MM; N rows waiting; rerun when it is back". Errors of calls a worker's own
  breaker refused (`EndpointUnavailableError`: no call was made) are not recorded;
- a fatal error (key refused, unknown model, missing key) stops the stage at once; no failure rows;
- after a stop, rows that finished anyway are still written (their calls were paid for), errors are
  not recorded: the rows stay pending for the next run.

Within one run a row that failed transiently is retried in the next pass up to `passes` times, so
a stage whose service keeps failing ends (`retry_later`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from flows.results import BatchResult
from schemas.errors import RowError
from synthesis.circuit_breaker import CircuitBreaker, current_threshold, unreachable_message

BREAKER_OPEN = "EndpointUnavailableError"


class StageGuard:
    def __init__(self, stage: str, threshold: int | None = None, passes: int = 3):
        self.stage = stage
        self.threshold = current_threshold() if threshold is None else threshold
        self.passes = passes
        self.breakers: dict[str, CircuitBreaker] = {}
        self.transient_this_run: Counter[str] = Counter()
        self.stop_reason = ""  # "fatal" or "breaker" once the stage must stop
        self.fatal_message = ""
        self.open_endpoint = ""
        self.open_since = 0.0

    @property
    def stopped(self) -> bool:
        return bool(self.stop_reason)

    def _breaker(self, endpoint: str) -> CircuitBreaker:
        if endpoint not in self.breakers:
            self.breakers[endpoint] = CircuitBreaker(endpoint, threshold=self.threshold)
        return self.breakers[endpoint]

    def screen(self, input_ids: list[str], result: BatchResult) -> tuple[list[str], BatchResult]:
        """The input ids and result to write: fatal and refused-call errors (and, once stopped, every
        error) are taken out, so they become neither failure rows nor EmptyOutput rows."""
        done = set(result.done_ids)
        errors = {error.row_id: error for error in result.errors}
        unrecorded: set[str] = set()
        for row_id in input_ids:
            error = errors.get(row_id)
            if row_id in done or error is None:
                if row_id in done:
                    for breaker in self.breakers.values():
                        breaker.record_success()
                continue
            if self.stopped:  # from the error that stopped the stage on, nothing more is recorded
                unrecorded.add(row_id)
            elif error.kind == "fatal":
                unrecorded.add(row_id)
                if not self.stop_reason:
                    self.stop_reason, self.fatal_message = "fatal", error.message
            elif error.kind == "transient":
                self.transient_this_run[row_id] += 1
                if error.error_class == BREAKER_OPEN:
                    unrecorded.add(row_id)
                self._transient(error)
        if not unrecorded:
            return input_ids, result
        kept_errors = [error for error in result.errors if error.row_id not in unrecorded]
        return [i for i in input_ids if i not in unrecorded], replace(result, errors=kept_errors)

    def _transient(self, error: RowError) -> None:
        breaker = self._breaker(error.endpoint or f"the {self.stage} stage's service")
        breaker.record_failure()
        if breaker.state == "open" and not self.stop_reason:
            self.stop_reason = "breaker"
            self.open_endpoint = breaker.endpoint
            self.open_since = breaker.since or 0.0

    def retry_later(self, row_id: str) -> bool:
        """True when a row failed transiently `passes` times in this run: leave it for the next run."""
        return self.transient_this_run[row_id] >= self.passes

    def message(self, waiting: int) -> str:
        """The one line the user reads (`waiting`: the stage's rows still pending)."""
        if self.stop_reason == "fatal":
            return self.fatal_message
        return unreachable_message(self.open_endpoint, self.open_since, waiting)
