"""Writes to a server store that keep their caller waiting no longer than it can afford.

The intake answers a post, and the Slack app a click, only once the write is durable somewhere:
in the store when it answers in time, else in a spool. A connection timeout bounds only the
connecting; a server that accepts the connection and then says nothing, or a row another
transaction holds locked (a worker's claim), would keep the caller for as long as it lasts. So:

* each write runs on a thread of its own, at most ``writers`` at once; the caller waits for its
  result at most ``wait_s`` (a wait for a free thread counts against it) and is then told to fall
  back (``None``), whatever the write is doing;
* the write is not interrupted: it may still commit after its caller fell back. What the caller
  spools instead must therefore be absorbed if the same write lands later (the intake's stable
  item ids, the review audit keyed by decision id);
* after a failed or late write, calls fall back at once for ``pause_s`` (no connection per call
  while the server is away), then the next call tries the server again.

The threads are daemons: a write hung on a silent server never keeps the process from exiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from triage.store import DATABASE_ERRORS, StoreError, location

T = TypeVar("T")

# After a failed or late write, calls fall back without trying the server for this long.
PAUSE_S = 5.0
# Writes (so connections) at once.
WRITERS = 4
# Of a write's wait, how long opening the server store may take (connecting, the schema check).
OPEN_WAIT_S = 1.0
# What a store that is down, slow or refusing raises.
UNAVAILABLE: tuple[type[Exception], ...] = (StoreError, *DATABASE_ERRORS)


class BoundedWrites:
    """Runs writes with a hard bound on the caller's wait, pausing after a failure."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        pause_s: float = PAUSE_S,
        writers: int = WRITERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare (no thread runs until the first write).

        Args:
            log: Where a failure and the store's return are reported.
            what: What is written, in the messages ("posts", "decisions").
            pause_s: How long calls fall back at once after a failed or late write.
            writers: Writes at once; a call waiting for a free one counts it against its wait.
            clock: Monotonic seconds for the pause (tests inject one); waits use real time.
        """
        self.log = log
        self.what = what
        self.pause_s = pause_s
        self.clock = clock
        self.written = 0
        self.fell_back = 0
        self._slots = threading.BoundedSemaphore(writers)
        self._paused_until: float | None = None
        self._closed = False
        self._lock = threading.Lock()

    def run(self, write: Callable[[], T], wait_s: float) -> T | None:
        """Run ``write()`` and return its result, or None when the caller must fall back.

        None when paused or closed, when ``wait_s`` is spent (waiting for a free thread or for
        the write), or when the write raised. ``write`` itself must not return None.
        """
        started = time.monotonic()
        with self._lock:
            paused = self._paused_until is not None and self.clock() < self._paused_until
            if paused or self._closed or wait_s <= 0:
                self.fell_back += 1
                return None
        if not self._slots.acquire(timeout=wait_s):
            self._failed(f"{self.what} waited {wait_s:.1f}s for a free connection")
            return None
        future: Future[T] = Future()
        threading.Thread(
            target=self._call, args=(write, future), name=f"bounded-{self.what}", daemon=True
        ).start()
        try:
            result = future.result(timeout=max(0.0, wait_s - (time.monotonic() - started)))
        except FutureTimeout:
            self._failed(f"no answer from the store within {wait_s:.1f}s")
            return None
        except UNAVAILABLE as exc:
            self._failed(str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        except Exception:
            # What the store cannot take goes the fallback's way (which quarantines or audits it).
            self.log.exception("writing %s failed; they fall back", self.what)
            self._failed("unexpected error")
            return None
        with self._lock:
            self.written += 1
            if self._paused_until is not None:
                self._paused_until = None
                self.log.info("the store is back: %s are written to it again", self.what)
        return result

    def _call(self, write: Callable[[], T], future: Future[T]) -> None:
        try:
            future.set_result(write())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, if it still waits
            future.set_exception(exc)
        finally:
            self._slots.release()

    def _failed(self, why: str) -> None:
        with self._lock:
            self.fell_back += 1
            first = self._paused_until is None
            self._paused_until = self.clock() + self.pause_s
        if first:
            self.log.warning(
                "store unavailable (%s); %s are spooled, the store is tried again in %.0fs",
                location.shown(why),
                self.what,
                self.pause_s,
            )

    def close(self) -> None:
        """Take no more writes; those running finish on their own (daemon threads)."""
        with self._lock:
            self._closed = True
