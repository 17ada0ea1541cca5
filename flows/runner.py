"""Choosing where batches run (threads or Ray through Prefect's task runner) and starting the flow."""

from __future__ import annotations

import os
from typing import Any

from flows.settings import configure_prefect
from schemas.config import Config
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
        if address:
            return RayTaskRunner(address=address)
        temp_dir = os.environ.get("GROUNDGEN_RAY_TMPDIR", str((config.workdir / ".ray").resolve()))
        return RayTaskRunner(
            init_kwargs={
                "num_cpus": os.cpu_count() or 2,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
                "_temp_dir": temp_dir,
                "runtime_env": {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
            }
        )
    raise ConfigurationError(f"unknown runner {config.runner!r}; use threads, ray or ray:ADDRESS")


def run_regenerate(
    config: Config, stages: list[str] | None = None, *, show_progress: bool = False, command: str = "run"
) -> dict[str, Any]:
    configure_prefect(config.workdir)
    from flows import progress
    from flows.regenerate import regenerate

    flow = regenerate.with_options(task_runner=task_runner_for(config))
    payload = config.model_dump(mode="json")
    if not show_progress:
        return flow(payload, stages, command)
    with progress.RichProgress() as reporter:
        progress.set_reporter(reporter)
        try:
            return flow(payload, stages, command)
        finally:
            progress.set_reporter(progress.SilentProgress())
