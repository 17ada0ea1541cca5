"""Version manifests: what a dataset version holds, where it came from, and what changed since its parent.

Pure functions over plain data; `export.py` does the I/O. A manifest never holds a timestamp, a path on
the exporting machine or a secret: the same warehouse and config give the same manifest bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "groundgen-manifest/1"
CONFIG_NAMES = ("sft", "rl")


@dataclass(frozen=True)
class ShardFile:
    """One file of an export, relative to the version folder (e.g. `data/sft-00000-of-00002.parquet`)."""

    path: str
    config: str  # "sft", "rl", or "" for README.md
    rows: int
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "config": self.config,
            "rows": self.rows,
            "size": self.size,
            "sha256": self.sha256,
        }


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def id_changes(parent_ids: list[str], ids: list[str]) -> dict[str, list[str]]:
    """Sorted ids added and removed relative to the parent's ids."""
    parent, current = set(parent_ids), set(ids)
    return {"added": sorted(current - parent), "removed": sorted(parent - current)}


def build_manifest(
    *,
    version: str,
    parent: str,
    curator: str,
    config_fingerprint: str,
    code_version: str,
    ids: dict[str, list[str]],
    parent_ids: dict[str, list[str]],
    files: list[ShardFile],
) -> dict[str, Any]:
    """The manifest of one version. `ids` and `parent_ids` map config name -> ids in that config."""
    return {
        "format": MANIFEST_FORMAT,
        "version": version,
        "parent": parent,
        "curator": curator,
        "config_fingerprint": config_fingerprint,
        "code_version": code_version,
        "counts": {name: len(ids.get(name, [])) for name in CONFIG_NAMES},
        "changes": {name: id_changes(parent_ids.get(name, []), ids.get(name, [])) for name in CONFIG_NAMES},
        "files": [shard.as_dict() for shard in sorted(files, key=lambda shard: shard.path)],
        "ids": {name: sorted(ids.get(name, [])) for name in CONFIG_NAMES},
    }


def dumps_manifest(manifest: dict[str, Any]) -> str:
    """Stable text form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def loads_manifest(text: str) -> dict[str, Any]:
    manifest = json.loads(text)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"not a groundgen manifest (format {manifest.get('format')!r})")
    return manifest


def manifest_ids(manifest_text: str) -> dict[str, list[str]]:
    """The ids per config of a stored manifest (empty when there is no manifest)."""
    if not manifest_text:
        return {name: [] for name in CONFIG_NAMES}
    ids = loads_manifest(manifest_text).get("ids", {})
    return {name: list(ids.get(name, [])) for name in CONFIG_NAMES}


def data_files(manifest: dict[str, Any]) -> list[ShardFile]:
    return [ShardFile(**entry) for entry in manifest["files"]]
