"""Read-only SQL for users: run a query, render it as a table, CSV, JSON lines or Parquet."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.live import DEFAULT_QUERY_TIMEOUT, LiveQueryError, live_query, socket_path


class QueryError(RuntimeError):
    """The query failed (SQL error) or the warehouse stayed busy past the time-out; the message says why."""


LOCK_NAME = "groundgen.lock"  # written by flows/worklock.py: {"pid", "since", "command"}


def work_lock_holder(workdir: Path) -> dict[str, Any]:
    """The live groundgen process holding `<workdir>/groundgen.lock` ({} when none is alive)."""
    try:
        holder = json.loads((Path(workdir) / LOCK_NAME).read_text() or "{}")
        pid = int(holder.get("pid", 0) or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    if pid <= 0:
        return {}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return {}
    except PermissionError:
        pass
    return holder


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "no groundgen command holds the work directory"
    return (
        f"groundgen {holder.get('command', 'command')} (pid {holder.get('pid', '?')}, "
        f"started {holder.get('since', '?')})"
    )


class WarehouseReader:
    """Reads the warehouse whether or not a run writes it (see warehouse/live.py).

    While a groundgen process holds the work directory, queries go to that process over its Unix
    socket (a snapshot of every committed batch). Otherwise the file is opened read-only. A reader
    never opens the file while a groundgen writer holds the work lock (that would keep the writer
    out), and waits at most `timeout` seconds to get in; then it says what is running and how long
    it waited instead of surfacing DuckDB's lock error. Close it (or use `with`) to let writers in.
    """

    def __init__(self, database: Path, *, timeout: float = DEFAULT_QUERY_TIMEOUT):
        self.database = Path(database)
        self.workdir = self.database.parent
        self.timeout = timeout
        self._connection: duckdb.DuckDBPyConnection | None = None
        self.live = False  # whether the last query was answered by a running process

    def __enter__(self) -> WarehouseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def table(self, query: str) -> pa.Table:
        started = time.monotonic()
        last_error = ""
        while True:
            if self._connection is not None:
                return self._direct(query)
            holder = work_lock_holder(self.workdir)
            left = self.timeout - (time.monotonic() - started)
            if socket_path(self.workdir).exists():
                try:
                    table = live_query(self.workdir, query, timeout=max(left, 1.0))
                    self.live = True
                    return table
                except LiveQueryError as error:
                    if error.kind == "sql" or error.kind == "refused":
                        raise QueryError(str(error)) from error
                    if error.kind == "timeout":
                        raise QueryError(f"{error} ({describe_holder(holder)} answers queries)") from error
                    last_error = str(error)  # a socket left by a killed run, or one shutting down
            if not holder or last_error:
                try:
                    self._connection = duckdb.connect(str(self.database), read_only=True)
                    self.live = False
                    continue
                except duckdb.Error as error:  # a writer is starting, or another program holds it
                    last_error = str(error).splitlines()[0]
            waited = time.monotonic() - started
            if waited >= self.timeout:
                raise QueryError(self._busy_message(holder, waited, last_error))
            time.sleep(0.1)

    def _direct(self, query: str) -> pa.Table:
        assert self._connection is not None
        timer = threading.Timer(self.timeout, self._connection.interrupt)
        timer.start()
        try:
            relation = self._connection.sql(query)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.InterruptException as error:
            raise QueryError(f"the query ran past its {self.timeout:g} s time-out and was stopped") from error
        except duckdb.Error as error:
            raise QueryError(f"query failed: {error}") from error
        finally:
            timer.cancel()

    def _busy_message(self, holder: dict[str, Any], waited: float, last_error: str) -> str:
        if holder:
            return (
                f"waited {waited:.1f} s for {self.database}: {describe_holder(holder)} is writing it and "
                "did not answer queries yet (it serves them once its warehouse is open); try again in a "
                "moment, or raise --timeout"
            )
        return (
            f"waited {waited:.1f} s for {self.database}: no groundgen command holds it, but another program "
            f"does ({last_error}); close that program or query a copy of the file"
        )


def open_read_only(database: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection when no groundgen writer holds the work directory (else QueryError)."""
    holder = work_lock_holder(Path(database).parent)
    if holder:
        raise QueryError(f"{describe_holder(holder)} is writing {database}; use `groundgen sql` meanwhile")
    try:
        return duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as error:
        raise QueryError(f"cannot open {database} read-only: {str(error).splitlines()[0]}") from error


def run_query(database: Path, query: str, *, timeout: float = DEFAULT_QUERY_TIMEOUT) -> pa.Table:
    with WarehouseReader(database, timeout=timeout) as reader:
        return reader.table(query)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def format_result(table: pa.Table, output_format: str, output: Path | None, stdout: TextIO) -> None:
    if output_format == "parquet":
        assert output is not None
        pq.write_table(table, output)
        return
    handle = open(output, "w", encoding="utf-8", newline="") if output else stdout
    try:
        rows = table.to_pylist()
        if output_format == "csv":
            writer = csv.writer(handle)
            writer.writerow(table.column_names)
            writer.writerows([[_cell(row[name]) for name in table.column_names] for row in rows])
        elif output_format == "json":
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:
            from rich.console import Console
            from rich.table import Table

            rendered = Table(show_edge=False)
            for name in table.column_names:
                rendered.add_column(name, overflow="fold")
            for row in rows:
                rendered.add_row(*[_cell(row[name])[:200] for name in table.column_names])
            Console(file=handle, width=200).print(rendered)
            Console(file=handle).print(f"({len(rows)} rows)")
    finally:
        if output:
            handle.close()


STATUS_QUERIES = {
    "funnel": "SELECT stage, outcome, rows FROM funnel ORDER BY step, outcome",
    "failures (latest attempt per row)": (
        "SELECT stage, error_class, count(DISTINCT row_id) AS rows, max(attempt) AS max_attempt, "
        "any_value(message) AS example FROM failures GROUP BY 1, 2 ORDER BY 1, 2"
    ),
    "recent runs": (
        "SELECT id, command, status, strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started, "
        "round(epoch(finished_at) - epoch(started_at), 1) AS seconds, counts_json AS new_rows FROM runs "
        "ORDER BY started_at DESC LIMIT 5"
    ),
    "versions": (
        "SELECT id, parent, strftime(created_at, '%Y-%m-%d %H:%M:%S') AS created, sft_rows, rl_rows, path "
        "FROM versions ORDER BY created_at DESC"
    ),
}


def stage_rows(stage: str, counts: dict[str, Any]) -> int:
    """New rows of a stage's own table (a teacher stage also writes images and pages)."""
    return int(counts.get("tables", {}).get(stage, counts.get("rows_written", 0)))


def summarize_counts(counts_json: str | None) -> str:
    """A run's `counts_json` as one line: new rows of each stage's own table, then failures."""
    try:
        counts = json.loads(counts_json or "{}")
    except ValueError:
        return counts_json or ""
    parts, failures = [], 0
    for stage, stage_counts in counts.items():
        if not isinstance(stage_counts, dict):
            continue
        parts.append(f"{stage} +{stage_rows(stage, stage_counts)}")
        failures += int(stage_counts.get("failures", 0))
    return ", ".join(parts) + (f"; {failures} failures" if failures else "")


def _optional_status_queries() -> dict[str, str]:
    """Tables `status` shows when the warehouse has what they need (a warehouse written before the
    judgement scores existed and not migrated yet has no grounding column: the table is left out)."""
    from warehouse.grounding_stats import GROUNDING_BY_VERSION_SQL

    return {"grounding per version (share of gen_prompt facts found by the tools)": GROUNDING_BY_VERSION_SQL}


def status_tables(database: Path, *, timeout: float = DEFAULT_QUERY_TIMEOUT) -> list:
    from rich.table import Table

    tables = []
    optional = _optional_status_queries()
    with WarehouseReader(database, timeout=timeout) as reader:
        for title, query in {**STATUS_QUERIES, **optional}.items():
            try:
                result = reader.table(query)
            except QueryError as error:
                if title in optional:
                    continue
                raise QueryError(f"status query failed: {error}") from error
            table = Table(title=title, show_edge=False)
            for name in result.column_names:
                table.add_column(name, overflow="fold")
            for row in result.to_pylist():
                if "new_rows" in row:
                    row["new_rows"] = summarize_counts(row["new_rows"])
                table.add_row(*[_cell(row[name])[:120] for name in result.column_names])
            tables.append(table)
    return tables
