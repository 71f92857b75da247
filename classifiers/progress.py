"""Progress output for long classifier work (training, cross-source evaluation).

On a terminal it draws a rich progress bar (steps done, elapsed, time left) under the log lines;
elsewhere (CI logs, pipes, tests) it prints one plain line per finished step with the share done
and an estimate of the time left, so a long run never looks hung and its log stays readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts the steps of a long job and reports them.

    Example:
        >>> with Progress("training", total=3, log=print, rich=False) as progress:
        ...     progress.advance("epoch 1")  # doctest: +ELLIPSIS
        [training 1/3  33%  elapsed 0:00  left ...] epoch 1
    """

    def __init__(
        self,
        title: str,
        total: int,
        log: Callable[[str], None],
        rich: bool | None = None,
    ) -> None:
        """Start counting.

        Args:
            title: What is being done ("training", "leave-one-source-out").
            total: How many steps the job has.
            log: Where plain lines go (``print`` or the CLI's echo).
            rich: Draw a rich bar; None decides by whether stderr is a terminal.
        """
        self.title = title
        self.total = max(1, total)
        self.done = 0
        self.log = log
        self.started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        if rich if rich is not None else sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task = self._bar.add_task(title, total=self.total)

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def note(self, message: str) -> None:
        """Print a line without counting a step (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)
        else:
            self.log(message)

    def advance(self, message: str, steps: int = 1) -> None:
        """Count finished steps and report them with the share done and the time left."""
        self.done = min(self.total, self.done + steps)
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=message)
            self._bar.console.print(message, highlight=False, markup=False)
            return
        share = self.done / self.total
        self.log(
            f"[{self.title} {self.done}/{self.total}  {share:4.0%}  elapsed {_clock(elapsed)}  "
            f"left {_clock(left)}] {message}"
        )
