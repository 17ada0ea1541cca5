"""Scheduled refreshes: a Prefect deployment of the `refresh` flow, served by this process.

`groundgen schedule --interval 3600` (or `--cron "0 3 * * 1"`) registers the deployment with the Prefect
server at PREFECT_API_URL (the user runs `prefect server start`) and serves it until SIGTERM/Ctrl-C:
the server schedules runs, this process executes them (one at a time: the deployment's concurrency
limit is 1, and the refresh lock guards the work directory against any other refresh).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from typing import Any

from flows.ledger import run_id_of
from schemas.config import Config, resolve_workdir, task_payload
from schemas.errors import ConfigurationError

DEPLOYMENT_PREFIX = "groundgen-refresh"
SERVER_HINT = (
    "start a Prefect server (prefect server start --host 127.0.0.1 --port 4200) and "
    "export PREFECT_API_URL=http://127.0.0.1:4200/api"
)


def deployment_name(config: Config) -> str:
    """One deployment per work directory: `groundgen-refresh-<work dir name>-<hash of its path>`, so
    two work directories with the same name (`/a/groundgen-data`, `/b/groundgen-data`) served on one
    Prefect server never replace each other's deployment."""
    path = resolve_workdir(None, config, absolute=True)
    return f"{DEPLOYMENT_PREFIX}-{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def require_server() -> str:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        raise ConfigurationError(f"schedules need a Prefect server: {SERVER_HINT}")
    return url


def serve_refresh(
    config: Config,
    *,
    cron: str | None = None,
    interval: float | None = None,
    max_topics: int = 100,
    min_new: int = 1,
) -> None:
    """Create the refresh deployment with its schedule and serve it (blocks until stopped)."""
    from flows.settings import configure_prefect

    if (cron is None) == (interval is None):
        raise ConfigurationError("give exactly one of --cron or --interval")
    require_server()
    configure_prefect(config.workdir, hub_offline=config.hub.offline)
    from flows.refresh import refresh

    payload = task_payload(config)
    refresh.serve(
        name=deployment_name(config),
        cron=cron,
        interval=interval,
        parameters={"config_data": payload, "max_topics": max_topics, "min_new": min_new},
        global_limit=1,
        tags=["groundgen", "refresh"],
        description=f"groundgen refresh of {payload['workdir']}",
        print_starting_message=True,
    )


def _schedule_text(schedule: Any) -> str:
    inner = getattr(schedule, "schedule", schedule)
    if getattr(inner, "cron", None):
        return f"cron {inner.cron}"
    if getattr(inner, "interval", None):
        return f"every {int(inner.interval.total_seconds())} s"
    return str(inner)


def prefect_status(limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Refresh deployments (schedules) and recent refresh flow runs from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        flows = FlowFilter(name=FlowFilterName(any_=["refresh"]))
        deployments = client.read_deployments(flow_filter=flows)
        started = FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))  # not future ones
        runs = client.read_flow_runs(
            flow_filter=flows, flow_run_filter=started, sort=FlowRunSort.START_TIME_DESC, limit=limit
        )
    return {
        "schedules": [
            {
                "id": str(d.id),
                "deployment": d.name,
                "schedule": ", ".join(_schedule_text(s) for s in d.schedules) or "none",
                "active": str(not d.paused),
            }
            for d in deployments
        ],
        "flow_runs": [
            {
                "id": str(r.id),
                "name": r.name,
                "state": r.state_name or "",
                "started": _time(r.start_time),
                "deployment_id": str(r.deployment_id or ""),
            }
            for r in runs
        ],
    }


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def run_key(flow_run_id: str) -> str:
    """The warehouse `runs.id` a refresh flow run records (`flows.ledger.run_id_of`)."""
    return run_id_of(flow_run_id)
