"""Read-only SQL for users: run a query, render it as a table, CSV, JSON lines or Parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


class QueryError(RuntimeError):
    """The query failed (SQL error) or the warehouse is busy/locked; the message says what to do."""


def open_read_only(database: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as error:
        raise QueryError(
            f"cannot open {database} read-only: {error}. A running `groundgen run` holds the write lock; "
            "wait for it to finish, or query a copy of the file."
        ) from error


def run_query(database: Path, query: str) -> pa.Table:
    connection = open_read_only(database)
    try:
        relation = connection.sql(query)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as error:
        raise QueryError(f"query failed: {error}") from error
    finally:
        connection.close()


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


def status_tables(database: Path) -> list:
    from rich.table import Table

    connection = open_read_only(database)
    tables = []
    try:
        for title, query in STATUS_QUERIES.items():
            result = connection.sql(query).to_arrow_table()
            table = Table(title=title, show_edge=False)
            for name in result.column_names:
                table.add_column(name, overflow="fold")
            for row in result.to_pylist():
                if "new_rows" in row:
                    row["new_rows"] = summarize_counts(row["new_rows"])
                table.add_row(*[_cell(row[name])[:120] for name in result.column_names])
            tables.append(table)
    except duckdb.Error as error:
        raise QueryError(f"status query failed: {error}") from error
    finally:
        connection.close()
    return tables
