"""The body of `groundgen report`: pick the scope, write the page, say where it is."""

from __future__ import annotations

import re
import webbrowser
from pathlib import Path

from flows.workspace import Workspace
from schemas.config import Config
from schemas.errors import GroundgenError
from warehouse.blobs import BlobStore
from warehouse.report import ReportResult, write_report
from warehouse.report_data import ReportError, resolve_scope


def default_report_path(workdir: Path, version: str | None = None, run: str | None = None) -> Path:
    """`<workdir>/reports/report-<version | run-ID | latest>.html`."""
    slug = version or (f"run-{run}" if run else "latest")
    return Path(workdir) / "reports" / f"report-{re.sub(r'[^A-Za-z0-9_.-]', '_', slug)}.html"


def make_report(
    config: Config,
    *,
    version: str | None = None,
    run: str | None = None,
    output: Path | None = None,
    open_browser: bool = False,
) -> ReportResult:
    """Write the report of `version` (or `run`, or the latest version) and return what was written.

    Raises ReportError for an unknown version/run or a warehouse that cannot be opened."""
    import duckdb

    from warehouse.store import Warehouse

    workspace = Workspace(Path(config.workdir))
    if not workspace.database.exists():
        raise ReportError(
            f"no warehouse at {workspace.database}; run `groundgen run` first (or pass --workdir)"
        )
    try:
        warehouse = Warehouse(workspace.database, read_only=True)
    except duckdb.Error as error:
        raise ReportError(
            f"cannot open {workspace.database} read-only: {error}. A running `groundgen run` holds the "
            "write lock; wait for it to finish."
        ) from error
    with warehouse:
        scope = resolve_scope(warehouse, version=version, run=run)
        target = output or default_report_path(workspace.root, version, run)
        result = write_report(
            warehouse, BlobStore(workspace.blobs), scope, target, max_attempts=config.max_attempts
        )
    if open_browser:
        webbrowser.open(result.path.resolve().as_uri())
    return result


def describe(result: ReportResult) -> str:
    lines = [
        f"report: {result.path} ({result.samples} samples, {result.thumbnails} thumbnails in "
        f"{result.assets.name}/, {result.total_bytes() / 1e6:.1f} MB, {result.seconds:.1f} s)"
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


__all__ = ["GroundgenError", "ReportError", "default_report_path", "describe", "make_report"]
