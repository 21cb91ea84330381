"""Live progress bars on a terminal (Rich): imported only when bars are drawn, so a quiet or logged run never loads
Rich's live display. The figures and the choice of display live in progress.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from .progress import expected_animals

if TYPE_CHECKING:
    from ..engine.pipeline import Progress

__all__ = ["ProgressBars", "RateColumn"]


class RateColumn(ProgressColumn):
    """Items per second, from Rich's own sliding estimate of the task's speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class ProgressBars:
    """Three live bars on stderr (pages listed, animals fetched, animals posted), with rate and ETA.

    While the bars are live, Rich swaps `sys.stderr` for a proxy that prints above them; the loggers from
    `logs.configure_logging` write to whatever `sys.stderr` is per line, so log lines scroll above the bars.
    """

    def __init__(self, console: Console | None = None, *, limit: int | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.limit = limit
        self.bars = RichProgress(
            TextColumn("{task.description:<16}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            RateColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            expand=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBars:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def __call__(self, progress: Progress) -> None:
        animals = expected_animals(progress, self.limit)
        pages = progress.pages_planned
        if self.limit is not None and progress.discovered >= self.limit:
            pages = progress.pages_listed  # test mode stops listing once it has its animals: that is all of it
        rows = {
            "pages listed": (progress.pages_listed, pages, f"retries {progress.retries}"),
            "animals fetched": (progress.fetched, animals, f"quarantined {progress.quarantined}"),
            # An incremental run's unchanged animals are done without a POST: they fill the bar too, named apart.
            "animals posted": (
                progress.posted + progress.unchanged, animals,
                f"failed {progress.failed}" + (f", unchanged {progress.unchanged}" if progress.unchanged else ""),
            ),
        }
        for name, (done, total, note) in rows.items():
            if name not in self.tasks:
                # Added at the first figures, not at zero: a resume's head start is not counted as speed.
                self.tasks[name] = self.bars.add_task(name, total=total, completed=done, note=note)
            else:
                self.bars.update(self.tasks[name], total=total, completed=done, note=note)
