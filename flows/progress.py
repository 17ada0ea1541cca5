"""Progress reporting for long stages. The CLI installs a rich reporter; tests and library use get none."""

from __future__ import annotations

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


_reporter: ProgressReporter = SilentProgress()


def set_reporter(reporter: ProgressReporter) -> None:
    global _reporter
    _reporter = reporter


def reporter() -> ProgressReporter:
    return _reporter
