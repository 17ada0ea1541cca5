"""Export reads rows range by range (bounded memory): same rows, same order, same bytes."""

from __future__ import annotations

import pytest

import warehouse.parquet_shards as shards
from tests.test_export import export, folder_bytes
from tests.test_export_helpers import CURATOR, add_samples, curated  # noqa: F401  (fixture)
from warehouse.blobs import BlobStore
from warehouse.store import Warehouse


def test_chunk_sizes():
    assert shards.chunk_rows(10) == shards.CHUNK_ROWS
    assert shards.chunk_rows(shards.CHUNK_ROWS * shards.MAX_CHUNKS * 3) == shards.CHUNK_ROWS * 3


@pytest.mark.parametrize("chunk", [1, 2, 4, 100])
def test_ranges_give_exactly_the_ordered_query(curated, monkeypatch, chunk):  # noqa: F811
    warehouse, _ = curated
    monkeypatch.setattr(shards, "CHUNK_ROWS", chunk)
    for spec in (shards.SFT, shards.RL):
        expected = warehouse.connection.execute(spec.query, [CURATOR]).fetchall()
        columns = [name for name in spec.schema.names]
        got = [
            tuple(row[c] for c in columns)
            for row in shards.ordered_rows(warehouse.connection, spec, [CURATOR])
        ]
        assert got == [tuple(row) for row in expected] and len(got) == 6


def test_no_rows(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as warehouse:
        assert list(shards.ordered_rows(warehouse.connection, shards.SFT, [CURATOR])) == []


def test_memory_limit_is_lowered_then_restored(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as warehouse:
        connection = warehouse.connection

        def setting() -> str:
            return connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

        before = setting()
        with shards.duckdb_memory_limit(connection, "100MB"):
            assert setting() == "95.3 MiB"
        assert setting() == before
        connection.execute("SET memory_limit = '50MB'").fetchall()
        with shards.duckdb_memory_limit(connection, "100MB"):  # never raised
            assert setting() == "47.6 MiB"
        assert setting() == "47.6 MiB"


def test_ranged_export_is_byte_identical_to_one_range(tmp_path, monkeypatch):
    folders = []
    for name, chunk in (("one", 10_000), ("many", 1)):
        monkeypatch.setattr(shards, "CHUNK_ROWS", chunk)
        blobs = BlobStore(tmp_path / name / "blobs")
        with Warehouse(tmp_path / name / "warehouse.duckdb") as warehouse:
            add_samples(warehouse, blobs, 0, 12)
            export(warehouse, blobs, tmp_path / name / "exports")
        folders.append(folder_bytes(tmp_path / name / "exports" / "v1"))
    assert folders[0] == folders[1]
