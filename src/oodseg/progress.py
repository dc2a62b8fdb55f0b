"""Progress of the stages a user waits on (reading and checking the data, training, fitting the
detectors, scoring, writing pages): a rich bar with counts on a terminal; with ``--quiet``, or
when the output is not a terminal (a log file, CI), one line per stage as it ends, so that a
check can be told from a hang without filling the log with bars."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

T = TypeVar("T")


class StageLines:
    """The calls the pipeline makes on a rich :class:`~rich.progress.Progress` (``add_task``,
    ``advance``, ``remove_task``), printed as one line per stage when it ends:
    ``description: done/total in seconds``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._tasks: dict[int, list] = {}
        self._ids = itertools.count()

    def __enter__(self) -> StageLines:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.task_ids:
            self.remove_task(task)

    def add_task(self, description: str, total: float | None = None, **_: object) -> int:
        task = next(self._ids)
        self._tasks[task] = [description, total, 0, time.perf_counter()]
        return task

    @property
    def task_ids(self) -> list[int]:
        return list(self._tasks)

    def advance(self, task: int, advance: float = 1) -> None:
        self._tasks[task][2] += advance

    def remove_task(self, task: int) -> None:
        description, total, done, start = self._tasks.pop(task)
        count = f"{done:g}/{total:g}" if total is not None else "done"
        self.console.print(f"{description}: {count} in {time.perf_counter() - start:.1f} s")


Stages = Progress | StageLines


def stages(console: Console, *, quiet: bool = False) -> Stages:
    """Bars with counts and elapsed time on a terminal, else (or ``quiet``) one line per stage."""
    if quiet or not console.is_terminal:
        return StageLines(console)
    return Progress(
        *Progress.get_default_columns()[:-1],  # the time-remaining column misleads on short stages
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def bars(progress: Stages | None) -> bool:
    """Whether ``progress`` draws live bars (Lightning's training bar may then be shown too)."""
    return isinstance(progress, Progress)


@contextmanager
def stage(
    progress: Stages | None, description: str, total: int | None = None
) -> Iterator[Callable[[], None]]:
    """A stage of ``total`` steps (None: one step of unknown length) shown while the block runs;
    yields the function that counts a step. Nothing is shown without ``progress``."""
    if progress is None:
        yield lambda: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda: progress.advance(task)
    finally:
        if task in progress.task_ids:  # not yet ended by the progress' own exit
            progress.remove_task(task)


def track(
    items: Iterable[T], progress: Stages | None, description: str, total: int | None = None
) -> Iterator[T]:
    """``items``, counted as one stage of ``progress``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with stage(progress, description, total) as step:
        for item in items:
            yield item
            step()


def lines(progress: Stages | None) -> StageLines | None:
    """``progress`` where it prints lines, else None: for the stages that draw their own bar on a
    terminal (Lightning's training loop)."""
    return progress if isinstance(progress, StageLines) else None
