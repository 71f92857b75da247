"""Routing: stream classified items without a route; store routes with their deliveries."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from triage.store.base import StoreBase


class RouteSection(StoreBase):
    """Items waiting for a route, the routes, and the deliveries they queue."""

    def unrouted(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Stream classified items that have no route yet, with what routing rules look at."""
        return self._stream(
            "SELECT p.item_id, i.source, i.text, i.language, p.label, p.score, p.needs_review "
            "FROM predictions p JOIN items i ON i.id = p.item_id "
            "ANTI JOIN routes r ON r.item_id = p.item_id",
            batch_size,
        )

    def insert_routes(self, routes: pa.Table, outbox: pa.Table) -> tuple[int, int]:
        """Store routes and their outbox deliveries in one transaction; return rows created."""
        with self.transaction():
            return self._insert("routes", routes), self._insert("outbox", outbox)

    def enqueue(self, outbox: pa.Table) -> int:
        """Queue deliveries (``OUTBOX_SCHEMA`` rows); keys already queued are ignored."""
        return self._insert("outbox", outbox)
