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
    timeout: float = 60.0,
) -> ReportResult:
    """Write the report of `version` (or `run`, or the latest version) and return what was written.

    While a run or refresh writes the warehouse (DuckDB lets no other process open it), the report is
    made from a consistent snapshot the running process hands over (`groundgen snapshot`'s path).
    Raises ReportError for an unknown version/run or a warehouse that cannot be read."""
    import dataclasses

    from warehouse.store import Warehouse

    workspace = Workspace(Path(config.workdir))
    if not workspace.database.exists():
        raise ReportError(
            f"no warehouse at {workspace.database}; run `groundgen run` first (or pass --workdir)"
        )
    database, note = _readable_database(workspace, timeout)
    try:
        with Warehouse(database, read_only=True) as warehouse:
            scope = resolve_scope(warehouse, version=version, run=run)
            if note:
                scope = dataclasses.replace(scope, notes=(*scope.notes, note))
            target = output or default_report_path(workspace.root, version, run)
            result = write_report(
                warehouse,
                BlobStore(workspace.blobs),
                scope,
                target,
                max_attempts=config.max_attempts,
                targets={"sft": config.sizes.sft, "rl": config.sizes.rl},
            )
    finally:
        if database != workspace.database:
            database.unlink(missing_ok=True)
    if open_browser:
        webbrowser.open(result.path.resolve().as_uri())
    return result


def _readable_database(workspace: Workspace, timeout: float) -> tuple[Path, str]:
    """The warehouse file, or a snapshot of it when a writer holds it; and a note saying which."""
    import duckdb

    try:
        duckdb.connect(str(workspace.database), read_only=True).close()
        return workspace.database, ""
    except duckdb.Error as error:
        if "lock" not in str(error).lower():
            raise ReportError(f"cannot open {workspace.database} read-only: {error}") from error
    from flows.live_status import take_snapshot
    from warehouse.query import QueryError

    snapshot = workspace.cache / "report-snapshot.duckdb"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.unlink(missing_ok=True)
    try:
        take_snapshot(workspace.database, snapshot, timeout=timeout)
    except QueryError as error:
        raise ReportError(
            f"the warehouse is being written and no snapshot could be taken: {error}"
        ) from error
    return (
        snapshot,
        "a run was writing the warehouse: this report shows a snapshot of its last finished batch",
    )


def describe(result: ReportResult) -> str:
    lines = [
        f"report: {result.path} ({result.samples} samples, {result.thumbnails} thumbnails in "
        f"{result.assets.name}/, {result.total_bytes() / 1e6:.1f} MB, {result.seconds:.1f} s)"
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


__all__ = ["GroundgenError", "ReportError", "default_report_path", "describe", "make_report"]
