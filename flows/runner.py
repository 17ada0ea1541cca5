"""Choosing where batches run (threads or Ray through Prefect's task runner) and starting the flow.

`run_regenerate` configures Prefect (`flows/settings.py`) before it imports the flow, which imports
Prefect; batches ask the task runner for their resources in `flows/submit.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flows import progress
from flows.prefect_server import prefect_api_for_command
from flows.settings import configure_prefect
from flows.worklock import work_lock
from schemas.config import Config, task_payload
from schemas.errors import ConfigurationError


def task_runner_for(config: Config) -> Any:
    """Prefect task runner for `config.runner`: 'threads', 'ray' (local) or 'ray:ADDRESS'."""
    if config.runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(2, min(8, os.cpu_count() or 2)))
    if config.runner == "ray" or config.runner.startswith("ray:"):
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as error:
            raise ConfigurationError(
                "the Ray runner needs the ray extra: pip install 'groundgen[ray]'"
            ) from error
        address = config.runner.partition(":")[2] or None
        # workers report their task runs to the flow's Prefect server (never a temporary one each)
        env_vars = {"RAY_USAGE_STATS_ENABLED": "0"}
        env_vars |= {key: os.environ[key] for key in WORKER_ENV if key in os.environ}
        if address:
            return RayTaskRunner(address=address, init_kwargs={"runtime_env": {"env_vars": env_vars}})
        temp_dir = os.environ.get("GROUNDGEN_RAY_TMPDIR", str((config.workdir / ".ray").resolve()))
        return RayTaskRunner(
            init_kwargs={
                "num_cpus": int(os.environ.get("GROUNDGEN_RAY_CPUS", 0)) or os.cpu_count() or 2,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
                "_temp_dir": temp_dir,
                "runtime_env": {"env_vars": env_vars},
            }
        )
    raise ConfigurationError(f"unknown runner {config.runner!r}; use threads, ray or ray:ADDRESS")


WORKER_ENV = (
    "PREFECT_API_URL",
    "PREFECT_HOME",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_LOGGING_LEVEL",
    "HF_HUB_OFFLINE",
)


def run_regenerate(
    config: Config,
    stages: list[str] | None = None,
    *,
    show_progress: bool = False,
    command: str = "run",
    task_runner: Any = None,
) -> dict[str, Any]:
    """Run the `regenerate` flow in this process; batches run on `task_runner` (a Prefect task
    runner; default `task_runner_for(config)`)."""
    configure_prefect(config.workdir, hub_offline=config.hub.offline)
    from flows.regenerate import regenerate  # imports Prefect: only once it is configured

    # an absolute work dir: Ray workers (other processes, maybe other machines) write blobs there
    payload = task_payload(config)
    # a temporary Prefect server (no PREFECT_API_URL) lives exactly as long as this call; started
    # before the task runner so Ray workers report to it
    with work_lock(Path(config.workdir), command), prefect_api_for_command(config.workdir):
        flow = regenerate.with_options(task_runner=task_runner or task_runner_for(config))
        if not show_progress:
            return flow(payload, stages, command)
        with progress.RichProgress() as bars, progress.reporting_to(bars):
            return flow(payload, stages, command)
