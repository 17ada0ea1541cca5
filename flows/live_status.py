"""Inspecting a run while it runs: the writer serves readers, `groundgen status --watch` shows progress.

The writing flow (run, refresh, export) wraps its warehouse in `serve_readers`: a Unix socket in the
work directory answers read-only queries from the flow's own DuckDB connection (warehouse/live.py),
and a progress ledger records each stage's rows done and total so a watcher can show an ETA.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows import progress
from warehouse.live import serving_readers
from warehouse.pending import COUNTED_FAILURE, OUTPUT_OF_INPUT
from warehouse.query import QueryError, WarehouseReader, describe_holder, work_lock_holder
from warehouse.store import Warehouse


class ProgressLedger:
    """A progress reporter that remembers rows done/total per stage and passes calls on."""

    def __init__(self, inner: progress.ProgressReporter):
        self.inner = inner
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, Any]] = {}

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self._stages[stage] = {"total": total, "done": 0, "started": time.time(), "finished": False}
        self.inner.start(stage, total)

    def advance(self, stage: str, rows: int) -> None:
        with self._lock:
            if stage in self._stages:
                self._stages[stage]["done"] += rows
        self.inner.advance(stage, rows)

    def finish(self, stage: str) -> None:
        with self._lock:
            if stage in self._stages:
                entry = self._stages[stage]
                entry["done"], entry["finished"] = entry["total"], True
        self.inner.finish(stage)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {stage: dict(entry) for stage, entry in self._stages.items()}


@contextmanager
def serve_readers(warehouse: Warehouse, workdir: Path) -> Iterator[ProgressLedger]:
    """While the block runs, answer read-only queries and progress requests from other processes."""
    ledger = ProgressLedger(progress.reporter())
    with (
        progress.reporting_to(ledger),
        serving_readers(warehouse.connection, Path(workdir), progress=ledger.snapshot),
    ):
        yield ledger


# --- `groundgen status --watch` ------------------------------------------------------------------------

STAGE_TABLES = {
    "topics": "SELECT count(*) FROM topics",
    "prompts": "SELECT count(*) FROM prompts",
    "trajectories": "SELECT count(*) FROM trajectories",
    "images": "SELECT count(*) FROM images WHERE kind = 'ground_truth'",
    "judgements": "SELECT count(*) FROM judgements",
    "samples": "SELECT count(*) FROM samples",
}

# A failed input counts as waiting on a retry while its stage has no output for it (OUTPUT_OF_INPUT)
# and it has fewer counted failures (permanent, not re-queued: COUNTED_FAILURE) than max_attempts.


def _waiting_sql(max_attempts: int) -> str:
    parts = [
        f"SELECT '{stage}' AS stage, count(*) AS n FROM (SELECT row_id FROM failures WHERE stage = '{stage}' "
        f"GROUP BY row_id HAVING count(*) FILTER (WHERE {COUNTED_FAILURE}) < {int(max_attempts)}) f "
        f"WHERE f.row_id NOT IN ({outputs})"
        for stage, outputs in OUTPUT_OF_INPUT.items()
    ]
    return " UNION ALL ".join(parts)


RUNNING_SQL = (
    "SELECT id, command, status, strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started, counts_json "
    "FROM runs ORDER BY (status = 'running') DESC, started_at DESC LIMIT 1"
)


def spend(counts_json: str | None) -> dict[str, float]:
    """LLM calls, tokens and cost so far from a run's counts_json (per stage, per role usage)."""
    total = {"calls": 0.0, "tokens": 0.0, "cost_usd": 0.0}
    try:
        counts = json.loads(counts_json or "{}")
    except ValueError:
        return total
    for stage_counts in counts.values() if isinstance(counts, dict) else []:
        usage = stage_counts.get("usage", {}) if isinstance(stage_counts, dict) else {}
        for spent in usage.values() if isinstance(usage, dict) else []:
            if not isinstance(spent, dict):
                continue
            total["calls"] += float(spent.get("calls", 0) or 0)
            total["cost_usd"] += float(spent.get("cost_usd", 0) or 0)
            tokens = spent.get("total_tokens")
            if tokens is None:
                tokens = float(spent.get("prompt_tokens", 0) or 0) + float(
                    spent.get("completion_tokens", 0) or 0
                )
            total["tokens"] += float(tokens or 0)
    return total


class RateTracker:
    """Rows done per stage over the last `window` seconds -> rate and ETA."""

    def __init__(self, window: float = 60.0):
        self.window = window
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, stage: str, done: int, now: float) -> None:
        history = self._history.setdefault(stage, deque())
        if history and done < history[-1][1]:
            history.clear()  # a new pass of the stage started from zero
        history.append((now, done))
        while len(history) > 2 and now - history[0][0] > self.window:
            history.popleft()

    def rate(self, stage: str) -> float | None:
        history = self._history.get(stage)
        if not history or len(history) < 2 or history[-1][0] <= history[0][0]:
            return None
        return (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0])

    def eta(self, stage: str, remaining: int) -> float | None:
        if remaining <= 0:
            return 0.0
        rate = self.rate(stage)
        return remaining / rate if rate else None


def snapshot(database: Path, max_attempts: int, timeout: float) -> dict[str, Any]:
    """Everything the live view shows, read once (closed right after: a writer may want in)."""
    workdir = Path(database).parent
    data: dict[str, Any] = {"holder": work_lock_holder(workdir), "progress": {}, "errors": []}
    with WarehouseReader(database, timeout=timeout) as reader:

        def read(name: str, sql: str) -> list[dict[str, Any]]:
            try:
                return reader.table(sql).to_pylist()
            except QueryError as error:  # keep showing the rest (an older warehouse, a busy writer)
                data["errors"].append(f"{name}: {error}")
                return []

        data["rows"] = {
            stage: next(iter(row.values())) for stage, sql in STAGE_TABLES.items() for row in read(stage, sql)
        }
        data["funnel"] = read("funnel", "SELECT stage, outcome, rows FROM funnel ORDER BY step, outcome")
        data["failures"] = read(
            "failures",
            "SELECT stage, error_class, count(DISTINCT row_id) AS rows FROM failures GROUP BY 1, 2 ORDER BY 1, 2",
        )
        data["waiting"] = {r["stage"]: r["n"] for r in read("waiting", _waiting_sql(max_attempts))}
        runs = read("runs", RUNNING_SQL)
        data["run"] = runs[0] if runs else None
        data["live"] = reader.live
    if data["live"]:
        from warehouse.live import LiveQueryError, live_progress

        try:
            data["progress"] = live_progress(workdir)
        except LiveQueryError:
            pass
    return data


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def render(data: dict[str, Any], rates: RateTracker, now: float) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    holder = data["holder"]
    headline = f"{describe_holder(holder)} is writing" if holder else "no run is writing the warehouse"
    parts: list[Any] = [Text(f"{time.strftime('%H:%M:%S')}  {headline}", style="bold")]
    run = data.get("run")
    if run:
        spent = spend(run.get("counts_json"))
        parts.append(
            Text(
                f"run {run['id']} ({run['command']}, {run['status']}, started {run['started']}): "
                f"{int(spent['calls'])} LLM calls, {int(spent['tokens'])} tokens, ${spent['cost_usd']:.4f} spent"
            )
        )
    stages = Table(title="stages", show_edge=False)
    for column in ("stage", "rows", "failures", "waiting on retry", "this pass", "rows/s", "ETA"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    failed: dict[str, int] = {}
    for row in data["failures"]:
        failed[row["stage"]] = failed.get(row["stage"], 0) + int(row["rows"])
    for stage in STAGE_TABLES:
        entry = data["progress"].get(stage)
        pass_text, rate_text, eta = "", "", None
        if entry:
            rates.observe(stage, int(entry["done"]), now)
            pass_text = f"{entry['done']}/{entry['total']}" + (" done" if entry.get("finished") else "")
            rate = rates.rate(stage)
            rate_text = f"{rate:.2f}" if rate is not None else ""
            eta = 0.0 if entry.get("finished") else rates.eta(stage, int(entry["total"]) - int(entry["done"]))
        stages.add_row(
            stage,
            str(data["rows"].get(stage, "?")),
            str(failed.get(stage, 0)),
            str(data["waiting"].get(stage, 0)),
            pass_text,
            rate_text,
            _eta_text(eta) if entry else "",
        )
    parts.append(stages)
    funnel = Table(title="funnel", show_edge=False)
    for column in ("stage", "outcome", "rows"):
        funnel.add_column(column)
    for row in data["funnel"]:
        funnel.add_row(row["stage"], str(row["outcome"]), str(row["rows"]))
    parts.append(funnel)
    parts.extend(Text(error, style="yellow") for error in data["errors"])
    return Group(*parts)


def watch(
    database: Path,
    *,
    max_attempts: int,
    interval: float = 2.0,
    timeout: float = 10.0,
    iterations: int | None = None,
    console: Any = None,
) -> None:
    """Redraw the live view every `interval` seconds until Ctrl-C (or `iterations` redraws)."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    rates = RateTracker()
    count = 0
    with Live(console=console, auto_refresh=False) as live:
        try:
            while iterations is None or count < iterations:
                data = snapshot(database, max_attempts, timeout)
                live.update(render(data, rates, time.monotonic()), refresh=True)
                count += 1
                if iterations is None or count < iterations:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass


# --- `groundgen snapshot` ------------------------------------------------------------------------------


def take_snapshot(database: Path, target: Path, *, timeout: float = 600.0) -> str:
    """A consistent copy of the warehouse at `target` that any DuckDB client may open, also while a run
    writes: the running process copies its own MVCC snapshot (COPY FROM DATABASE); with no run, the
    file is copied the same way from a read-only attachment."""
    import duckdb

    from warehouse.live import LiveQueryError, live_snapshot, socket_path

    workdir, target = Path(database).parent, Path(target).resolve()
    started = time.monotonic()
    last_error = ""
    while True:
        holder = work_lock_holder(workdir)
        if socket_path(workdir).exists():
            try:
                answer = live_snapshot(workdir, target, timeout=timeout)
                return f"snapshot of the running warehouse -> {answer['path']} ({answer['seconds']} s)"
            except LiveQueryError as error:
                if error.kind != "unavailable":
                    raise QueryError(str(error)) from error
                last_error = str(error)
        if not holder or last_error:
            try:
                return _copy_database(duckdb, Path(database), target)
            except duckdb.IOException as error:
                last_error = str(error).splitlines()[0]
        waited = time.monotonic() - started
        if waited >= timeout:
            raise QueryError(f"waited {waited:.1f} s: {describe_holder(holder)}; {last_error}")
        time.sleep(0.1)


def _copy_database(duckdb: Any, database: Path, target: Path) -> str:
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    connection = duckdb.connect()
    try:
        quoted = str(database).replace("'", "''")
        connection.execute(f"ATTACH '{quoted}' AS source (READ_ONLY)")
        connection.execute(f"ATTACH '{str(partial).replace(chr(39), chr(39) * 2)}' AS copy")
        connection.execute("COPY FROM DATABASE source TO copy").fetchall()
        connection.execute("DETACH copy")
        connection.execute("DETACH source")
    finally:
        connection.close()
    partial.replace(target)
    return f"snapshot of {database} -> {target} ({time.perf_counter() - started:.3f} s)"
