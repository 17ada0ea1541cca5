"""Progress reporting for long stages. The CLI installs a rich reporter for its run (`reporting_to`);
tests and library use get none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import TaskID


class ProgressReporter(Protocol):
    def start(self, stage: str, total: int) -> None: ...

    def advance(self, stage: str, rows: int) -> None: ...

    def finish(self, stage: str) -> None: ...


class SilentProgress:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, rows: int) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


class RichProgress:
    """One rich progress bar per stage, on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, stage: str, total: int) -> None:
        if stage in self._tasks:
            self._progress.update(self._tasks[stage], total=total, completed=0)
        else:
            self._tasks[stage] = self._progress.add_task(stage, total=total)

    def advance(self, stage: str, rows: int) -> None:
        self._progress.advance(self._tasks[stage], rows)

    def finish(self, stage: str) -> None:
        task_id = self._tasks[stage]
        total = self._progress.tasks[task_id].total or 0
        self._progress.update(task_id, completed=total)


# The reporter of the run this context belongs to. A ContextVar, not a module global: two runs in one
# process (threads of a long-lived process, tests) each see their own, and the flow's code sees the
# reporter its caller installed because Prefect runs a sync flow in the caller's thread and context.
_REPORTER: ContextVar[ProgressReporter | None] = ContextVar("groundgen_progress_reporter", default=None)
_SILENT = SilentProgress()


def reporter() -> ProgressReporter:
    """The reporter of the current context (a `SilentProgress` when none was installed)."""
    return _REPORTER.get() or _SILENT


@contextmanager
def reporting_to(progress: ProgressReporter) -> Iterator[ProgressReporter]:
    """Send the progress of this context (and of tasks and threads started with a copy of it) to
    `progress` while the block runs; the reporter before it comes back afterwards."""
    token = _REPORTER.set(progress)
    try:
        yield progress
    finally:
        _REPORTER.reset(token)
