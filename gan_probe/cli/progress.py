"""A Rich progress bar on stderr, only when stderr is a terminal and not ``--quiet``/``--json``."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """Implements :class:`gan_probe.analyses.common.Progress` with a transient Rich bar (or nothing)."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if enabled
            else None
        )

    def __enter__(self) -> RichProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int) -> Callable[[int], None]:
        progress = self._progress
        if progress is None:
            return lambda n: None
        task_id = progress.add_task(description, total=total)
        return lambda n: progress.advance(task_id, n)


__all__ = ["RichProgress"]
