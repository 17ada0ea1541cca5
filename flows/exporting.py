"""The export stage: a new dataset version when the curated samples changed, none otherwise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flows.ledger import close_dead_runs
from flows.live_status import serve_readers
from flows.progress import reporter
from flows.results import StageCounts
from flows.settings import code_version
from flows.worklock import work_lock
from flows.workspace import Workspace
from schemas.config import Config
from schemas.errors import GroundgenError
from schemas.rows import Version
from warehouse.blobs import BlobStore
from warehouse.export import export_version, latest_version, version_folder
from warehouse.store import Warehouse

if TYPE_CHECKING:
    from warehouse.hub import PushProgress


def export_current(warehouse: Warehouse, config: Config, version: str | None = None) -> tuple[Version, bool]:
    """Export this config's curated samples; (the version, whether it is new). Unchanged data gives
    back the latest version (see `warehouse.export.export_version`)."""
    workspace = Workspace(config.workdir)
    before = latest_version(warehouse)
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
    kept = warehouse.count("samples", "curator = ? AND status = 'kept'", [config.curation_fingerprint()])
    if kept == 0:  # an empty version is no version: say why instead
        reporter().finish("export")
        return StageCounts(note=NOTHING_KEPT)
    version, new = export_current(warehouse, config)
    reporter().finish("export")
    return export_stage_counts(version, new)


NOTHING_KEPT = (
    "no dataset version: no sample was kept (failed or dropped rows: groundgen status; "
    'drop reasons: groundgen sql "select * from funnel")'
)


def existing_version_folder(workdir: Path, row: Version) -> Path:
    """The folder of version `row` in this work directory; a missing one is an error, not 0 rows."""
    folder = version_folder(workdir, row)
    if not (folder / "manifest.json").is_file():
        raise GroundgenError(
            f"the files of version {row.id} are missing: {folder} has no manifest.json (a work directory "
            "is copied or moved whole: warehouse.duckdb, blobs/ and exports/ together)"
        )
    return folder


def _version_row(warehouse: Warehouse, name: str | None) -> Version:
    if name is None:
        version = latest_version(warehouse)
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


def write_training_format(
    config: Config,
    version_dir,
    target,
    output_format: str,
    *,
    absolute_paths: bool = False,
    test_ratio: float | None = None,
    facts: dict[str, list[str]] | None = None,
):
    """One training format folder from a version folder (see `warehouse/formats.py`)."""
    from synthesis.agent_protocol import TOOL_SCHEMAS, opening_messages
    from warehouse.formats import export_llamafactory, export_rllm
    from warehouse.verl_format import DEFAULT_TEST_RATIO, export_verl

    if output_format == "llamafactory":
        return export_llamafactory(version_dir, target, absolute_paths=absolute_paths)
    if output_format == "rllm":
        return export_rllm(version_dir, target, absolute_paths=absolute_paths)
    if output_format == "verl":
        return export_verl(
            version_dir,
            target,
            system_prompt=opening_messages("", config.teacher)[0].content,
            tool_schemas=TOOL_SCHEMAS,
            facts=facts,
            test_ratio=DEFAULT_TEST_RATIO if test_ratio is None else test_ratio,
            absolute_paths=absolute_paths,
        )
    raise ValueError(f"unknown training format {output_format!r}")


def export_now(
    config: Config,
    *,
    version: str | None,
    output_format: str,
    output=None,
    absolute_paths: bool = False,
    test_ratio: float | None = None,
) -> str:
    """`groundgen export`: a new version when the data changed, then the training format if asked."""
    from warehouse.verl_format import required_facts  # with the formats: only `export` loads them

    workspace = Workspace(config.workdir)
    facts = None
    with (
        work_lock(workspace.root, "export"),
        Warehouse(workspace.database) as warehouse,
        serve_readers(warehouse, workspace.root),  # `groundgen sql` answers meanwhile
    ):
        close_dead_runs(warehouse, lock_held=True)
        if not warehouse.count("samples", "curator = ? AND status = 'kept'", [config.curation_fingerprint()]):
            raise GroundgenError(NOTHING_KEPT)  # an empty version is no version
        row, new = export_current(warehouse, config, version)
        if output_format == "verl":
            facts = required_facts(warehouse)
    lines = [
        f"{'exported' if new else 'unchanged since'} {row.id}: {row.sft_rows} SFT rows, {row.rl_rows} RL rows "
        f"-> {version_folder(workspace.root, row)}"
    ]
    if output_format != "hf":
        version_dir = existing_version_folder(workspace.root, row)
        target = Path(output) if output else workspace.exports / f"{row.id}-{output_format}"
        report = write_training_format(
            config,
            version_dir,
            target,
            output_format,
            absolute_paths=absolute_paths,
            test_ratio=test_ratio,
            facts=facts,
        )
        if report.rows == 0:
            raise GroundgenError(
                f"{output_format}: version {row.id} has no rows for this format ({row.sft_rows} SFT, "
                f"{row.rl_rows} RL rows); nothing useful was written to {report.path}"
            )
        lines.append(report.summary(output_format))
    return "\n".join(lines)


def push_now(
    config: Config,
    repo: str,
    *,
    version: str | None,
    private: bool,
    dry_run: bool,
    on_progress: Callable[[PushProgress], None] | None = None,
) -> str:
    """`groundgen push`: one version folder to the Hub (endpoint and token from the environment)."""

    from warehouse.hub import push_version

    workspace = Workspace(config.workdir)
    with Warehouse(workspace.database, read_only=True) as warehouse:
        row = _version_row(warehouse, version)
    report = push_version(
        existing_version_folder(workspace.root, row),
        repo,
        private=private,
        dry_run=dry_run,
        hub=config.hub,
        on_progress=on_progress,
    )
    if report.dry_run:
        return f"dry run: would push {row.id} to {report.endpoint}/datasets/{repo}: {len(report.files)} files, {report.bytes} bytes"
    if report.already_tagged:
        return f"{repo} already has {row.id} (tag {row.id}); nothing changed"
    return (
        f"pushed {row.id} to {report.endpoint}/datasets/{repo} @ {report.commit[:12]} "
        f"({len(report.files)} files, {report.bytes} bytes through {report.transfer}; tag {row.id})"
    )
