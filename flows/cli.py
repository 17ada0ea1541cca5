"""The `groundgen` command line: a thin layer over the flows and the warehouse."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.workspace import Workspace
from schemas.config import Config, ConfigError, load_config, resolve_workdir

app = typer.Typer(
    help=(
        "groundgen regenerates the training data of a search-augmented image-generation agent "
        "(Gen-Searcher recipe): SFT search trajectories and RL prompts with ground-truth images.\n\n"
        'Example: groundgen run --sft 40 --rl 24 && groundgen sql "select count(*) from sft_rows"'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (see examples/); omitted = the offline default."),
]
WorkdirOption = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        "-w",
        help="Work directory (warehouse, blobs, exports); default: the config's, groundgen-data.",
    ),
]

TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", help="Seconds to wait for a busy warehouse and for the query (e.g. --timeout 60).", min=1
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def resolve_config(config_path: Path | None, workdir: Path | None, **overrides: object) -> Config:
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise fail(str(error)) from error
    updates: dict[str, object] = {"workdir": resolve_workdir(workdir, config)}
    sizes = {key: value for key, value in overrides.items() if key in ("sft", "rl") and value is not None}
    if sizes:
        updates["sizes"] = config.sizes.model_copy(update=sizes)
    if overrides.get("runner"):
        updates["runner"] = overrides["runner"]
    if overrides.get("batch_size"):
        updates["batch_size"] = overrides["batch_size"]
    from pydantic import ValidationError

    from schemas.config import describe_validation_error

    try:
        return Config.model_validate({**config.model_dump(), **updates})
    except ValidationError as error:
        raise fail(describe_validation_error(error)) from error


def preflight_or_exit(config: Config, *, include_hub: bool = False, stages: list[str] | None = None) -> None:
    """The `groundgen check` checks (for `stages`, None = all); each problem is one line, then exit 2
    before any work."""
    from flows.preflight import preflight

    problems = preflight(config, include_hub=include_hub, stages=stages)
    for problem in problems:
        typer.secho(f"Error: {problem}", err=True, fg=typer.colors.RED)
    if problems:
        raise typer.Exit(2)


@app.command()
def run(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    sft: Annotated[int | None, typer.Option(help="SFT rows wanted (default 10000).", min=0)] = None,
    rl: Annotated[int | None, typer.Option(help="RL rows wanted (default 6000).", min=0)] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            "-s",
            help="Run only this stage (repeatable): topics, prompts, trajectories, images, judgements, samples, export.",
        ),
    ] = None,
    runner: Annotated[
        str | None, typer.Option(help="Task runner: threads (default), ray, or ray:ADDRESS.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per task.", min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Regenerate the datasets (or some stages). Resumable: rerun after a crash to finish.

    Example: groundgen run --sft 40 --rl 24
    """
    from flows.stages import STAGE_NAMES

    config = resolve_config(config_path, workdir, sft=sft, rl=rl, runner=runner, batch_size=batch_size)
    unknown = sorted(set(stage or []) - set(STAGE_NAMES))
    if unknown:
        raise fail(f"unknown stage {', '.join(unknown)}; choose from {', '.join(STAGE_NAMES)}")
    from flows.run_outcome import stage_problems
    from flows.runner import run_regenerate
    from schemas.errors import GroundgenError

    preflight_or_exit(config, stages=stage or None)
    try:
        result = run_regenerate(config, stages=stage, show_progress=not quiet)
    except GroundgenError as error:  # the work dir is locked, a backend cannot be built, ...
        raise fail(str(error)) from error
    _print_run_summary(config, result)
    problems = stage_problems(result["counts"])
    for problem in problems:
        typer.secho(f"Error: {problem}", err=True, fg=typer.colors.RED)
    if problems:
        raise typer.Exit(1)


def _print_run_summary(config: Config, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from warehouse.query import stage_rows

    table = Table(title=f"run {result['run_id']}", show_edge=False)
    for column in ("stage", "inputs", "new rows", "failures", "seconds", "also written"):
        table.add_column(column, justify="left" if column in ("stage", "also written") else "right")
    for stage, counts in result["counts"].items():
        tables = counts.get("tables", {})
        own = stage_rows(stage, counts)
        others = ", ".join(
            f"{rows} {name}" for name, rows in sorted(tables.items()) if name != stage and rows
        )
        table.add_row(
            stage,
            str(counts["inputs"]),
            str(own),
            str(counts["failures"]),
            f"{counts['seconds']:.1f}",
            others,
        )
    console = Console()
    console.print(table)
    version = result.get("version")
    if version:
        console.print(
            f"dataset version {version['id']}: {version['sft_rows']} SFT rows, {version['rl_rows']} RL rows "
            f"-> {version['path']}"
        )
    else:
        from flows.run_outcome import no_version_reason

        console.print(no_version_reason(result["counts"]))
    if "images" in result["counts"]:
        from flows.painter_summary import truncation_note

        note = truncation_note(Workspace(config.workdir).database, config.painter_fingerprint())
        if note:
            console.print(note)
    console.print(f"warehouse: {Workspace(config.workdir).database}")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help='A DuckDB SQL query, e.g. "select * from funnel".')],
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    output_format: Annotated[
        str,
        typer.Option("--format", "-f", help="table (default), csv, json (one object per line) or parquet."),
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (parquet needs it).")
    ] = None,
    timeout: TimeoutOption = 30.0,
) -> None:
    """Run a SQL query against the warehouse (read-only), also while a run or refresh writes it.

    Tables: topics, prompts, trajectories, images, judgements, samples, failures, runs, versions.
    Views: sft_rows, rl_rows, funnel. During a run the running process answers (every finished batch).

    Example: groundgen sql "select category, count(*) from sft_rows group by 1 order by 2 desc"
    """
    from warehouse.query import QueryError, format_result, run_query, work_lock_holder

    config = resolve_config(config_path, workdir)
    database = Workspace(config.workdir).database
    if not database.exists() and not work_lock_holder(database.parent):  # a starting run: wait for it
        raise fail(f"no warehouse at {database}; run `groundgen run` first (or pass --workdir)")
    if output_format not in ("table", "csv", "json", "parquet"):
        raise fail(f"unknown format {output_format!r}; choose table, csv, json or parquet")
    try:
        table = run_query(database, query, timeout=timeout)
    except QueryError as error:
        raise fail(str(error)) from error
    if output_format == "parquet" and output is None:
        raise fail("--format parquet needs --output FILE")
    format_result(table, output_format, output, sys.stdout)


@app.command()
def status(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Live view, redrawn every --interval seconds until Ctrl-C: rows per stage, failures, rows "
            "waiting on retries, spend so far, rate and ETA per stage (e.g. groundgen status --watch).",
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", help="Seconds between redraws of --watch (e.g. --interval 5).", min=0.5),
    ] = 2.0,
    timeout: TimeoutOption = 30.0,
) -> None:
    """Show the funnel (rows per stage and outcome), failures, recent runs, versions and the grounding
    scores of each version's rows; works during a run.

    Example: groundgen status --workdir groundgen-data --watch
    """
    from warehouse.query import QueryError, status_tables, work_lock_holder

    config = resolve_config(config_path, workdir)
    database = Workspace(config.workdir).database
    if not database.exists() and not work_lock_holder(database.parent):  # a starting run: wait for it
        raise fail(f"no warehouse at {database}; run `groundgen run` first (or pass --workdir)")
    from rich.console import Console

    if watch:
        from flows.live_status import watch as watch_live

        watch_live(database, max_attempts=config.max_attempts, interval=interval, timeout=timeout)
        return
    from flows.ledger import close_dead_runs_in
    from schemas.errors import GroundgenError

    try:
        close_dead_runs_in(database)  # runs whose process died show as killed, not running
    except GroundgenError as error:  # an older warehouse this groundgen cannot migrate
        raise fail(str(error)) from error
    try:
        tables = status_tables(database, timeout=timeout)
    except QueryError as error:
        raise fail(str(error)) from error
    console = Console()
    for table in tables:
        console.print(table)
    from flows.retry import failed_rows_table

    try:
        console.print(failed_rows_table(database, config.max_attempts))
    except QueryError as error:
        raise fail(str(error)) from error
    _print_schedules(console, database)
    console.print(
        f"report: groundgen report -w {config.workdir} --open (funnel, costs, sample gallery as one HTML page)"
    )


@app.command()
def snapshot(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the copy (default: <workdir>/snapshot.duckdb)."),
    ] = None,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Write a consistent copy of the warehouse that any DuckDB client can open, also during a run.

    Example: groundgen snapshot -o copy.duckdb && duckdb copy.duckdb -readonly
    """
    from flows.live_status import take_snapshot
    from warehouse.query import QueryError

    config = resolve_config(config_path, workdir)
    database = Workspace(config.workdir).database
    if not database.exists():
        raise fail(f"no warehouse at {database}; run `groundgen run` first (or pass --workdir)")
    target = output or Path(config.workdir) / "snapshot.duckdb"
    try:
        typer.echo(take_snapshot(database, target, timeout=timeout))
    except QueryError as error:
        raise fail(str(error)) from error


@app.command()
def check(config_path: ConfigOption = None, workdir: WorkdirOption = None) -> None:
    """Check the config's backends before any paid call: endpoints answer, keys are set and accepted,
    model ids exist, the search provider answers, the painter's model resolves, the Hub token can write
    hub.repo. One line per problem; exit 2 if any. `run` and `refresh` run the same checks (not the Hub).

    Example: groundgen check --config examples/openai-compatible.toml
    """
    config = resolve_config(config_path, workdir)
    preflight_or_exit(config, include_hub=True)
    typer.echo("check passed: every configured backend answers")


@app.command()
def retry(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    stage: Annotated[
        str | None,
        typer.Option(
            "--stage", "-s", help="Only this stage's failed rows (prompts, trajectories, images, judgements)."
        ),
    ] = None,
    error_class: Annotated[
        str | None, typer.Option("--error-class", help="Only failures of this class, e.g. ModelOutputError.")
    ] = None,
) -> None:
    """Re-queue failed rows (also those given up after max_attempts); the next `groundgen run` redoes them.

    Failures stay in the failures table as history (marked requeued_at) and no longer count.

    Example: groundgen retry --stage trajectories --error-class ModelOutputError && groundgen run
    """
    from flows.retry import requeue_now
    from schemas.errors import GroundgenError

    config = resolve_config(config_path, workdir)
    if not Workspace(config.workdir).database.exists():
        raise fail(f"no warehouse at {Workspace(config.workdir).database}; nothing to retry")
    try:
        report = requeue_now(Path(config.workdir), stage, error_class)
    except GroundgenError as error:
        raise fail(str(error)) from error
    typer.echo(report.message())


def _refresh_versions(database: Path) -> dict[str, str]:
    """runs.id -> the version a refresh exported ("" when it exported none)."""
    import json

    from warehouse.query import run_query

    rows = run_query(database, "SELECT id, counts_json FROM runs WHERE command = 'refresh'").to_pylist()
    return {
        row["id"]: (json.loads(row["counts_json"] or "{}").get("refresh", {}).get("version") or "")
        for row in rows
    }


def _print_schedules(console, database: Path) -> None:
    """Schedules and recent refresh flow runs, when a Prefect server is configured (PREFECT_API_URL)."""
    import os

    from rich.table import Table

    if not os.environ.get("PREFECT_API_URL"):
        console.print("schedules: no Prefect server configured (set PREFECT_API_URL to see them)")
        return
    from flows.schedule import prefect_status, run_key

    try:
        found = prefect_status()
    except Exception as error:  # noqa: BLE001 - status must still show the warehouse
        console.print(f"schedules: Prefect server at {os.environ['PREFECT_API_URL']} not reachable ({error})")
        return
    schedules = Table(title="schedules", show_edge=False)
    for column in ("deployment", "schedule", "active"):
        schedules.add_column(column)
    for row in found["schedules"]:
        schedules.add_row(row["deployment"], row["schedule"], row["active"])
    console.print(schedules)
    versions = _refresh_versions(database)
    runs = Table(title="recent refresh flow runs", show_edge=False)
    for column in ("flow run", "state", "started", "version"):
        runs.add_column(column)
    for row in found["flow_runs"]:
        runs.add_row(row["name"], row["state"], row["started"], versions.get(run_key(row["id"]), ""))
    console.print(runs)


@app.command()
def refresh(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    topics: Annotated[int, typer.Option("--topics", help="At most this many new topics.", min=0)] = 100,
    min_new: Annotated[
        int,
        typer.Option("--min-new", help="Export a version only when this many new samples were kept.", min=1),
    ] = 1,
    runner: Annotated[
        str | None, typer.Option(help="Task runner: threads (default), ray, or ray:ADDRESS.")
    ] = None,
) -> None:
    """Mine only topics new since the last refresh, run them through every stage, export if enough are new.

    Each split's quota grows by the new topics' share; the new version's manifest lists exactly the
    newly kept samples as added. A refresh with nothing new exports nothing and says so.

    Example: groundgen refresh --topics 50 --min-new 10
    """
    from flows.refresh import run_refresh
    from schemas.errors import GroundgenError

    config = resolve_config(config_path, workdir, runner=runner)
    preflight_or_exit(config)
    try:
        result = run_refresh(config, max_topics=topics, min_new=min_new)
    except GroundgenError as error:
        raise fail(str(error)) from error
    typer.echo(result["message"])
    from flows.run_outcome import stage_problems

    problems = stage_problems(result["counts"])
    for problem in problems:
        typer.secho(f"Error: {problem}", err=True, fg=typer.colors.RED)
    if problems:
        raise typer.Exit(1)


@app.command()
def schedule(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    cron: Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 3 * * 1".')] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between refreshes.", min=1)] = None,
    topics: Annotated[
        int, typer.Option("--topics", help="At most this many new topics per refresh.", min=0)
    ] = 100,
    min_new: Annotated[
        int, typer.Option("--min-new", help="Export only when this many new samples were kept.", min=1)
    ] = 1,
) -> None:
    """Serve scheduled refreshes from the Prefect server at PREFECT_API_URL (runs until stopped).

    Start the server first: prefect server start; then export PREFECT_API_URL=http://127.0.0.1:4200/api.

    Example: groundgen schedule --cron "0 3 * * 1" --topics 200
    """
    from flows.schedule import serve_refresh
    from schemas.errors import GroundgenError

    config = resolve_config(config_path, workdir)
    try:
        serve_refresh(config, cron=cron, interval=interval, max_topics=topics, min_new=min_new)
    except GroundgenError as error:
        raise fail(str(error)) from error


@app.command()
def export(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    version: Annotated[
        str | None, typer.Option(help="Version name (default: next vN, or export.semver).")
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="hf (Parquet shards + card + manifest, default), llamafactory (SFT as ShareGPT JSON + images), "
            "rllm (RL rows: id, prompt, gt_image paths) or verl (RL Parquet for verl's RLHFDataset + tool "
            "config). The last three also write the hf version they come from.",
        ),
    ] = "hf",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for llamafactory/rllm/verl files (default: exports/<v>-<format>).",
        ),
    ] = None,
    absolute: Annotated[
        bool,
        typer.Option(
            "--absolute",
            help="Write absolute image paths in llamafactory/rllm/verl files (default: relative to the "
            "format folder, which then loads wherever it is copied).",
        ),
    ] = False,
    test_ratio: Annotated[
        float | None,
        typer.Option(
            "--test-ratio",
            min=0.0,
            max=1.0,
            help="verl: share of RL rows in test.parquet, chosen by a hash of the id (default 0.05).",
        ),
    ] = None,
) -> None:
    """Export the curated samples as a dataset version (exports/<version>/), if they changed.

    Prints rows written and rows skipped (with reasons) for a training format.

    Example: groundgen export --format verl --test-ratio 0.1
    """
    if output_format not in ("hf", "llamafactory", "rllm", "verl"):
        raise fail(f"unknown format {output_format!r}; choose hf, llamafactory, rllm or verl")
    from flows.exporting import export_now

    config = resolve_config(config_path, workdir)
    workspace = Workspace(config.workdir)
    if not workspace.database.exists():
        raise fail(f"no warehouse at {workspace.database}; run `groundgen run` first (or pass --workdir)")
    from schemas.errors import GroundgenError

    try:
        result = export_now(
            config,
            version=version,
            output_format=output_format,
            output=output,
            absolute_paths=absolute,
            test_ratio=test_ratio,
        )
    except GroundgenError as error:
        raise fail(str(error)) from error
    typer.echo(result)


@app.command()
def push(
    repo: Annotated[
        str, typer.Option(help="Hub dataset repo, ORG/NAME (default: the config's hub.repo).")
    ] = "",
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    version: Annotated[str | None, typer.Option(help="Version to push (default: the latest).")] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and list what would be pushed; no network.")
    ] = False,
) -> None:
    """Push a dataset version to the Hugging Face Hub (endpoint and token from HF_ENDPOINT / HF_TOKEN).

    One commit and one tag per version; pushing a version already on the Hub changes nothing, and an
    interrupted push completes when run again, uploading only the files the Hub does not store yet.
    Large files go through the Hub's LFS (or Xet, with hf_xet installed) upload, with a progress bar
    in bytes and bytes/s.

    Example: HF_TOKEN=hf_... groundgen push --repo my-org/gen-searcher-data --version v1
    """
    from flows.exporting import push_now
    from schemas.errors import GroundgenError

    config = resolve_config(config_path, workdir)
    repo = repo or config.hub.repo
    if not repo or "/" not in repo:
        raise fail("name the Hub repo as ORG/NAME with --repo (or hub.repo in the config)")
    from contextlib import nullcontext

    from flows.push_progress import push_progress_bar

    try:
        with nullcontext(None) if dry_run else push_progress_bar() as on_progress:
            report = push_now(
                config,
                repo,
                version=version,
                private=private or config.hub.private,
                dry_run=dry_run,
                on_progress=on_progress,
            )
    except GroundgenError as error:
        raise fail(str(error)) from error
    typer.echo(report)


@app.command()
def report(
    config_path: ConfigOption = None,
    workdir: WorkdirOption = None,
    version: Annotated[
        str | None, typer.Option(help="Report this dataset version (default: the latest), e.g. --version v2.")
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(
            help="Report one run's costs, seconds and failures (a run id or its prefix), e.g. --run 4e16."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="HTML file to write (default: <workdir>/reports/report-<version>.html)."
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
) -> None:
    """Write one HTML page: funnel, failures, balance, costs, version diff and a sample gallery.

    Readable from disk with no server and no network; thumbnails and trajectories sit in a folder beside it.

    Example: groundgen report --version v2 --open
    """
    from flows.report_command import ReportError, describe, make_report

    config = resolve_config(config_path, workdir)
    try:
        result = make_report(config, version=version, run=run, output=output, open_browser=open_browser)
    except ReportError as error:
        raise fail(str(error)) from error
    typer.echo(describe(result))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
