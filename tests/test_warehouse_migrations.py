"""Schema versions and in-place migrations (warehouse/migrations.py), on a warehouse written by an older
groundgen (tests/fixtures/warehouse-v1) and on made-up row models that gain fields and tables."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest
from pydantic import BaseModel, Field

from schemas.rows import Prompt, Row, Topic
from warehouse import migrations
from warehouse.migrations import SCHEMA_VERSION, MigrationError, ensure_schema, recorded_state
from warehouse.store import TABLES, Warehouse

FIXTURE = Path(__file__).parent / "fixtures" / "warehouse-v1" / "warehouse.duckdb.gz"


def old_warehouse(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "warehouse.duckdb"
    with gzip.open(FIXTURE) as source, open(database, "wb") as target:
        shutil.copyfileobj(source, target)
    return database


def columns(connection: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).fetchall()
    ]


def test_the_old_fixture_opens_migrated_with_a_backup_and_the_version_recorded(tmp_path):
    database = old_warehouse(tmp_path / "work")
    with duckdb.connect(str(database), read_only=True) as old:
        assert recorded_state(old) == migrations.SchemaState(1, "")
        old_topics = old.execute("SELECT * FROM topics ORDER BY id").fetchall()
        old_prompt_ids = [r[0] for r in old.execute("SELECT id FROM prompts ORDER BY id").fetchall()]
    with Warehouse(database) as warehouse:
        report = warehouse.migration
        assert report is not None and report.migrated
        assert report.from_state == migrations.SchemaState(1, "")
        assert report.to_state.version == SCHEMA_VERSION
        assert report.backup == database.with_name("warehouse.duckdb.bak-1")
        assert "1->2: relative_version_paths" in report.data_steps
        meta = dict(warehouse.connection.execute("SELECT key, value FROM schema_meta").fetchall())
        # every column of every row model is there now, whatever other fields were added since
        for table, model in TABLES.items():
            assert set(model.model_fields) <= set(columns(warehouse.connection, table)), table
        assert warehouse.ids(Prompt) == set(old_prompt_ids)
        topics = warehouse.rows(Topic)
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["migrated_from"] == "1"
    assert meta["schema_fingerprint"] == report.to_state.fingerprint
    assert [t.id for t in topics] == [row[0] for row in old_topics]
    with duckdb.connect(str(report.backup), read_only=True) as backup:  # the backup is the old file
        assert recorded_state(backup) == migrations.SchemaState(1, "")
        assert backup.execute("SELECT * FROM topics ORDER BY id").fetchall() == old_topics
    with Warehouse(database) as again:  # a second open changes nothing
        assert again.migration is not None and not again.migration.migrated
        assert again.migration.backup is None


class ThingV1(Row):
    name: str


class ThingV2(Row):
    name: str
    tags: list[str] = Field(default_factory=list)
    score: float = 0.5
    note: str = "none"


class NewTable(Row):
    value: int = 0


class ThingRequired(Row):
    name: str
    must: str


def open_with(database: Path, tables: dict[str, type[BaseModel]]) -> migrations.MigrationReport:
    with duckdb.connect(str(database)) as connection:
        return ensure_schema(
            connection, database, tables, ["CREATE INDEX IF NOT EXISTS things_name ON things (name)"]
        )


def test_fields_added_to_a_row_model_and_new_tables_migrate_with_no_code_of_their_own(tmp_path):
    database = tmp_path / "w.duckdb"
    assert open_with(database, {"things": ThingV1}).from_state is None  # fresh: created, no backup
    assert not list(tmp_path.glob("*.bak-*"))
    with duckdb.connect(str(database)) as connection:
        connection.execute("INSERT INTO things VALUES ('a', 'first'), ('b', 'second')")
    report = open_with(database, {"things": ThingV2, "extras": NewTable})
    assert report.created_tables == ["extras"]
    assert report.added_columns == ["things.tags", "things.score", "things.note"]
    assert report.backup is not None and report.backup.name.startswith("w.duckdb.bak-2-")
    with duckdb.connect(str(database)) as connection:
        assert connection.execute("SELECT * FROM things ORDER BY id").fetchall() == [
            ("a", "first", [], 0.5, "none"),
            ("b", "second", [], 0.5, "none"),
        ]
        assert columns(connection, "extras") == ["id", "value"]
    with duckdb.connect(str(report.backup), read_only=True) as backup:
        assert columns(backup, "things") == ["id", "name"]


def test_inserts_go_by_name_whatever_the_column_order(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with Warehouse(database) as warehouse:  # rebuild `topics` with its columns in reverse order
        reversed_columns = warehouse.connection.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'topics' "
            "ORDER BY column_index DESC"
        ).fetchall()
        ddl = ", ".join(
            f'"{name}" {kind}' + (" PRIMARY KEY" if name == "id" else "") for name, kind in reversed_columns
        )
        warehouse.connection.execute("DROP TABLE topics")
        warehouse.connection.execute(f"CREATE TABLE topics ({ddl})")
        assert columns(warehouse.connection, "topics")[-1] == "id"
        topic = Topic(id="t1", source="s", title="T", text="x", category="science")
        assert warehouse.insert([topic]) == 1
        assert warehouse.insert([topic]) == 0
        warehouse.replace(topic.model_copy(update={"title": "T2"}))
        assert warehouse.rows(Topic) == [topic.model_copy(update={"title": "T2"})]


def test_a_newer_warehouse_is_refused_with_its_version(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    Warehouse(database).close()
    with duckdb.connect(str(database)) as connection:
        connection.execute("UPDATE schema_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(MigrationError, match=r"schema version 99, newer than this groundgen supports \(2\)"):
        Warehouse(database)


def test_a_new_required_field_is_refused_before_anything_changes(tmp_path):
    database = tmp_path / "w.duckdb"
    open_with(database, {"things": ThingV1})
    with pytest.raises(
        MigrationError, match=r"schema version 2-\w{8}.*things.must is a new field without a default"
    ):
        open_with(database, {"things": ThingRequired})
    with duckdb.connect(str(database), read_only=True) as connection:
        assert columns(connection, "things") == ["id", "name"]


def test_a_failing_migration_rolls_back_and_names_the_backup(tmp_path, monkeypatch):
    database = old_warehouse(tmp_path / "work")
    with duckdb.connect(str(database), read_only=True) as connection:
        before = {table: columns(connection, table) for table in TABLES}

    def broken(connection, path):
        connection.execute("UPDATE prompts SET prompt = 'half-migrated'")
        raise RuntimeError("disk full")

    monkeypatch.setitem(migrations.DATA_STEPS, 1, broken)
    with pytest.raises(
        MigrationError, match=r"from warehouse schema version 1 to 2-\w+ failed and was rolled back"
    ) as error:
        Warehouse(database)
    assert "warehouse.duckdb.bak-1" in str(error.value)
    with duckdb.connect(str(database), read_only=True) as connection:
        assert recorded_state(connection) == migrations.SchemaState(1, "")
        assert {table: columns(connection, table) for table in TABLES} == before
        assert "half-migrated" not in {
            r[0] for r in connection.execute("SELECT prompt FROM prompts").fetchall()
        }
        assert "schema_meta" not in {
            r[0] for r in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }


@pytest.mark.slow
def test_a_run_on_the_old_warehouse_finishes(tmp_path, prefect_server):
    from flows.runner import run_regenerate
    from schemas.config import Config, SizesConfig

    workdir = tmp_path / "work"
    database = old_warehouse(workdir)
    with duckdb.connect(str(database), read_only=True) as old:
        old_prompts = {r[0] for r in old.execute("SELECT id FROM prompts").fetchall()}
    config = Config(workdir=workdir, batch_size=4, sizes=SizesConfig(sft=3, rl=2))
    result = run_regenerate(config)
    assert (workdir / "warehouse.duckdb.bak-1").exists()
    assert result["version"] is not None and result["version"]["sft_rows"] + result["version"]["rl_rows"] > 0
    with Warehouse(database, read_only=True) as warehouse:
        assert recorded_state(warehouse.connection).version == SCHEMA_VERSION
        statuses = dict(warehouse.connection.execute("SELECT id, status FROM runs").fetchall())
        trajectory_prompts = {
            r[0] for r in warehouse.connection.execute("SELECT prompt_id FROM trajectories").fetchall()
        }
    assert statuses[result["run_id"]] == "completed"
    assert old_prompts <= trajectory_prompts, "the old warehouse's prompts went on through the new code"
