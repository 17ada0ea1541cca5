"""How the flow starts a batch task: a `Submit` takes a task of `flows/tasks.py` and its arguments and
returns a future of its result.

- `prefect_submit(config)`: the production path, `task.submit` on the flow's task runner (threads, or
  Ray through prefect-ray with the batch's resources from `batch_resources`);
- `executor_submit(executor)`: the same task functions on a `concurrent.futures` executor, without
  Prefect (no flow run, no task-run records) — what `bench/pipeline.py` compares Prefect against.

`flows.regenerate.run_stages` takes one (docs/ARCHITECTURE.md, "The stage contract").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any

from schemas.config import Config

Submit = Callable[..., Any]
"""`submit(task, *args)`: start the Prefect task `task` on `args`; returns a future (`.result()`)."""


def prefect_submit(config: Config) -> Submit:
    """Submit on the task runner of the flow run this is called in."""

    def submit(task: Any, *args: Any) -> Any:
        with batch_resources(config, task.name):
            return task.submit(*args)

    return submit


def executor_submit(executor: Executor) -> Submit:
    """Run the tasks' plain functions on `executor`: no Prefect, works outside a flow run."""

    def submit(task: Any, *args: Any) -> Any:
        return executor.submit(task.fn, *args)

    return submit


@contextmanager
def batch_resources(config: Config, task_name: str) -> Iterator[None]:
    """On Ray: painter batches ask for a GPU when the painter runs on CUDA; other batches for a CPU."""
    if not (config.runner == "ray" or config.runner.startswith("ray:")):
        yield
        return
    from prefect_ray.context import remote_options  # the ray extra: only with a Ray runner

    if task_name == "paint-images" and config.painter.device.startswith("cuda"):
        options = {"num_gpus": 1}
    else:
        options = {"num_cpus": 1}
    with remote_options(**options):
        yield
