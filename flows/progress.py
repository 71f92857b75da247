"""Progress of a triage run, per stage and per batch: shown by ``triage run``, logged in Prefect.

The flow reports what it does through :func:`emit`; whoever runs it decides how to show it. The
command line subscribes a rich display (``triage.cli_progress``); a deployment's run has no
subscriber, and every event goes to the run's log instead, so a long backfill is never silent in
the Prefect UI either.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Stage = Literal["review", "fetch", "classify", "route", "deliver"]


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a run: a stage starting or finishing, or one batch of it stored.

    ``done`` counts what the stage (for ``fetch``: the source) has handled so far: records read,
    items classified or routed, deliveries made. ``new`` is how many of the fetched records were
    new items.
    """

    stage: Stage
    kind: Literal["start", "batch", "finish"]
    source: str | None = None
    batch: int = 0
    done: int = 0
    new: int | None = None
    seconds: float | None = None

    def describe(self) -> str:
        """One line for a log or a terminal."""
        what = f"{self.stage} {self.source}" if self.source else self.stage
        if self.kind == "start":
            return f"{what}: started"
        counts = f"{self.done:,}" + (f" read, {self.new:,} new" if self.new is not None else "")
        if self.kind == "batch":
            return f"{what}: batch {self.batch}, {counts} so far"
        took = f" in {self.seconds:.1f}s" if self.seconds is not None else ""
        return f"{what}: {counts}{took}"


Listener = Callable[[Event], None]
_listeners: list[Listener] = []
log = logging.getLogger("triage.progress")

# Test-only: "stage:batch" (e.g. "classify:2") makes the process SIGKILL itself right after that
# batch is handed to the store, so the crash tests can hit each stage at a known point.
KILL_ENV = "TRIAGE_TEST_KILL_AT"


def subscribe(listener: Listener) -> Callable[[], None]:
    """Send every event of this process's runs to ``listener``; returns the unsubscribe call."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(event: Event) -> None:
    """Report one event to the subscribers, or to the run's log when nobody is listening."""
    if _listeners:
        for listener in tuple(_listeners):
            listener(event)
    else:
        _run_logger().info("%s", event.describe())
    if event.kind == "batch" and os.environ.get(KILL_ENV) == f"{event.stage}:{event.batch}":
        os.kill(os.getpid(), signal.SIGKILL)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    # Inside a flow or task run, Prefect's run logger sends the line to the run's log in the UI.
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log
