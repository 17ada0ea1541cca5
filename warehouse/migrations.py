"""The warehouse's schema version and its in-place migrations.

A warehouse records its schema in the `schema_meta` table: `schema_version` (this module's
`SCHEMA_VERSION` when it was last opened for writing) and `schema_fingerprint` (a hash of every
table's DDL, so a field added to a row model without a version bump is noticed too). Warehouses made
before versioning have no `schema_meta`: they are version 1.

Opening a warehouse for writing brings it up to date (`ensure_schema`):
- a fresh file gets every table, index and the meta rows in one transaction;
- an older one is first copied to `warehouse.duckdb.bak-<old version>` (after a checkpoint, so the
  copy is complete), then migrated in ONE transaction: tables missing are created, columns a row
  model gained are added with the field's default filled in, column types that changed (a nested
  struct that gained a field) are converted, and the data steps of `DATA_STEPS` for the versions in
  between run; any error rolls everything back and names the version;
- a warehouse that cannot be migrated (newer than this code, a new required field without a default,
  a column type DuckDB cannot convert) is refused with a `MigrationError` naming its version.

Nothing here names a table or a column: a field added at the end of a row model (with a default) or a
new entry in `warehouse.store.TABLES` is migrated with no code of its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from schemas.arrow import create_table_sql
from schemas.errors import GroundgenError
from schemas.ids import content_id

SCHEMA_VERSION = 2  # 1: before `schema_meta`; 2: schema_meta, relative version paths
LEGACY_VERSION = 1
META_TABLE = "schema_meta"
META_SQL = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"


class MigrationError(GroundgenError):
    """A warehouse's schema cannot be brought up to this code's version."""


@dataclass(frozen=True)
class SchemaState:
    version: int
    fingerprint: str

    @property
    def label(self) -> str:
        """The version as backups name it: `1` for a pre-versioning warehouse, else `2-<fp8>`."""
        return str(self.version) if not self.fingerprint else f"{self.version}-{self.fingerprint[:8]}"


@dataclass
class MigrationReport:
    """What opening the warehouse changed (empty lists: nothing)."""

    from_state: SchemaState | None
    to_state: SchemaState
    created_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)  # "table.column"
    converted_columns: list[str] = field(default_factory=list)
    data_steps: list[str] = field(default_factory=list)
    backup: Path | None = None

    @property
    def migrated(self) -> bool:
        return bool(self.created_tables or self.added_columns or self.converted_columns or self.data_steps)


def schema_fingerprint(tables: dict[str, type[BaseModel]]) -> str:
    return content_id(SCHEMA_VERSION, sorted(create_table_sql(name, model) for name, model in tables.items()))


# --- data steps: changes of meaning that DDL cannot express, one per version bump --------------------


def _relative_version_paths(connection: duckdb.DuckDBPyConnection, database: Path) -> None:
    """Version 1 stored `versions.path` as the absolute folder it was exported to; version 2 stores
    it relative to the work directory (`exports/<version>`), so a copied work dir keeps working."""
    if not _columns(connection, "versions"):
        return
    rows = connection.execute("SELECT id, path FROM versions").fetchall()
    for version_id, path in rows:
        if path and Path(path).is_absolute():
            relative = f"exports/{Path(path).name}"
            connection.execute("UPDATE versions SET path = ? WHERE id = ?", [relative, version_id])


# from-version -> step run when migrating past it
DATA_STEPS: dict[int, Callable[[duckdb.DuckDBPyConnection, Path], None]] = {1: _relative_version_paths}


# --- inspecting --------------------------------------------------------------------------------------


def _tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    rows = connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND database_name = current_database()"
    ).fetchall()
    return {row[0] for row in rows}


def _columns(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, tuple[str, bool]]:
    """column -> (DuckDB type, nullable), in table order."""
    rows = connection.execute(
        "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
        "WHERE table_name = ? AND schema_name = 'main' AND database_name = current_database() "
        "ORDER BY column_index",
        [table],
    ).fetchall()
    return {name: (data_type, nullable) for name, data_type, nullable in rows}


@cache
def _canonical_columns(table: str, model: type[BaseModel]) -> dict[str, tuple[str, bool]]:
    """The columns `model` gives, with types as DuckDB itself spells them."""
    scratch = duckdb.connect(":memory:")
    try:
        scratch.execute(create_table_sql(table, model))
        return _columns(scratch, table)
    finally:
        scratch.close()


def recorded_state(connection: duckdb.DuckDBPyConnection) -> SchemaState | None:
    """The warehouse's recorded schema; None for a file with none of groundgen's tables."""
    tables = _tables(connection)
    if META_TABLE not in tables:
        return SchemaState(LEGACY_VERSION, "") if tables else None
    meta = dict(connection.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
    return SchemaState(int(meta.get("schema_version", LEGACY_VERSION)), meta.get("schema_fingerprint", ""))


def _field_default(model: type[BaseModel], name: str) -> tuple[bool, Any]:
    info = model.model_fields[name]
    if info.default_factory is not None:
        return True, info.default_factory()  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return False, None
    return True, info.default


def _dump(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


@dataclass
class _Plan:
    create: list[str] = field(default_factory=list)
    add: list[tuple[str, str, str, Any]] = field(default_factory=list)  # table, column, type, default
    convert: list[tuple[str, str, str]] = field(default_factory=list)  # table, column, type
    problems: list[str] = field(default_factory=list)


def _plan(connection: duckdb.DuckDBPyConnection, tables: dict[str, type[BaseModel]]) -> _Plan:
    plan = _Plan()
    existing = _tables(connection)
    for table, model in tables.items():
        if table not in existing:
            plan.create.append(table)
            continue
        have = _columns(connection, table)
        for column, (data_type, _) in _canonical_columns(table, model).items():
            if column not in have:
                has_default, default = _field_default(model, column)
                if not has_default:
                    plan.problems.append(f"{table}.{column} is a new field without a default")
                else:
                    plan.add.append((table, column, data_type, _dump(default)))
            elif have[column][0] != data_type:
                plan.convert.append((table, column, data_type))
        for column, (_, nullable) in have.items():
            if column not in model.model_fields and not nullable:
                plan.problems.append(f"{table}.{column} is a required column the row model no longer has")
    return plan


# --- migrating ---------------------------------------------------------------------------------------


def _backup(connection: duckdb.DuckDBPyConnection, database: Path, state: SchemaState) -> Path:
    """Copy the database file (after a checkpoint: the copy holds every committed row) once per old
    version; an existing backup of that version is the older one and is kept."""
    target = database.with_name(f"{database.name}.bak-{state.label}")
    connection.execute("CHECKPOINT").fetchall()
    if not target.exists():
        temp = target.with_name(target.name + ".partial")
        shutil.copyfile(database, temp)
        temp.replace(target)
    return target


def _write_meta(
    connection: duckdb.DuckDBPyConnection, state: SchemaState, previous: SchemaState | None
) -> None:
    connection.execute(META_SQL)
    values = {
        "schema_version": str(state.version),
        "schema_fingerprint": state.fingerprint,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if previous is not None:
        values["migrated_from"] = previous.label
    for key, value in values.items():
        connection.execute(f"INSERT OR REPLACE INTO {META_TABLE} VALUES (?, ?)", [key, value])


def _create_all(
    connection: duckdb.DuckDBPyConnection, tables: dict[str, type[BaseModel]], names: Sequence[str]
) -> None:
    for name in names:
        connection.execute(create_table_sql(name, tables[name]))


def _apply(
    connection: duckdb.DuckDBPyConnection,
    database: Path,
    plan: _Plan,
    previous: SchemaState,
    tables: dict[str, type[BaseModel]],
    report: MigrationReport,
) -> None:
    _create_all(connection, tables, plan.create)
    report.created_tables = list(plan.create)
    converted_tables = {table for table, _, _ in plan.convert}
    for table in sorted(converted_tables):  # DuckDB refuses to change a type a table's index depends on
        for (index,) in connection.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE table_name = ? AND database_name = current_database()",
            [table],
        ).fetchall():
            connection.execute(f'DROP INDEX "{index}"')
    for table, column, data_type in plan.convert:
        connection.execute(f'ALTER TABLE {table} ALTER "{column}" SET DATA TYPE {data_type}')
        report.converted_columns.append(f"{table}.{column}")
    for table, column, data_type, default in plan.add:
        connection.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {data_type}')
        if default is not None:
            connection.execute(f'UPDATE {table} SET "{column}" = CAST(? AS {data_type})', [default])
        report.added_columns.append(f"{table}.{column}")
    for from_version in range(previous.version, SCHEMA_VERSION):
        step = DATA_STEPS.get(from_version)
        if step is not None:
            step(connection, database)
            report.data_steps.append(f"{from_version}->{from_version + 1}: {step.__name__.strip('_')}")


def ensure_schema(
    connection: duckdb.DuckDBPyConnection,
    database: Path,
    tables: dict[str, type[BaseModel]],
    indexes: Sequence[str] = (),
) -> MigrationReport:
    """Create or migrate the schema of the warehouse open on `connection` (see the module doc)."""
    current = SchemaState(SCHEMA_VERSION, schema_fingerprint(tables))
    previous = recorded_state(connection)
    report = MigrationReport(from_state=previous, to_state=current)
    if previous is not None and previous.version > SCHEMA_VERSION:
        raise MigrationError(
            f"{database} has warehouse schema version {previous.version}, newer than this groundgen "
            f"supports ({SCHEMA_VERSION}); upgrade groundgen to open it"
        )
    if previous is None:
        plan = _Plan(create=list(tables))
    elif previous == current:
        plan = _Plan()
    else:
        plan = _plan(connection, tables)
        if plan.problems:
            raise MigrationError(
                f"{database} has warehouse schema version {previous.label}, which this groundgen "
                f"(version {current.label}) cannot migrate: {'; '.join(plan.problems)}"
            )
    needs_data_steps = previous is not None and any(
        v in DATA_STEPS for v in range(previous.version, SCHEMA_VERSION)
    )
    if previous is not None and (plan.create or plan.add or plan.convert or needs_data_steps):
        report.backup = _backup(connection, database, previous)
    if previous != current:
        connection.execute("BEGIN TRANSACTION")
        try:
            if previous is None:
                _create_all(connection, tables, plan.create)
            else:
                _apply(connection, database, plan, previous, tables, report)
            _write_meta(connection, current, previous)
            connection.execute("COMMIT")
        except Exception as error:
            connection.execute("ROLLBACK")
            if isinstance(error, MigrationError):
                raise
            raise MigrationError(
                f"migrating {database} from warehouse schema version "
                f"{previous.label if previous else 'none'} to {current.label} failed and was rolled "
                f"back ({error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''})"
                + (f"; the copy made before is {report.backup}" if report.backup else "")
            ) from error
    for statement in indexes:  # after the commit: DuckDB builds no index over uncommitted updates
        connection.execute(statement)
    return report
