"""The hard bound on a direct write (triage/bounded.py), on its own: events instead of a server."""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from triage.bounded import BoundedWrites

log = logging.getLogger("test.bounded")


def test_a_write_that_hangs_costs_its_wait_and_may_still_finish_later() -> None:
    now = [0.0]
    writes = BoundedWrites(log, "clicks", pause_s=5.0, writers=1, clock=lambda: now[0])
    release, finished = threading.Event(), threading.Event()

    def hung() -> str:
        release.wait(30)
        finished.set()
        return "late"

    started = time.monotonic()
    assert writes.run(hung, 0.2) is None
    assert time.monotonic() - started < 1.0
    # Paused: the next call falls back at once, without running anything.
    ran: list[int] = []
    assert writes.run(lambda: ran.append(1) or "x", 5.0) is None
    assert ran == []
    # Past the pause, but the one writer is still busy: the wait for it counts, then fall back.
    now[0] += 6.0
    started = time.monotonic()
    assert writes.run(lambda: "x", 0.2) is None
    assert 0.15 < time.monotonic() - started < 1.0
    # The hung write was never interrupted: it finishes once it can, and frees its writer.
    release.set()
    assert finished.wait(5)
    now[0] += 6.0
    assert writes.run(lambda: "ok", 5.0) == "ok"
    assert (writes.written, writes.fell_back) == (1, 3)


def test_a_store_error_falls_back_and_an_unexpected_one_too() -> None:
    writes = BoundedWrites(log, "posts", pause_s=0.0)

    def refused() -> str:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    def broken() -> str:
        raise ValueError("a bug")

    assert writes.run(refused, 5.0) is None
    assert writes.run(broken, 5.0) is None
    assert writes.run(lambda: "ok", 5.0) == "ok"
    writes.close()
    assert writes.run(lambda: "ok", 5.0) is None
    assert (writes.written, writes.fell_back) == (1, 3)
