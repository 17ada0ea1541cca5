"""What stages hand back: a batch task's `BatchResult` (rows, per-row errors, inputs done, model usage)
and a stage's `StageCounts`, with usage summed per LLM role (`add_usage`). Below `flows/batches.py`,
`flows/ledger.py` and `flows/stage_guard.py`, which all read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from schemas.errors import RowError


@dataclass
class BatchResult:
    """What a stage task returns: output rows, per-row errors, and which inputs got an output."""

    rows: list[BaseModel] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    done_ids: list[str] = field(default_factory=list)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # LLM role -> Usage fields


# Gauges of an endpoint's adaptive concurrency (synthesis.adaptive_concurrency.AdaptiveLimit.summary):
# each batch reports the process's limit so far, so the latest value (the most back-offs) wins.
USAGE_GAUGES = frozenset({"concurrency_level", "concurrency_mean"})
USAGE_MAXIMA = frozenset({"backoffs"})


def add_usage(total: dict[str, dict[str, float]], more: dict[str, dict[str, float]]) -> None:
    """Sum `more` into `total`, per LLM role and field (calls, tokens, cost_usd, latency_s, ...);
    the concurrency gauges are replaced (latest) or kept at their maximum, not summed."""
    for role, spent in more.items():
        into = total.setdefault(role, {})
        for name, value in spent.items():
            if name in USAGE_GAUGES:
                into[name] = value
            elif name in USAGE_MAXIMA:
                into[name] = max(into.get(name, 0), value)
            else:
                into[name] = into.get(name, 0) + value


@dataclass
class StageCounts:
    inputs: int = 0
    rows_written: int = 0
    failures: int = 0
    batches: int = 0
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # LLM role -> summed Usage fields
    tables: dict[str, int] = field(default_factory=dict)  # new rows per table (a teacher writes images too)
    done: int = 0  # inputs that got their output
    stopped: str = ""  # why the stage stopped before its pending rows were done (fatal error, breaker)
    note: str = ""  # what the user should know about an outcome (e.g. why no version was exported)

    def add(self, other: StageCounts) -> None:
        self.inputs += other.inputs
        self.done += other.done
        self.stopped = self.stopped or other.stopped
        self.note = self.note or other.note
        self.rows_written += other.rows_written
        for table, rows in other.tables.items():
            self.tables[table] = self.tables.get(table, 0) + rows
        self.failures += other.failures
        self.batches += other.batches
        add_usage(self.usage, other.usage)
