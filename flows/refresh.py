"""The `refresh` flow: mine only topics new since each source's watermark, run them through every stage,
and export a new version when enough new samples were kept.

Rules (README "Refreshes and schedules"):
- New topics: what the source yields now that the warehouse does not hold yet, in the category-
  interleaved order, at most `max_topics`. Live sources (MediaWiki, RSS) also read only what changed
  since their watermark (`topics_since`); the offline source's watermark is a fingerprint of the topic
  set it yielded (it changes with a newly enabled category or a new corpus version).
- Quotas: each split's quota is raised by the new topics' share of it: quota(s) = max(sizes.s, kept(s))
  + ceil(new_topics * sizes.s / (sizes.sft + sizes.rl)). Sizes are not part of the curator fingerprint,
  so earlier decisions keep their identity.
- Export: a new version when at least `min_new` kept samples are not in the latest version yet; its
  manifest's `added` is exactly those samples. Otherwise nothing is exported and the result says so.
- One refresh at a time per work directory: a lock file naming the holder's PID.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from extractors.topic_selection import interleave_by_category
from flows.batches import write_result
from flows.exporting import export_current, export_stage_counts
from flows.ledger import RunLedger, finish_status
from flows.live_status import serve_readers
from flows.prefect_server import prefect_api_for_command
from flows.regenerate import run_stages
from flows.resources import resources_for
from flows.results import BatchResult, StageCounts
from flows.runner import task_runner_for
from flows.settings import code_version, configure_prefect
from flows.stages import STAGE_NAMES
from flows.worklock import WorkdirLockedError, check_unlocked, work_lock
from flows.workspace import Workspace
from schemas.config import Config, SizesConfig, task_payload
from schemas.ids import fingerprint
from schemas.rows import Sample, SourceState, Topic
from synthesis.circuit_breaker import configure_breakers
from warehouse.export import latest_version
from warehouse.manifest import manifest_ids
from warehouse.store import Warehouse

# Every stage but topics and export: a refresh mines only new topics and exports only past `min_new`.
REFRESH_STAGES = tuple(stage for stage in STAGE_NAMES if stage not in ("topics", "export"))
# One writer per work directory: `groundgen run` and `groundgen refresh` share the lock.
RefreshLockedError = WorkdirLockedError


def refresh_lock(workdir: Path) -> AbstractContextManager[Path]:
    return work_lock(workdir, "refresh")


# --- new topics ------------------------------------------------------------------------------------


def source_key(config: Config) -> str:
    topics = config.topics
    return topics.source if not topics.urls else f"{topics.source}:{','.join(topics.urls)}"


def new_topics(
    source: Any, warehouse: Warehouse, key: str, max_topics: int
) -> tuple[list[Topic], list[SourceState]]:
    """Topics not in the warehouse yet (category-interleaved, at most `max_topics`) and the new states.

    Live sources (`topics_since`) read only what changed since their per-URL states; a watermark only
    advances when every new topic it covered was taken (otherwise the old states are kept, the next
    refresh reads the same window again, and topics already mined are skipped by id)."""
    now = datetime.now(UTC)
    if hasattr(source, "topics_since"):
        states = {s.id: s for s in warehouse.rows(SourceState, "source = ?", [source.name])}
        candidates, new_states = source.topics_since(states)
    else:
        states = {s.id: s for s in warehouse.rows(SourceState, "id = ?", [key])}
        candidates = list(source.topics())
        watermark = fingerprint(sorted(t.id for t in candidates))
        new_states = [SourceState(id=key, source=source.name, watermark=watermark, updated_at=now)]
    known = warehouse.ids(Topic, "id IN (SELECT unnest(?))", [sorted({t.id for t in candidates})])
    fresh = interleave_by_category(t for t in candidates if t.id not in known)
    if len(fresh) > max_topics:
        new_states = [states[s.id] for s in new_states if s.id in states]
    return fresh[:max_topics], new_states


def raised_sizes(sizes: SizesConfig, kept: dict[str, int], added_topics: int) -> SizesConfig:
    """Quotas for a refresh: each split grows by its share of the new topics (see the module doc)."""
    whole = sizes.sft + sizes.rl
    if whole == 0 or added_topics == 0:
        return sizes.model_copy(update={"sft": max(sizes.sft, kept["sft"]), "rl": max(sizes.rl, kept["rl"])})
    return sizes.model_copy(
        update={
            split: max(getattr(sizes, split), kept[split])
            + math.ceil(added_topics * getattr(sizes, split) / whole)
            for split in ("sft", "rl")
        }
    )


def _kept(warehouse: Warehouse, curator: str) -> dict[str, int]:
    counts = {"sft": 0, "rl": 0}
    for row in warehouse.query(
        "SELECT split, count(*) AS n FROM samples WHERE curator = ? AND status = 'kept' GROUP BY 1", [curator]
    ).to_pylist():
        counts[row["split"]] = row["n"]
    return counts


def unexported_kept(warehouse: Warehouse, curator: str) -> list[str]:
    """Kept samples of this curator that the latest version does not hold yet (sorted ids)."""
    latest = latest_version(warehouse)
    exported = {i for ids in manifest_ids(latest.manifest_json if latest else "").values() for i in ids}
    kept = warehouse.ids(Sample, "curator = ? AND status = 'kept'", [curator])
    return sorted(kept - exported)


# --- the flow --------------------------------------------------------------------------------------


@flow(name="refresh", log_prints=True)
def refresh(config_data: dict[str, Any], max_topics: int = 100, min_new: int = 1) -> dict[str, Any]:
    """Mine new topics, process only them, export a version when >= `min_new` new samples were kept."""
    config = Config.model_validate(config_data)
    configure_breakers(config.breaker_threshold, config.breaker_cooldown_s)
    workspace = Workspace(config.workdir).create()
    with (
        refresh_lock(workspace.root),
        Warehouse(workspace.database) as warehouse,
        serve_readers(warehouse, workspace.root),
    ):
        ledger = RunLedger.start(
            warehouse,
            command="refresh",
            config_fingerprint=config.fingerprint(),
            code_version=code_version(),
            workdir=workspace.root,
        )
        run = ledger.run
        counts: dict[str, Any] = {}
        summary: dict[str, Any] = {"new_topics": 0, "new_samples": 0, "version": None}
        try:
            key = source_key(config)
            source = resources_for(config).topic_source()
            topics, states = new_topics(source, warehouse, key, max_topics)
            topic_counts = write_result(warehouse, "topics", run.id, [], BatchResult(rows=list(topics)))
            topic_counts.inputs = len(topics)
            counts["topics"] = vars(topic_counts)
            summary["new_topics"] = len(topics)
            curator = config.curation_fingerprint()
            stage_config = config.model_copy(
                update={"sizes": raised_sizes(config.sizes, _kept(warehouse, curator), len(topics))}
            )
            run_stages(warehouse, stage_config, run.id, list(REFRESH_STAGES), counts)
            for stage in REFRESH_STAGES:  # a fatal error or an open breaker: no partial version
                if counts.get(stage, {}).get("stopped"):
                    summary["stopped"] = f"{stage} stopped: {counts[stage]['stopped']}"
                    break
            for state in states:
                warehouse.replace(state.model_copy(update={"updated_at": datetime.now(UTC)}))
            new = unexported_kept(warehouse, curator)
            summary["new_samples"] = len(new)
            if new and len(new) >= min_new and not summary.get("stopped"):
                counts["export"] = vars(_export(warehouse, stage_config))
                latest = latest_version(warehouse)
                summary["version"] = latest.id if latest else None
            else:
                counts["export"] = vars(StageCounts())
            summary["message"] = _message(summary, min_new)
            print(summary["message"])
        except BaseException as error:
            _finish(ledger, finish_status(error), counts, summary)
            raise
        _finish(ledger, "failed" if summary.get("stopped") else "completed", counts, summary)
    return {"run_id": run.id, "counts": counts, **summary}


def _export(warehouse: Warehouse, config: Config) -> StageCounts:
    return export_stage_counts(*export_current(warehouse, config))


def _message(summary: dict[str, Any], min_new: int) -> str:
    if summary.get("stopped"):
        return f"refresh: {summary['stopped']}; no version exported"
    if summary["version"]:
        return (
            f"refresh: {summary['new_topics']} new topics, {summary['new_samples']} new samples kept "
            f"-> dataset version {summary['version']}"
        )
    if summary["new_topics"] == 0 and summary["new_samples"] == 0:
        return "refresh: nothing new since the last refresh; no version exported"
    return (
        f"refresh: {summary['new_topics']} new topics, {summary['new_samples']} new samples kept "
        f"(fewer than --min-new {min_new}); no version exported"
    )


def _finish(ledger: RunLedger, status: str, counts: dict[str, Any], summary: dict[str, Any]) -> None:
    ledger.finish(status, {**counts, "refresh": {k: v for k, v in summary.items() if k != "message"}})


def run_refresh(config: Config, max_topics: int = 100, min_new: int = 1) -> dict[str, Any]:
    """Start the refresh flow in this process with the configured task runner."""
    check_unlocked(config.workdir)
    configure_prefect(config.workdir, hub_offline=config.hub.offline)
    payload = task_payload(config)
    with prefect_api_for_command(config.workdir):  # a temporary server lives only as long as this call
        return refresh.with_options(task_runner=task_runner_for(config))(payload, max_topics, min_new)
