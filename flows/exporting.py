"""The export stage: a new dataset version when the curated samples changed, none otherwise."""

from __future__ import annotations

from flows.batches import StageCounts
from flows.progress import reporter
from flows.settings import code_version
from flows.workspace import Workspace
from schemas.config import Config
from schemas.rows import Version
from warehouse.blobs import BlobStore
from warehouse.export import export_version, previous_version
from warehouse.store import Warehouse


def export_if_changed(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    workspace = Workspace(config.workdir)
    reporter().start("export", 1)
    before = previous_version(warehouse)
    version = export_version(
        warehouse,
        BlobStore(workspace.blobs),
        workspace.exports,
        config,
        curator=config.curation_fingerprint(),
        code_version=code_version(),
    )
    reporter().finish("export")
    new = before is None or version.id != before.id
    return StageCounts(inputs=version.sft_rows + version.rl_rows, rows_written=int(new), batches=1)


def latest_version(warehouse: Warehouse) -> Version | None:
    return previous_version(warehouse)
