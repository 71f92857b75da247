"""Progress of ``triage run`` on stderr: a live display on a terminal, plain lines in a log.

stdout keeps only the summary (or the JSON), so scripts that read it are not disturbed.

- On a terminal: one live line per source and stage (records read, new, batches) that disappears
  when the run ends, leaving the summary.
- Not on a terminal (cron, CI, a pipe): a line per batch once a source or stage runs to more
  than one batch (a backfill), so long work is never silent; short runs print nothing extra.
- ``-v``: a line for every stage's start and end and every batch, on a terminal too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from flows.progress import Event, subscribe


class _Lines:
    """Plain lines on stderr: every event with ``verbose``, else the batches of long stages."""

    def __init__(self, console: Console, verbose: bool) -> None:
        self.console = console
        self.verbose = verbose

    def __call__(self, event: Event) -> None:
        # A stage that needs a second batch is a backfill: from then on, say how far it got.
        if self.verbose or (event.kind == "batch" and event.batch >= 2):
            self.console.print(f"{time.strftime('%H:%M:%S')} {event.describe()}", highlight=False)


class _Live:
    """One live row per source and stage, on a terminal."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.rows: dict[str, TaskID] = {}

    def __call__(self, event: Event) -> None:
        key = f"{event.stage} {event.source}" if event.source else event.stage
        if key not in self.rows:
            self.rows[key] = self.progress.add_task(key, total=None, detail="")
        row = self.rows[key]
        detail = "" if event.kind == "start" else event.describe().split(": ", 1)[1]
        self.progress.update(row, detail=detail)
        if event.kind == "finish":
            self.progress.stop_task(row)


@contextmanager
def show_progress(verbose: bool, console: Console | None = None) -> Iterator[Console]:
    """Show the run's progress on stderr while the block runs.

    Args:
        verbose: Print every stage and batch as a line (``triage run -v``).
        console: Where to write (default: stderr).

    Yields:
        The console, for any other message the command wants on stderr.
    """
    console = console or Console(stderr=True)
    if console.is_terminal and not verbose:
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description:<28}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            unsubscribe = subscribe(_Live(progress))
            try:
                yield console
            finally:
                unsubscribe()
        return
    unsubscribe = subscribe(_Lines(console, verbose))
    try:
        yield console
    finally:
        unsubscribe()
