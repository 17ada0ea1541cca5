"""`groundgen retry`: re-queue failed rows on purpose, and the status table of rows waiting or given up.

Re-queuing marks failures `requeued_at` (they stay in `failures` as history) so they no longer count
against a row's `max_attempts`; the next `groundgen run` processes those rows again. Only failures of
rows that still have no output are touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.workspace import Workspace
from warehouse.pending import OUTPUT_OF_INPUT, failed_rows_sql
from warehouse.store import Warehouse


@dataclass(frozen=True)
class RequeueReport:
    rows: int  # distinct (stage, row) re-queued
    failures: int  # failure rows marked
    by_stage: dict[str, int]

    def message(self) -> str:
        if not self.rows:
            return "nothing to re-queue: no failed row without output matches"
        stages = ", ".join(f"{stage} {rows}" for stage, rows in sorted(self.by_stage.items()))
        return (
            f"re-queued {self.rows} rows ({stages}; {self.failures} failures kept as history); "
            "run `groundgen run` to process them"
        )


def _unsettled_clause() -> str:
    """SQL: the failure's row still has no output in its stage."""
    parts = [f"(stage = '{stage}' AND row_id NOT IN ({sql}))" for stage, sql in OUTPUT_OF_INPUT.items()]
    known = ", ".join(f"'{stage}'" for stage in OUTPUT_OF_INPUT)
    return "(" + " OR ".join([*parts, f"stage NOT IN ({known})"]) + ")"


def requeue(warehouse: Warehouse, stage: str | None = None, error_class: str | None = None) -> RequeueReport:
    """Mark the matching failures of rows still without output as re-queued."""
    where = ["requeued_at IS NULL", _unsettled_clause()]
    parameters: list[Any] = []
    if stage:
        where.append("stage = ?")
        parameters.append(stage)
    if error_class:
        where.append("error_class = ?")
        parameters.append(error_class)
    condition = " AND ".join(where)
    matched = warehouse.query(
        f"SELECT stage, count(DISTINCT row_id) AS rows, count(*) AS failures FROM failures WHERE {condition} "
        "GROUP BY stage",
        parameters,
    ).to_pylist()
    if matched:
        warehouse.connection.execute(
            f"UPDATE failures SET requeued_at = ? WHERE {condition}", [datetime.now(UTC), *parameters]
        ).fetchall()
    return RequeueReport(
        rows=sum(row["rows"] for row in matched),
        failures=sum(row["failures"] for row in matched),
        by_stage={row["stage"]: row["rows"] for row in matched},
    )


def requeue_now(workdir: Path, stage: str | None, error_class: str | None) -> RequeueReport:
    """`groundgen retry`: holds the work-directory lock, like every command that writes the warehouse."""
    from flows.worklock import work_lock

    workspace = Workspace(workdir)
    with work_lock(workspace.root, "retry"), Warehouse(workspace.database) as warehouse:
        return requeue(warehouse, stage, error_class)


def failed_rows_table(database: Path, max_attempts: int) -> Any:
    """`groundgen status`: failed rows without output by stage and error class, waiting or given up."""
    from rich.table import Table

    from warehouse.query import run_query

    rows = run_query(database, failed_rows_sql(max_attempts)).to_pylist()
    table = Table(title="failed rows (waiting on a retry / given up)", show_edge=False)
    for column in ("stage", "error_class", "waiting on a retry", "given up"):
        table.add_column(column, justify="right" if column in ("waiting on a retry", "given up") else "left")
    for row in rows:
        table.add_row(row["stage"], row["error_class"], str(row["waiting"]), str(row["given_up"]))
    if not rows:
        table.caption = "none"
    elif any(row["given_up"] for row in rows):
        table.caption = "re-queue given-up rows with: groundgen retry [--stage S] [--error-class C]"
    return table
