"""Where a run keeps its files: one work directory holds the warehouse, blobs, exports and caches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def create(self) -> Workspace:
        for folder in (self.root, self.blobs, self.exports, self.models, self.cache):
            folder.mkdir(parents=True, exist_ok=True)
        return self
