"""Explicit Arrow schemas, derived from the row types' annotations (never from the data).

`arrow_schema(Topic)` gives the Arrow schema of the `topics` table; `to_arrow(rows, Topic)` builds a
table with exactly that schema; `from_arrow(table, Topic)` validates rows back into models.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from functools import cache
from typing import Any, Literal, TypeVar, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound=BaseModel)

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) for a Python annotation."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only Optional unions are supported, got {annotation!r}")
        return _arrow_type(args[0])[0], True
    if origin is Literal:
        return pa.string(), False
    if origin is list:
        (item,) = get_args(annotation)
        item_type, _ = _arrow_type(item)
        return pa.list_(item_type), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_fields(annotation)), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Arrow type for annotation {annotation!r}")


def _fields(model: type[BaseModel]) -> list[pa.Field]:
    hints = typing.get_type_hints(model)
    fields = []
    for name in model.model_fields:
        arrow_type, nullable = _arrow_type(hints[name])
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return fields


@cache
def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    return pa.schema(_fields(model))


def to_arrow(rows: list[BaseModel], model: type[BaseModel]) -> pa.Table:
    schema = arrow_schema(model)
    return pa.Table.from_pylist([row.model_dump() for row in rows], schema=schema)


def from_arrow(table: pa.Table, model: type[ModelT]) -> list[ModelT]:
    return [model.model_validate(record) for record in table.to_pylist()]


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB column type for an Arrow type (used to create tables with explicit DDL)."""
    if pa.types.is_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_int64(arrow_type):
        return "BIGINT"
    if pa.types.is_float64(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_binary(arrow_type):
        return "BLOB"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_list(arrow_type):
        return f"{duckdb_type(arrow_type.value_type)}[]"
    if pa.types.is_struct(arrow_type):
        members = ", ".join(f'"{f.name}" {duckdb_type(f.type)}' for f in arrow_type)
        return f"STRUCT({members})"
    raise TypeError(f"no DuckDB type for {arrow_type}")


def create_table_sql(table: str, model: type[BaseModel]) -> str:
    columns = []
    for field in arrow_schema(model):
        column = f'"{field.name}" {duckdb_type(field.type)}'
        if field.name == "id":
            column += " PRIMARY KEY"
        elif not field.nullable:
            column += " NOT NULL"
        columns.append(column)
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"
