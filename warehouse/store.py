"""The DuckDB warehouse: one table per stage, insert-if-absent writes, pending-work queries, views.

One writer: the flow process. Workers return rows; they never open the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from schemas.arrow import from_arrow, to_arrow
from schemas.errors import RowError
from schemas.ids import content_id
from schemas.rows import (
    Evidence,
    Failure,
    Image,
    Judgement,
    PageRecord,
    Prompt,
    Row,
    Run,
    Sample,
    SourceState,
    Topic,
    Trajectory,
    Version,
)
from warehouse.migrations import MigrationReport, ensure_schema
from warehouse.views import VIEWS_SQL

ModelT = TypeVar("ModelT", bound=BaseModel)
RowT = TypeVar("RowT", bound=Row)

TABLES: dict[str, type[BaseModel]] = {
    "topics": Topic,
    "prompts": Prompt,
    "trajectories": Trajectory,
    "images": Image,
    "judgements": Judgement,
    "samples": Sample,
    "failures": Failure,
    "runs": Run,
    "versions": Version,
    "pages": PageRecord,
    "source_states": SourceState,
    "evidence": Evidence,
}

INDEXES_SQL = (
    "CREATE INDEX IF NOT EXISTS prompts_writer ON prompts (writer)",
    "CREATE INDEX IF NOT EXISTS trajectories_prompt ON trajectories (prompt_id)",
    "CREATE INDEX IF NOT EXISTS images_trajectory ON images (trajectory_id)",
    "CREATE INDEX IF NOT EXISTS judgements_image ON judgements (image_id)",
    "CREATE INDEX IF NOT EXISTS samples_trajectory ON samples (trajectory_id)",
    "CREATE INDEX IF NOT EXISTS failures_row ON failures (stage, row_id)",
    "CREATE INDEX IF NOT EXISTS evidence_trajectory ON evidence (trajectory_id)",
)


def table_for(model: type[BaseModel]) -> str:
    for name, table_model in TABLES.items():
        if table_model is model:
            return name
    raise KeyError(f"{model.__name__} has no warehouse table")


WRITER_OPEN_WAIT_S = 30.0


def connect_waiting(
    path: Path, *, read_only: bool, wait_s: float = WRITER_OPEN_WAIT_S
) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting up to `wait_s` while another process (a reader that opened it read-only
    between runs) holds DuckDB's file lock; then fail with a message that says so."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() >= deadline:
                raise duckdb.IOException(
                    f"{path} stayed locked by another process for {wait_s:g} s (a reader with the file "
                    f"open, or another program): {str(error).splitlines()[0]}"
                ) from error
            time.sleep(0.1)


class Warehouse:
    """A DuckDB file with groundgen's tables and views. Use as a context manager or call close()."""

    def __init__(self, path: Path | str, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = connect_waiting(self.path, read_only=read_only)
        self.migration: MigrationReport | None = None  # what opening for writing changed
        if not read_only:
            try:
                self._create_schema()
            except BaseException:
                self.connection.close()
                raise

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def _create_schema(self) -> None:
        """Create the tables of a fresh file, or migrate an older warehouse in place (backup first;
        see `warehouse.migrations`), then (re)create the views."""
        self.migration = ensure_schema(self.connection, self.path, TABLES, INDEXES_SQL)
        for statement in VIEWS_SQL:
            self.connection.execute(statement)

    # --- writes -----------------------------------------------------------------------------------

    def insert(self, rows: Sequence[BaseModel]) -> int:
        """Insert rows whose id is not present yet; return how many were new."""
        if not rows:
            return 0
        model = type(rows[0])
        table = table_for(model)
        arrow_rows = to_arrow(list(rows), model)
        self.connection.register("_incoming", arrow_rows)
        try:
            # BY NAME: a migrated warehouse may hold its columns in another order than the row model;
            # the statement's own result is the number of rows it inserted (ignored ids not counted)
            inserted = self.connection.execute(
                f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM _incoming"
            ).fetchall()
        finally:
            self.connection.unregister("_incoming")
        return int(inserted[0][0]) if inserted else 0

    def replace(self, row: BaseModel) -> None:
        """Insert or overwrite one row by id (bookkeeping rows: runs)."""
        table = table_for(type(row))
        self.connection.register("_incoming", to_arrow([row], type(row)))
        try:
            self.connection.execute(
                f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM _incoming"
            ).fetchall()
        finally:
            self.connection.unregister("_incoming")

    def record_failures(self, stage: str, errors: Iterable[RowError], run_id: str) -> list[Failure]:
        """Record per-row failures; the attempt number counts earlier failures of the same row.

        One query counts the earlier failures of every row in `errors`, one insert writes them all
        (a row listed twice gets consecutive attempts)."""
        errors = list(errors)
        if not errors:
            return []
        earlier = dict(
            self.connection.execute(
                "SELECT row_id, count(*) FROM failures WHERE stage = ? AND row_id IN (SELECT unnest(?)) "
                "GROUP BY row_id",
                [stage, sorted({error.row_id for error in errors})],
            ).fetchall()
        )
        failures = []
        for error in errors:
            attempt = earlier.get(error.row_id, 0) + 1
            earlier[error.row_id] = attempt
            failure = Failure(
                id=content_id(stage, error.row_id, attempt),
                stage=stage,
                row_id=error.row_id,
                error_class=error.error_class,
                message=error.message,
                attempt=attempt,
                run_id=run_id,
                kind=error.kind,
            )
            failures.append(failure)
        self.insert(failures)
        return failures

    # --- reads ------------------------------------------------------------------------------------

    def query(self, sql: str, parameters: Sequence[Any] | None = None) -> pa.Table:
        return self.connection.sql(sql, params=list(parameters or [])).to_arrow_table()

    def rows(
        self,
        model: type[ModelT],
        where: str = "",
        parameters: Sequence[Any] | None = None,
        order_by: str = "id",
    ) -> list[ModelT]:
        columns = ", ".join(f'"{name}"' for name in model.model_fields)  # not *: an old column stays out
        sql = f"SELECT {columns} FROM {table_for(model)}"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order_by}"
        return from_arrow(self.query(sql, parameters), model)

    def rows_by_id(self, model: type[RowT], ids: Iterable[str]) -> dict[str, RowT]:
        """The rows of `model` with these ids (one query), by id; ids without a row are absent."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        return {row.id: row for row in self.rows(model, "id IN (SELECT unnest(?))", [wanted])}

    def count(self, table: str, where: str = "", parameters: Sequence[Any] | None = None) -> int:
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
        return int(self.connection.execute(sql, parameters or []).fetchall()[0][0])

    def failure_count(self, stage: str, row_id: str) -> int:
        return self.count("failures", "stage = ? AND row_id = ?", [stage, row_id])

    def ids(
        self, model: type[BaseModel], where: str = "", parameters: Sequence[Any] | None = None
    ) -> set[str]:
        sql = f"SELECT id FROM {table_for(model)}" + (f" WHERE {where}" if where else "")
        return {row[0] for row in self.connection.execute(sql, parameters or []).fetchall()}
