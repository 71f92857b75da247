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

Writes run on threads of their own with a hard bound on the wait (:mod:`triage.bounded`), so a
hung connection delays no answer and the number of connections the intake opens stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from connectors import webhook
from connectors.base import SourceContext
from triage.bounded import OPEN_WAIT_S, PAUSE_S, UNAVAILABLE, WRITERS, BoundedWrites
from triage.config import Config
from triage.privacy.storage import with_languages
from triage.store import location, open_store

log = logging.getLogger("triage.intake")

# How long a post waits for its write before it is spooled instead.
WRITE_WAIT_S = 2.0


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
        self.writes = BoundedWrites(log, "posts", pause_s=pause_s, writers=writers, clock=clock)

    @property
    def written(self) -> int:
        """Posts stored directly."""
        return self.writes.written

    @property
    def spooled(self) -> int:
        """Posts the caller was told to spool."""
        return self.writes.fell_back

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
        return bool(self.writes.run(lambda: self._store(line, received, record_id), wait))

    def _store(self, line: bytes, received: datetime, record_id: str) -> bool:
        batch = webhook.post_batch(self.source, line, received, record_id)
        with open_store(self.database, wait_s=OPEN_WAIT_S) as store:
            # The flow's own ingest, without the cursor: the spool's cursor is the source's.
            store.ingest(
                self.source.name, [], batch.rejected, None, advance_cursor=False, items=batch.items
            )
        return True

    def close(self) -> None:
        """Stop taking writes; writes already running finish on their own."""
        self.writes.close()


def webhook_source(config: Config, spool_dir: Path) -> SourceContext | None:
    """The enabled ``webhook`` source that reads ``spool_dir`` (what the intake's posts become),
    or None when none does."""
    wanted = spool_dir.expanduser().resolve()
    for source in config.sources:
        if not source.enabled or source.type != "webhook":
            continue
        ctx = SourceContext(name=source.name, settings=source.settings, base_dir=config.path.parent)
        if ctx.path("spool_dir").resolve() == wanted:
            return ctx
    return None


def direct_writer(config: Config, spool_dir: Path) -> DirectWriter | None:
    """The direct writer for an intake spooling to ``spool_dir``, or None to spool every post.

    None for the embedded file store (one writing process: a flow run), and when no enabled
    ``webhook`` source reads ``spool_dir`` (the posts' source name and settings come from it).
    """
    if not location.is_server(config.database):
        return None
    source = webhook_source(config, spool_dir)
    if source is not None:
        return DirectWriter(str(config.database), source)
    log.warning(
        "no enabled webhook source reads %s: every post is spooled (add one with spool_dir: %s)",
        spool_dir,
        spool_dir,
    )
    return None
