"""Routing: stream classified items without a route; store routes with their deliveries."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from triage.store.floors import FloorSection


class RouteSection(FloorSection):
    """Items waiting for a route, the routes, and the deliveries they queue."""

    def unrouted(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Stream classified items that have no route yet, with what routing rules look at.

        Only items above the stage's floor are looked at (:mod:`triage.store.floors`).
        """
        # The unrouted items first, then their predictions: joining predictions to every item
        # first ran out of memory on six million items under routing's 384MB.
        return self._stream(
            "SELECT p.item_id, i.source, i.text, i.language, p.label, p.score, p.needs_review "
            f"FROM (SELECT i.* FROM {self._items_above('routes', having=False)}) AS i "
            "JOIN predictions p ON p.item_id = i.id",
            batch_size,
            [self.pending_floor("route")],
        )

    def insert_routes(self, routes: pa.Table, outbox: pa.Table) -> tuple[int, int]:
        """Store routes and their outbox deliveries in one transaction; return rows created."""
        with self.transaction():
            return self._insert("routes", routes), self._insert("outbox", outbox)

    def enqueue(self, outbox: pa.Table) -> int:
        """Queue deliveries (``OUTBOX_SCHEMA`` rows); keys already queued are ignored."""
        return self._insert("outbox", outbox)
