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


def export_current(warehouse: Warehouse, config: Config, version: str | None = None) -> tuple[Version, bool]:
    """Export this config's curated samples; (the version, whether it is new). Unchanged data gives
    back the latest version (see `warehouse.export.export_version`)."""
    workspace = Workspace(config.workdir)
    before = previous_version(warehouse)
    row = export_version(
        warehouse,
        BlobStore(workspace.blobs),
        workspace.exports,
        config,
        curator=config.curation_fingerprint(),
        code_version=code_version(),
        version=version,
    )
    return row, before is None or row.id != before.id


def export_stage_counts(version: Version, new: bool) -> StageCounts:
    return StageCounts(inputs=version.sft_rows + version.rl_rows, rows_written=int(new), batches=1)


def export_if_changed(warehouse: Warehouse, config: Config, run_id: str) -> StageCounts:
    reporter().start("export", 1)
    version, new = export_current(warehouse, config)
    reporter().finish("export")
    return export_stage_counts(version, new)


def _version_row(warehouse: Warehouse, name: str | None) -> Version:
    from schemas.errors import GroundgenError

    if name is None:
        version = previous_version(warehouse)
        if version is None:
            raise GroundgenError(
                "there is no dataset version yet: run `groundgen export` (or `groundgen run`) first"
            )
        return version
    rows = warehouse.rows(Version, "id = ?", [name])
    if not rows:
        known = ", ".join(sorted(warehouse.ids(Version))) or "none"
        raise GroundgenError(f"version {name} does not exist (versions: {known})")
    return rows[0]


def export_now(config: Config, *, version: str | None, output_format: str, output=None) -> str:
    """`groundgen export`: a new version when the data changed, then the training format if asked."""
    from pathlib import Path

    from flows.worklock import work_lock
    from warehouse.formats import export_llamafactory, export_rllm

    workspace = Workspace(config.workdir)
    with work_lock(workspace.root, "export"), Warehouse(workspace.database) as warehouse:
        row, new = export_current(warehouse, config, version)
    lines = [
        f"{'exported' if new else 'unchanged since'} {row.id}: {row.sft_rows} SFT rows, {row.rl_rows} RL rows -> {row.path}"
    ]
    if output_format != "hf":
        target = Path(output) if output else workspace.exports / f"{row.id}-{output_format}"
        writer = export_llamafactory if output_format == "llamafactory" else export_rllm
        report = writer(row.path, target)
        lines.append(f"{output_format}: {report.rows} rows -> {report.path}")
    return "\n".join(lines)


def push_now(config: Config, repo: str, *, version: str | None, private: bool, dry_run: bool) -> str:
    """`groundgen push`: one version folder to the Hub (endpoint and token from the environment)."""
    from pathlib import Path

    from warehouse.hub import push_version

    workspace = Workspace(config.workdir)
    with Warehouse(workspace.database, read_only=True) as warehouse:
        row = _version_row(warehouse, version)
    report = push_version(Path(row.path), repo, private=private, dry_run=dry_run, hub=config.hub)
    if report.dry_run:
        return f"dry run: would push {row.id} to {report.endpoint}/datasets/{repo}: {len(report.files)} files, {report.bytes} bytes"
    if report.already_tagged:
        return f"{repo} already has {row.id} (tag {row.id}); nothing changed"
    return (
        f"pushed {row.id} to {report.endpoint}/datasets/{repo} @ {report.commit[:12]} "
        f"({len(report.files)} files, {report.bytes} bytes; tag {row.id})"
    )
