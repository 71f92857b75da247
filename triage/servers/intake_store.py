"""The intake's direct write: on a server store (PostgreSQL), each post is stored before its 202.

The embedded DuckDB file admits one writing process, so there the intake only spools (a flow run
reads the spool through the ``webhook`` source). A PostgreSQL store takes concurrent writers, so
the intake stores each accepted post itself, in one transaction, as the item the ``webhook``
source would have read from its spool line (:func:`connectors.webhook.post_batch`: the same item
id, fields and quarantine reason), and the spool becomes the fallback:

* the write gets at most ``wait_s`` (and never more than the request's deadline leaves); when the
  server is down, slow or refuses, the post is spooled exactly as on the file store (fsynced
  before the 202), and the ``webhook`` source reads it on a later run;
* after a failed or late write, posts go straight to the spool for ``pause_s`` (no connection
  attempt per post while the server is away), then the next post tries the server again;
* a write that answered too late may still commit after its post was spooled: the spooled copy
  then has the same item id and is absorbed when the source reads it (stored once either way).

Writes run on a small pool of threads, so a hung connection delays no answer and the number of
connections the intake opens stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path

from connectors import webhook
from connectors.base import SourceContext
from triage.config import Config
from triage.privacy.storage import with_languages
from triage.store import DATABASE_ERRORS, StoreError, location, open_store

log = logging.getLogger("triage.intake")

# How long a post waits for its write before it is spooled instead, and how long opening the
# store may take of that (connecting, the schema check).
WRITE_WAIT_S = 2.0
OPEN_WAIT_S = 1.0
# After a failed or late write, posts are spooled without trying the server for this long.
PAUSE_S = 5.0
# Writes (so connections) at once; a post waiting for a free one counts against its wait.
WRITERS = 4
# What a store that is down, slow or refusing raises.
UNAVAILABLE: tuple[type[Exception], ...] = (StoreError, *DATABASE_ERRORS)


class DirectWriter:
    """Stores accepted posts in a server store as one ``webhook`` source's items."""

    def __init__(
        self,
        database: str,
        source: SourceContext,
        *,
        wait_s: float = WRITE_WAIT_S,
        pause_s: float = PAUSE_S,
        writers: int = WRITERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare the writer (nothing is opened until the first post).

        Args:
            database: The ``postgresql://`` URL of the store.
            source: The enabled ``webhook`` source that reads this server's spool folder.
            wait_s: The longest a post waits for its write before it is spooled.
            pause_s: How long posts go straight to the spool after a failed or late write.
            writers: Writes (connections) at once.
            clock: Monotonic seconds, for the pause (tests inject one).
        """
        self.database = database
        self.source = source
        self.wait_s = wait_s
        self.pause_s = pause_s
        self.clock = clock
        self.written = 0
        self.spooled = 0
        self._paused_until: float | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="intake-store")

    def warm_up(self) -> None:
        """Build what the first write would otherwise build within its wait (the language
        detector, about a second) and check the store; a store that is away is only logged."""
        sample = b'{"id": "warm-up", "text": "Warming up the intake."}\n'
        batch = webhook.post_batch(self.source, sample, datetime.now(UTC), "warm-up")
        if batch.items is not None:
            with_languages(batch.items)
        try:
            with open_store(self.database, wait_s=OPEN_WAIT_S):
                pass
        except UNAVAILABLE as exc:
            log.warning("store not available at start (%s); posts are spooled until it is", exc)

    def write(self, line: bytes, received: datetime, record_id: str, budget_s: float) -> bool:
        """Store one post in its own transaction; False when the caller must spool it instead.

        Args:
            line: The post's spool line (see :func:`triage.servers.intake.spool_line`).
            received: When it was accepted.
            record_id: Its id (the answer's ``id``).
            budget_s: What the request's deadline leaves; the wait is never longer.

        Returns:
            True once the post is committed (or was stored before: a replay), else False.
        """
        wait = min(self.wait_s, budget_s)
        with self._lock:
            paused = self._paused_until is not None and self.clock() < self._paused_until
            if paused or wait <= 0:
                self.spooled += 1
                return False
        future = self._pool.submit(self._store, line, received, record_id)
        try:
            future.result(timeout=wait)
        except FutureTimeout:
            future.cancel()
            self._failed(f"no answer from the store within {wait:.1f}s")
            return False
        except UNAVAILABLE as exc:
            self._failed(str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__)
            return False
        except Exception:
            # A post the store cannot take is spooled (and quarantined or stored by the source).
            log.exception("storing post %s failed; spooled instead", record_id)
            self._failed("unexpected error")
            return False
        with self._lock:
            self.written += 1
            if self._paused_until is not None:
                self._paused_until = None
                log.info("the store is back: posts are written to it again")
        return True

    def _store(self, line: bytes, received: datetime, record_id: str) -> None:
        batch = webhook.post_batch(self.source, line, received, record_id)
        with open_store(self.database, wait_s=OPEN_WAIT_S) as store:
            # The flow's own ingest, without the cursor: the spool's cursor is the source's.
            store.ingest(
                self.source.name, [], batch.rejected, None, advance_cursor=False, items=batch.items
            )

    def _failed(self, why: str) -> None:
        with self._lock:
            self.spooled += 1
            first = self._paused_until is None
            self._paused_until = self.clock() + self.pause_s
        if first:
            log.warning(
                "store unavailable (%s); posts are spooled, the store is tried again in %.0fs",
                location.shown(why),
                self.pause_s,
            )

    def close(self) -> None:
        """Stop taking writes; writes already running finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def direct_writer(config: Config, spool_dir: Path) -> DirectWriter | None:
    """The direct writer for an intake spooling to ``spool_dir``, or None to spool every post.

    None for the embedded file store (one writing process: a flow run), and when no enabled
    ``webhook`` source reads ``spool_dir`` (the posts' source name and settings come from it).
    """
    if not location.is_server(config.database):
        return None
    base = config.path.parent
    wanted = spool_dir.expanduser().resolve()
    for source in config.sources:
        if not source.enabled or source.type != "webhook":
            continue
        ctx = SourceContext(name=source.name, settings=source.settings, base_dir=base)
        if ctx.path("spool_dir").resolve() == wanted:
            return DirectWriter(str(config.database), ctx)
    log.warning(
        "no enabled webhook source reads %s: every post is spooled (add one with spool_dir: %s)",
        spool_dir,
        spool_dir,
    )
    return None
