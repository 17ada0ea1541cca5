"""The `regenerate` flow: every arrow of docs/ARCHITECTURE.md's diagram, each stage reading its pending rows.

A run killed at any point and started again finishes with the same rows: every stage writes after
each batch, ids are content hashes, and writes are insert-if-absent.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows.ledger import RunLedger, finish_status
from flows.live_status import serve_readers
from flows.overlap import run_overlapped
from flows.settings import code_version
from flows.stages import BY_NAME, STAGE_NAMES
from flows.submit import Submit, prefect_submit
from flows.workspace import Workspace
from schemas.config import Config
from synthesis.circuit_breaker import configure_breakers
from warehouse.export import latest_version, version_folder
from warehouse.store import Warehouse


def run_stages(
    warehouse: Warehouse,
    config: Config,
    run_id: str,
    stages: list[str],
    counts: dict[str, Any],
    submit: Submit | None = None,
) -> None:
    """Run `stages` (in the registry's order, `flows/stages.py`) into `counts`: topics alone, then the
    batch stages overlapping, then curation and export alone. Stops after a step where a stage stopped
    (a fatal error or an open breaker: later stages would work on a partial stage).

    `submit` starts each batch task (`flows/submit.py`); default: the task runner of the flow run this
    is called in."""
    submit = submit or prefect_submit(config)
    steps: list[list[str]] = []
    for name in stages:
        if BY_NAME[name].batched and steps and BY_NAME[steps[-1][0]].batched:
            steps[-1].append(name)
        else:
            steps.append([name])
    for step in steps:
        started = time.perf_counter()
        first = BY_NAME[step[0]]
        if first.run is None:
            works = [BY_NAME[name].work(warehouse, config, submit) for name in step]
            counts.update(run_overlapped(warehouse, run_id, works))
        else:
            counts[first.name] = vars(first.run(warehouse, config, run_id, submit))
            counts[first.name]["seconds"] = round(time.perf_counter() - started, 3)
        if any(counts[name].get("stopped") for name in step):
            break


def regenerate_with(
    config: Config, stages: list[str] | None, command: str, submit: Submit | None = None
) -> dict[str, Any]:
    """The `regenerate` flow's work: the selected stages (default: all) on their pending rows, under
    one run ledger. `submit` as in `run_stages`: the flow passes none (its task runner);
    `bench/pipeline.py` passes `executor_submit` to measure what Prefect costs."""
    configure_breakers(config.breaker_threshold, config.breaker_cooldown_s)
    selected = [stage for stage in STAGE_NAMES if stages is None or stage in stages]
    workspace = Workspace(config.workdir).create()
    counts: dict[str, dict[str, float]] = {}
    with Warehouse(workspace.database) as warehouse, serve_readers(warehouse, workspace.root):
        ledger = RunLedger.start(
            warehouse,
            command=command,
            config_fingerprint=config.fingerprint(),
            code_version=code_version(),
            workdir=workspace.root,
        )
        run = ledger.run
        try:
            run_stages(warehouse, config, run.id, selected, counts, submit)
        except BaseException as error:
            ledger.finish(finish_status(error), counts)
            raise
        stopped = any(stage_counts.get("stopped") for stage_counts in counts.values())
        ledger.finish("failed" if stopped else "completed", counts)
        version = latest_version(warehouse) if counts.get("export", {}).get("rows_written") else None
    return {
        "run_id": run.id,
        "counts": counts,
        "version": version.model_dump(mode="json", include={"id", "sft_rows", "rl_rows"})
        | {"path": str(version_folder(workspace.root, version))}
        if version
        else None,
    }


@flow(name="regenerate", log_prints=True)
def regenerate(
    config_data: dict[str, Any], stages: list[str] | None = None, command: str = "run"
) -> dict[str, Any]:
    """Regenerate the datasets: run the selected stages (default: all) on their pending rows."""
    return regenerate_with(Config.model_validate(config_data), stages, command)
