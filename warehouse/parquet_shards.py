"""Sharded, deterministic Parquet in Hugging Face layout, with images embedded as the `Image` feature.

Rows stream from a DuckDB query in batches; images are read from the blob store one row group at a
time, so memory stays bounded whatever the row count. The same rows give byte-identical files: fixed
schema and feature metadata, fixed compression, row groups cut by row count and byte budget, shards cut
by a byte budget, no timestamps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.blobs import BlobStore
from warehouse.manifest import ShardFile, file_sha256

ROW_GROUP_ROWS = 100  # what `datasets` uses for image datasets: a row group stays a few MB
ROW_GROUP_BYTES = 64 * 1024 * 1024
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
_STRING = {"dtype": "string", "_type": "Value"}
_IMAGE = {"_type": "Image"}


def _schema(fields: list[pa.Field], features: dict[str, Any]) -> pa.Schema:
    metadata = {"huggingface": json.dumps({"info": {"features": features}}, separators=(",", ":"))}
    return pa.schema(fields, metadata=metadata)


# Features use the list shorthand (`[feature]`), which every `datasets` version reads as a list feature.
SFT_FEATURES: dict[str, Any] = {
    "id": _STRING,
    "messages": [{"role": _STRING, "content": _STRING}],
    "images": [_IMAGE],
    "category": _STRING,
    "difficulty": _STRING,
    "prompt": _STRING,
    "gen_prompt": _STRING,
}
SFT_SCHEMA = _schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field(
            "messages",
            pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])),
        ),
        pa.field("images", pa.list_(IMAGE_TYPE)),
        pa.field("category", pa.string()),
        pa.field("difficulty", pa.string()),
        pa.field("prompt", pa.string()),
        pa.field("gen_prompt", pa.string()),
    ],
    SFT_FEATURES,
)

# RL rows carry no reference images: the RL policy must find its own references by searching, the
# reward compares against `gt_image` only, and embedding up to five references per row would multiply
# the config's size. `gen_prompt` (the teacher's grounded prompt) is kept as cheap text.
RL_FEATURES: dict[str, Any] = {
    "id": _STRING,
    "prompt": _STRING,
    "gt_image": _IMAGE,
    "category": _STRING,
    "difficulty": _STRING,
    "gen_prompt": _STRING,
}
RL_SCHEMA = _schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("gt_image", IMAGE_TYPE),
        pa.field("category", pa.string()),
        pa.field("difficulty", pa.string()),
        pa.field("gen_prompt", pa.string()),
    ],
    RL_FEATURES,
)

SFT_SELECT = (
    "SELECT id, messages, images, category, difficulty, prompt, gen_prompt FROM sft_rows WHERE curator = ?"
)
RL_SELECT = "SELECT id, prompt, gt_image, category, difficulty, gen_prompt FROM rl_rows WHERE curator = ?"
SFT_QUERY = SFT_SELECT + " ORDER BY id"
RL_QUERY = RL_SELECT + " ORDER BY id"

# Export reads rows in id ranges: first the ids alone are sorted (narrow), then each range of
# `chunk_rows(n)` ids is fetched and sorted by itself, so no sort ever holds every wide row (the
# messages text) at once. Ranges are contiguous (`id > previous last AND id <= this last`), so the
# concatenation is exactly the single `ORDER BY id` result. At most MAX_CHUNKS range queries per
# config (each scans the joined tables once), at least CHUNK_ROWS ids per range.
CHUNK_ROWS = 2_000
MAX_CHUNKS = 64
EXPORT_MEMORY_LIMIT = "256MB"  # DuckDB's own cap during an export (buffer pool, sorts spill beyond it)


def image_extension(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


def embed_image(blobs: BlobStore, sha256: str | None) -> dict[str, Any] | None:
    if not sha256:
        return None
    data = blobs.read(sha256)
    return {"bytes": data, "path": f"{sha256}.{image_extension(data)}"}


def sft_record(row: dict[str, Any], blobs: BlobStore) -> dict[str, Any]:
    return {
        "id": row["id"],
        "messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"] or []],
        "images": [embed_image(blobs, sha) for sha in row["images"] or []],
        "category": row["category"],
        "difficulty": row["difficulty"],
        "prompt": row["prompt"],
        "gen_prompt": row["gen_prompt"],
    }


def rl_record(row: dict[str, Any], blobs: BlobStore) -> dict[str, Any]:
    return {
        "id": row["id"],
        "prompt": row["prompt"],
        "gt_image": embed_image(blobs, row["gt_image"]),
        "category": row["category"],
        "difficulty": row["difficulty"],
        "gen_prompt": row["gen_prompt"],
    }


def record_bytes(record: dict[str, Any]) -> int:
    """A deterministic estimate of a record's size in the file (images dominate; text counted raw)."""
    total = 0
    for value in record.values():
        if isinstance(value, str):
            total += len(value.encode("utf-8"))
        elif isinstance(value, dict):
            total += len(value["bytes"]) + len(value["path"])
        elif isinstance(value, list):
            for item in value:
                if item is None:
                    continue
                if "bytes" in item:
                    total += len(item["bytes"]) + len(item["path"])
                else:
                    total += sum(len(str(v).encode("utf-8")) for v in item.values())
    return total


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    schema: pa.Schema
    features: dict[str, Any]
    query: str  # every row, ordered by id (parameters: curator)
    to_record: Callable[[dict[str, Any], BlobStore], dict[str, Any]]
    select: str = ""  # the same rows unordered, with a trailing WHERE clause to extend

    @property
    def ids_query(self) -> str:
        return "SELECT id FROM (" + self.select + ") ORDER BY id"

    def range_query(self, lower: bool, upper: bool) -> str:
        bounds = (" AND id > ?" if lower else "") + (" AND id <= ?" if upper else "")
        return self.select + bounds + " ORDER BY id"


SFT = ConfigSpec("sft", SFT_SCHEMA, SFT_FEATURES, SFT_QUERY, sft_record, SFT_SELECT)
RL = ConfigSpec("rl", RL_SCHEMA, RL_FEATURES, RL_QUERY, rl_record, RL_SELECT)


@dataclass
class WrittenConfig:
    shards: list[ShardFile]
    ids: list[str]


def _leaf_columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """Parquet leaf column paths (`images.list.element.bytes`) with their Arrow types."""

    def walk(path: str, arrow_type: pa.DataType) -> list[tuple[str, pa.DataType]]:
        if pa.types.is_struct(arrow_type):
            return [leaf for child in arrow_type for leaf in walk(f"{path}.{child.name}", child.type)]
        if pa.types.is_list(arrow_type):
            return walk(f"{path}.list.element", arrow_type.value_type)
        return [(path, arrow_type)]

    return [leaf for field in schema for leaf in walk(field.name, field.type)]


def _open_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # Image bytes are PNG/JPEG already: compressing them again costs time and saves nothing, and
    # dictionary-encoding or min/max statistics of megabyte values are waste. Text gets zstd.
    leaves = _leaf_columns(schema)
    compression = {name: "none" if pa.types.is_binary(kind) else COMPRESSION for name, kind in leaves}
    small = {"id", "category", "difficulty", "messages.list.element.role"}
    return pq.ParquetWriter(
        path,
        schema,
        compression=compression,
        compression_level={name: COMPRESSION_LEVEL for name, codec in compression.items() if codec != "none"},
        use_dictionary=[name for name, _ in leaves if name in small and name != "id"],
        write_statistics=[name for name, _ in leaves if name in small],
        version="2.6",
        data_page_version="1.0",
    )


def write_shards(
    rows: Iterator[dict[str, Any]],
    spec: ConfigSpec,
    blobs: BlobStore,
    data_dir: Path,
    max_shard_bytes: int,
) -> WrittenConfig:
    """Write `rows` (ordered, without image bytes) as `data_dir/<config>-NNNNN-of-MMMMM.parquet`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    group_budget = min(ROW_GROUP_BYTES, max_shard_bytes)
    parts: list[tuple[Path, int]] = []  # (temp path, rows)
    ids: list[str] = []
    buffer: list[dict[str, Any]] = []
    buffer_bytes = 0
    shard_bytes = 0
    shard_rows = 0
    writer: pq.ParquetWriter | None = None

    def flush() -> None:
        nonlocal buffer, buffer_bytes, writer
        if not buffer:
            return
        if writer is None:
            writer = _open_writer(data_dir / f".{spec.name}-{len(parts):05d}.part", spec.schema)
        table = pa.Table.from_pylist(buffer, schema=spec.schema)
        writer.write_table(table, row_group_size=len(buffer))
        buffer, buffer_bytes = [], 0

    def close_shard() -> None:
        nonlocal writer, shard_bytes, shard_rows
        flush()
        path = data_dir / f".{spec.name}-{len(parts):05d}.part"
        if writer is None:  # an empty config still gets one (empty) shard, so it stays loadable
            writer = _open_writer(path, spec.schema)
        writer.close()
        parts.append((path, shard_rows))
        writer, shard_bytes, shard_rows = None, 0, 0

    for row in rows:
        record = spec.to_record(row, blobs)
        size = record_bytes(record)
        if shard_rows and shard_bytes + size > max_shard_bytes:
            close_shard()
        if buffer and (len(buffer) >= ROW_GROUP_ROWS or buffer_bytes + size > group_budget):
            flush()
        buffer.append(record)
        buffer_bytes += size
        shard_bytes += size
        shard_rows += 1
        ids.append(record["id"])
    if shard_rows or not parts:
        close_shard()

    shards = []
    for index, (part, count) in enumerate(parts):
        final = data_dir / f"{spec.name}-{index:05d}-of-{len(parts):05d}.parquet"
        os.replace(part, final)
        shards.append(
            ShardFile(
                path=f"data/{final.name}",
                config=spec.name,
                rows=count,
                size=final.stat().st_size,
                sha256=file_sha256(final),
            )
        )
    return WrittenConfig(shards=shards, ids=ids)


def query_rows(connection: Any, sql: str, parameters: list[Any], batch_rows: int) -> Iterator[dict[str, Any]]:
    """Stream a query's rows as dicts, `batch_rows` at a time, on a cursor of its own."""
    cursor = connection.cursor()
    try:
        reader = cursor.sql(sql, params=parameters).to_arrow_reader(batch_rows)
        for batch in reader:
            yield from batch.to_pylist()
    finally:
        cursor.close()


def chunk_rows(total: int) -> int:
    return max(CHUNK_ROWS, -(-total // MAX_CHUNKS))


def ordered_rows(
    connection: Any, spec: ConfigSpec, parameters: list[Any], batch_rows: int = ROW_GROUP_ROWS
) -> Iterator[dict[str, Any]]:
    """`spec.query`'s rows in id order, fetched range by range so memory does not grow with the row
    count (see CHUNK_ROWS). The last range has no upper bound: rows added meanwhile are not lost."""
    cursor = connection.cursor()
    try:
        ids = [row[0] for row in cursor.execute(spec.ids_query, parameters).fetchall()]
    finally:
        cursor.close()
    if not ids:
        return
    size = chunk_rows(len(ids))
    previous: str | None = None
    for start in range(0, len(ids), size):
        last = ids[start + size - 1] if start + size < len(ids) else None
        bounds = [value for value in (previous, last) if value is not None]
        sql = spec.range_query(previous is not None, last is not None)
        yield from query_rows(connection, sql, [*parameters, *bounds], batch_rows)
        previous = last


@contextmanager
def duckdb_memory_limit(connection: Any, limit: str = EXPORT_MEMORY_LIMIT) -> Iterator[None]:
    """Cap DuckDB's memory (buffer pool and sorts, which spill to disk beyond it) for a block, when
    the current limit is higher; the previous setting is restored afterwards."""
    current = connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if _bytes(limit) >= _bytes(current):
        yield
        return
    connection.execute(f"SET memory_limit = '{limit}'").fetchall()
    try:
        yield
    finally:  # the default exactly when it was the default (the text form is rounded)
        connection.execute("RESET memory_limit").fetchall()
        if connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] != current:
            connection.execute(f"SET memory_limit = '{current}'").fetchall()


def _bytes(setting: str) -> float:
    """A DuckDB memory setting (`'256MB'`, `'12.4 GiB'`) in bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B|bytes|B|)\s*", setting)
    if not match:
        raise ValueError(f"not a DuckDB memory setting: {setting!r}")
    number, unit = float(match.group(1)), match.group(2)
    if unit.endswith("iB"):
        return number * 2 ** (10 * " KMGT".index(unit[0]))
    if unit in ("", "B", "bytes"):
        return number
    return number * 10 ** (3 * " KMGT".index(unit[0]))


def features_yaml(features: dict[str, Any]) -> list[dict[str, Any]]:
    """The `dataset_info.features` list of a dataset card for our feature dicts."""

    def one(name: str, feature: Any) -> dict[str, Any]:
        if isinstance(feature, list):
            (item,) = feature
            if item == _IMAGE:
                return {"name": name, "list": "image"}
            return {"name": name, "list": [one(key, value) for key, value in item.items()]}
        if feature == _IMAGE:
            return {"name": name, "dtype": "image"}
        return {"name": name, "dtype": feature["dtype"]}

    return [one(name, feature) for name, feature in features.items()]
