"""What `groundgen report` shows, as pure queries over a Warehouse (no rendering, no files).

Every function takes the warehouse (and a `ReportScope` where rows depend on it) and returns plain
data. Queries are defensive: tables and columns other parts of groundgen add later (an `evidence`
table with a grounding score, a failure `kind`) are used when present and reported missing otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from schemas import errors as error_types
from schemas.errors import GroundgenError
from schemas.rows import Run, Version
from warehouse.manifest import CONFIG_NAMES, loads_manifest
from warehouse.store import Warehouse

ModelT = TypeVar("ModelT", bound=BaseModel)


class ReportError(GroundgenError):
    """The report cannot be made as asked (unknown version or run)."""


@dataclass(frozen=True)
class ReportScope:
    """Which rows the report covers: a version's rows (and its curator's dropped rows), or all."""

    label: str
    version: Version | None = None
    run: Run | None = None
    kept_ids: tuple[str, ...] | None = None  # None: every kept sample in the warehouse
    curator: str | None = None  # dropped rows of this curator; None: every dropped row
    notes: tuple[str, ...] = ()

    def samples_where(self, alias: str = "s") -> tuple[str, list[Any]]:
        """A SQL condition on `samples AS alias` selecting the scope's rows, and its parameters."""
        if self.kept_ids is None:
            return "TRUE", []
        dropped = f"{alias}.status = 'dropped'" + (f" AND {alias}.curator = ?" if self.curator else "")
        parameters: list[Any] = [list(self.kept_ids)]
        if self.curator:
            parameters.append(self.curator)
        return (
            f"(({alias}.status = 'kept' AND {alias}.id IN (SELECT unnest(?::VARCHAR[]))) OR ({dropped}))",
            parameters,
        )


def records(warehouse: Warehouse, sql: str, parameters: list[Any] | None = None) -> list[dict[str, Any]]:
    return warehouse.query(sql, parameters or []).to_pylist()


def table_columns(warehouse: Warehouse) -> dict[str, set[str]]:
    """{table or view name: its column names} in the main schema."""
    rows = records(
        warehouse,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'",
    )
    columns: dict[str, set[str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], set()).add(row["column_name"])
    return columns


# --- scope ----------------------------------------------------------------------------------------


def _model_rows(warehouse: Warehouse, model: type[ModelT], table: str, order_by: str) -> list[ModelT]:
    """Rows as `model`, reading only the columns both have (a warehouse from an older or newer
    groundgen may lack or add columns)."""
    names = table_columns(warehouse).get(table, set()) & set(model.model_fields)
    if not names:
        return []
    columns = ", ".join(f'"{name}"' for name in sorted(names))
    return [
        model.model_validate(row)
        for row in records(warehouse, f"SELECT {columns} FROM {table} ORDER BY {order_by}")
    ]


def _versions(warehouse: Warehouse) -> list[Version]:
    return _model_rows(warehouse, Version, "versions", "created_at, id")


def version_scope(version: Version) -> ReportScope:
    notes: list[str] = []
    if not version.manifest_json:
        return ReportScope(f"version {version.id}", version=version, notes=("the version has no manifest",))
    manifest = loads_manifest(version.manifest_json)
    ids = manifest.get("ids", {})
    kept = tuple(sorted({row_id for name in CONFIG_NAMES for row_id in ids.get(name, [])}))
    if not kept:
        notes.append(f"version {version.id} holds no rows")
    return ReportScope(
        f"version {version.id}",
        version=version,
        kept_ids=kept,
        curator=manifest.get("curator") or None,
        notes=tuple(notes),
    )


def resolve_scope(warehouse: Warehouse, *, version: str | None = None, run: str | None = None) -> ReportScope:
    """The scope for `--version` / `--run`; with neither, the latest version (or every row)."""
    if version and run:
        raise ReportError("give --version or --run, not both")
    versions = _versions(warehouse)
    if version:
        found = [row for row in versions if row.id == version]
        if not found:
            known = ", ".join(row.id for row in versions) or "none exported yet"
            raise ReportError(f"no version {version!r} in the warehouse (versions: {known})")
        return version_scope(found[0])
    if run:
        runs = [
            row for row in _model_rows(warehouse, Run, "runs", "started_at, id") if row.id.startswith(run)
        ]
        if len(runs) != 1:
            raise ReportError(
                f"no run {run!r} in the warehouse"
                if not runs
                else f"run {run!r} is ambiguous ({len(runs)} runs)"
            )
        return ReportScope(
            f"run {runs[0].id}",
            run=runs[0],
            notes=(
                "rows carry no run id: samples, images and the funnel cover the whole warehouse; "
                "costs, seconds and failures are this run's",
            ),
        )
    if versions:
        return version_scope(versions[-1])
    return ReportScope("whole warehouse", notes=("no dataset version exported yet: showing every sample",))


# --- funnel and failures --------------------------------------------------------------------------


def funnel_rows(warehouse: Warehouse) -> list[dict[str, Any]]:
    """The `funnel` view: rows per stage and outcome (every drop reason), all runs."""
    return records(
        warehouse, "SELECT step, stage, outcome, rows FROM funnel ORDER BY step, rows DESC, outcome"
    )


def sample_outcomes(warehouse: Warehouse, scope: ReportScope) -> list[dict[str, Any]]:
    """The scope's samples per outcome: kept_sft, kept_rl, or the drop reason."""
    where, parameters = scope.samples_where()
    return records(
        warehouse,
        "SELECT CASE WHEN status = 'kept' THEN 'kept_' || split ELSE coalesce(nullif(reason, ''), "
        f"'unknown') END AS outcome, count(*) AS rows FROM samples s WHERE {where} GROUP BY 1 "
        "ORDER BY outcome NOT LIKE 'kept\\_%' ESCAPE '\\', rows DESC, outcome",
        parameters,
    )


def counted_failure(columns: set[str]) -> str:
    """SQL condition: a failure that uses up one of its row's attempts (permanent, not re-queued);
    every failure counts in a warehouse from before failure kinds."""
    if "kind" not in columns:
        return "TRUE"
    transient = getattr(error_types, "LEGACY_TRANSIENT_CLASSES", ("ModelCallError",))
    condition = (
        "(coalesce(kind, '') = 'permanent' OR (coalesce(kind, '') = '' AND error_class NOT IN ("
        + ", ".join(f"'{name}'" for name in transient)
        + ")))"
    )
    return condition + (" AND requeued_at IS NULL" if "requeued_at" in columns else "")


# Which table holds a stage's output for a failed input row (`failures.row_id`).
STAGE_OUTPUT = {
    "prompts": "SELECT topic_ids[1] FROM prompts",
    "trajectories": "SELECT prompt_id FROM trajectories",
    "images": "SELECT trajectory_id FROM images WHERE kind = 'ground_truth'",
    "judgements": "SELECT image_id FROM judgements",
    "samples": "SELECT trajectory_id FROM samples",
}


def failure_rows(warehouse: Warehouse, scope: ReportScope, max_attempts: int) -> list[dict[str, Any]]:
    """Failures per stage and error class (and kind, when recorded): failure rows, distinct input
    rows, rows retried (attempt > 1), and each failed row's state: recovered (the stage has its
    output now), waiting (fewer than `max_attempts` counted failures: retried on the next run) or
    given up. Transient and re-queued failures do not count against a row, as in warehouse.pending."""
    columns = table_columns(warehouse).get("failures", set())
    kind = "coalesce(f.kind, '')" if "kind" in columns else "''"
    run_filter = "WHERE run_id = ?" if scope.run else ""
    parameters: list[Any] = [scope.run.id] if scope.run else []
    outputs = " UNION ALL ".join(
        f"SELECT '{stage}' AS stage, out_id FROM ({sql}) AS o(out_id)" for stage, sql in STAGE_OUTPUT.items()
    )
    sql = f"""
    WITH f AS (SELECT * FROM failures {run_filter}),
    per_row AS (
        SELECT stage, row_id, count(*) FILTER (WHERE {counted_failure(columns)}) AS attempts
        FROM failures GROUP BY stage, row_id
    ),
    outputs AS ({outputs}),
    state AS (
        SELECT p.stage, p.row_id,
            CASE WHEN EXISTS (SELECT 1 FROM outputs o WHERE o.stage = p.stage AND o.out_id = p.row_id)
                 THEN 'recovered' WHEN p.attempts < ? THEN 'waiting' ELSE 'gave_up' END AS state
        FROM per_row p
    )
    SELECT f.stage, f.error_class, {kind} AS kind, count(*) AS failures,
        count(DISTINCT f.row_id) AS rows,
        count(DISTINCT f.row_id) FILTER (WHERE f.attempt > 1) AS retried,
        count(DISTINCT f.row_id) FILTER (WHERE s.state = 'recovered') AS recovered,
        count(DISTINCT f.row_id) FILTER (WHERE s.state = 'waiting') AS waiting,
        count(DISTINCT f.row_id) FILTER (WHERE s.state = 'gave_up') AS gave_up,
        any_value(f.message ORDER BY f.id) AS example
    FROM f JOIN state s ON s.stage = f.stage AND s.row_id = f.row_id
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    """
    # placeholders in text order: the run filter of `f`, then max_attempts
    return records(warehouse, sql, [*parameters, max_attempts])


# --- balance and distributions --------------------------------------------------------------------


def split_category_counts(warehouse: Warehouse, scope: ReportScope) -> list[dict[str, Any]]:
    """Per category: kept SFT rows, kept RL rows, dropped rows."""
    where, parameters = scope.samples_where()
    return records(
        warehouse,
        "SELECT category, count(*) FILTER (WHERE status = 'kept' AND split = 'sft') AS sft, "
        "count(*) FILTER (WHERE status = 'kept' AND split = 'rl') AS rl, "
        "count(*) FILTER (WHERE status = 'dropped') AS dropped "
        f"FROM samples s WHERE {where} GROUP BY category ORDER BY category",
        parameters,
    )


def prompt_lengths(warehouse: Warehouse, scope: ReportScope) -> list[int]:
    """Words per prompt of the scope's samples, ordered by sample id."""
    where, parameters = scope.samples_where()
    rows = records(
        warehouse,
        "SELECT len(string_split(trim(regexp_replace(p.prompt, '\\s+', ' ', 'g')), ' ')) AS words "
        f"FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE {where} ORDER BY s.id",
        parameters,
    )
    return [int(row["words"]) for row in rows]


SCORE_COLUMNS = ("grounding_score", "score")


def grounding_scores(warehouse: Warehouse, scope: ReportScope) -> tuple[list[float], str]:
    """Per sample, the grounding score of its trajectory (share of the gen_prompt's facts a tool
    response supports), and where it came from: `judgements.grounding`, else the `evidence` rows,
    else a `grounding_score` column; "" when the warehouse holds none of them."""
    columns = table_columns(warehouse)
    where, parameters = scope.samples_where()
    if "grounding" in columns.get("judgements", set()):
        rows = records(
            warehouse,
            "SELECT avg(j.grounding) AS score FROM samples s JOIN judgements j ON j.trajectory_id = "
            f"s.trajectory_id WHERE {where} AND j.grounding IS NOT NULL GROUP BY s.id ORDER BY s.id",
            parameters,
        )
        if rows:
            return [float(row["score"]) for row in rows], "judgements.grounding"
    evidence = columns.get("evidence", set())
    if {"supported", "trajectory_id"} <= evidence:
        rows = records(
            warehouse,
            "SELECT avg(e.supported::DOUBLE) AS score FROM samples s JOIN evidence e ON e.trajectory_id = "
            f"s.trajectory_id WHERE {where} GROUP BY s.id ORDER BY s.id",
            parameters,
        )
        if rows:
            return [float(row["score"]) for row in rows], "evidence: share of facts supported"
    for table in ("samples", "trajectories"):
        if "grounding_score" in columns.get(table, set()):
            join = "" if table == "samples" else "JOIN trajectories x ON x.id = s.trajectory_id"
            alias = "s" if table == "samples" else "x"
            rows = records(
                warehouse,
                f"SELECT {alias}.grounding_score AS score FROM samples s {join} WHERE {where} "
                f"AND {alias}.grounding_score IS NOT NULL ORDER BY s.id",
                parameters,
            )
            return [float(row["score"]) for row in rows], f"{table}.grounding_score"
    score = next((name for name in SCORE_COLUMNS if name in evidence), None)
    if score and "trajectory_id" in evidence:
        rows = records(
            warehouse,
            f"SELECT avg(e.{score}) AS score FROM samples s JOIN evidence e ON e.trajectory_id = "
            f"s.trajectory_id WHERE {where} AND e.{score} IS NOT NULL GROUP BY s.id ORDER BY s.id",
            parameters,
        )
        return [float(row["score"]) for row in rows], f"evidence.{score} (mean per trajectory)"
    return [], ""


def image_mix(warehouse: Warehouse, scope: ReportScope) -> list[dict[str, Any]]:
    """Ground-truth images of the scope's samples per format and size."""
    where, parameters = scope.samples_where()
    return records(
        warehouse,
        "SELECT i.format, i.width, i.height, count(*) AS images FROM samples s JOIN images i "
        f"ON i.id = s.image_id WHERE {where} GROUP BY ALL ORDER BY images DESC, i.format, i.width, i.height",
        parameters,
    )


# --- runs: usage, cost, seconds -------------------------------------------------------------------


def _runs(warehouse: Warehouse, scope: ReportScope) -> list[Run]:
    if scope.run:
        return [scope.run]
    runs = _model_rows(warehouse, Run, "runs", "started_at, id")
    if scope.version:
        runs = [run for run in runs if run.started_at <= scope.version.created_at]
    return runs


def _counts(run: Run) -> dict[str, Any]:
    try:
        counts = json.loads(run.counts_json or "{}")
    except ValueError:
        return {}
    return counts if isinstance(counts, dict) else {}


def model_usage(warehouse: Warehouse, scope: ReportScope) -> list[dict[str, Any]]:
    """Model calls, tokens and cost per run and LLM role (from `runs.counts_json`)."""
    result = []
    for run in _runs(warehouse, scope):
        by_role: dict[str, dict[str, float]] = {}
        for stage_counts in _counts(run).values():
            if not isinstance(stage_counts, dict):
                continue
            for role, usage in (stage_counts.get("usage") or {}).items():
                into = by_role.setdefault(role, {})
                for name, value in usage.items():
                    if isinstance(value, int | float):
                        into[name] = into.get(name, 0) + value
        if not by_role:  # a run killed before its counts were written: the ledger's running total
            try:
                ledger = json.loads(getattr(run, "usage_json", "") or "{}")
            except ValueError:
                ledger = {}
            for role, usage in ledger.items() if isinstance(ledger, dict) else []:
                if isinstance(usage, dict):
                    by_role[role] = {k: v for k, v in usage.items() if isinstance(v, int | float)}
        for role, usage in sorted(by_role.items()):
            result.append(
                {
                    "run": run.id,
                    "role": role,
                    "calls": int(usage.get("calls", 0)),
                    "cached_calls": int(usage.get("cached_calls", 0)),
                    "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                    "completion_tokens": int(usage.get("completion_tokens", 0)),
                    "cost_usd": float(usage.get("cost_usd", 0.0)),
                }
            )
    return result


def stage_timings(warehouse: Warehouse, scope: ReportScope) -> list[dict[str, Any]]:
    """Seconds, inputs and new rows per run and stage, and rows per second."""
    result = []
    for run in _runs(warehouse, scope):
        for stage, counts in _counts(run).items():
            if not isinstance(counts, dict) or "seconds" not in counts:
                continue
            seconds = float(counts.get("seconds") or 0.0)
            rows = int(counts.get("tables", {}).get(stage, counts.get("rows_written", 0)) or 0)
            result.append(
                {
                    "run": run.id,
                    "command": run.command,
                    "stage": stage,
                    "inputs": int(counts.get("inputs", 0) or 0),
                    "rows": rows,
                    "failures": int(counts.get("failures", 0) or 0),
                    "seconds": seconds,
                    "rows_per_s": rows / seconds if seconds > 0 else 0.0,
                }
            )
    return result


def run_rows(warehouse: Warehouse, scope: ReportScope) -> list[dict[str, Any]]:
    return [
        {
            "run": run.id,
            "command": run.command,
            "status": run.status,
            "started": run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": (run.finished_at - run.started_at).total_seconds() if run.finished_at else None,
        }
        for run in _runs(warehouse, scope)
    ]


def summary(warehouse: Warehouse, scope: ReportScope) -> dict[str, Any]:
    """Headline numbers: kept rows per split, dropped rows, failed rows, model calls, cost, seconds."""
    outcomes = {row["outcome"]: row["rows"] for row in sample_outcomes(warehouse, scope)}
    usage = model_usage(warehouse, scope)
    timings = stage_timings(warehouse, scope)
    run_filter = "WHERE run_id = ?" if scope.run else ""
    failed = records(
        warehouse,
        f"SELECT count(DISTINCT stage || ':' || row_id) AS rows FROM failures {run_filter}",
        [scope.run.id] if scope.run else [],
    )[0]["rows"]
    return {
        "kept_sft": int(outcomes.get("kept_sft", 0)),
        "kept_rl": int(outcomes.get("kept_rl", 0)),
        "dropped": int(sum(n for outcome, n in outcomes.items() if not outcome.startswith("kept_"))),
        "failed_rows": int(failed),
        "model_calls": sum(row["calls"] for row in usage),
        "tokens": sum(row["prompt_tokens"] + row["completion_tokens"] for row in usage),
        "cost_usd": sum(row["cost_usd"] for row in usage),
        "seconds": sum(row["seconds"] for row in timings),
    }
