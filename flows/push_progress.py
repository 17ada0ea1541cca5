"""`groundgen push` progress: a byte bar on stderr (bytes done, total, bytes/s), fed by the push's
per-file progress callback (`warehouse.hub.PushProgress`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from warehouse.hub import PushProgress


@contextmanager
def push_progress_bar(console: Console | None = None) -> Iterator[Callable[[PushProgress], None] | None]:
    """Yield a callback for `push_version(on_progress=...)` that draws one bar in bytes — or None when
    the console is not a terminal (logs get the push's own per-file progress lines instead)."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    progress = Progress(
        TextColumn("push"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[file]}"),
        console=console,
        transient=False,
    )
    task = progress.add_task("push", total=None, file="")

    def update(step: PushProgress) -> None:
        progress.update(
            task,
            total=step.bytes_total,
            completed=step.bytes_done,
            file=f"{step.files_done}/{step.files_total} {step.file}",
        )

    with progress:
        yield update
