"""Ingest: fetched batches, each stored with its source's cursor; malformed records quarantined."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from triage.keys import stable_key
from triage.models import ITEM_SCHEMA, Mention, Rejected, cap_raw, storable
from triage.privacy.redact import storable as mask_card
from triage.privacy.storage import mask_cards, with_languages
from triage.store.base import StoreBase


def quarantine_key(source: str, reason: str, raw: str) -> str:
    """The key of a quarantined record: the same record with the same reason is kept once."""
    return stable_key(source, reason, raw, errors="replace")


class IngestSection(StoreBase):
    """Items, the sources' cursors and the quarantine."""

    def get_cursor(self, connector: str) -> Any:
        """Return the stored cursor (decoded JSON) of a source, or None before its first run."""
        cursor = self._scalar("SELECT cursor FROM connector_state WHERE connector = ?", [connector])
        return json.loads(cursor) if cursor is not None else None

    def reset_cursor(self, connector: str) -> bool:
        """Forget a source's cursor: its next run reads from the start (stable ids absorb repeats).

        Returns:
            True when there was a cursor to forget.
        """
        return self._execute("DELETE FROM connector_state WHERE connector = ?", [connector]) > 0

    def ingest(
        self,
        source: str,
        mentions: Sequence[Mention],
        rejected: Sequence[Rejected],
        cursor: Any,
        *,
        advance_cursor: bool = True,
        items: pa.Table | None = None,
    ) -> tuple[int, int]:
        """Store a fetched batch and advance the source's cursor in the same transaction.

        A crash before the commit leaves both the items and the cursor as they were, so the next run
        fetches the same batch again and the stable item ids absorb the repeat.

        Args:
            source: The source name.
            mentions: Valid mentions of the batch.
            rejected: Records that failed validation; they are quarantined with their reason.
            cursor: JSON-serialisable cursor to store once the batch is durable.
            advance_cursor: False stores the batch without touching the cursor.
            items: More valid records of the batch, already laid out as ``ITEM_SCHEMA`` rows (the
                file connector's columnar path); stored like ``mentions``.

        Returns:
            ``(new_items, new_quarantined)``: how many rows this call created.
        """
        with self.transaction():
            new_items = self.insert_items(mentions)
            if items is not None and items.num_rows:
                new_items += self.insert_item_table(items)
            new_quarantined = self.quarantine(rejected)
            if advance_cursor:
                self._insert(
                    "connector_state",
                    [{"connector": source, "cursor": json.dumps(cursor, default=str)}],
                    select="SELECT *, now() AS updated_at FROM {rows}",
                    conflict="(connector) DO UPDATE SET cursor = excluded.cursor, "
                    "updated_at = excluded.updated_at",
                )
        return new_items, new_quarantined

    def insert_items(self, mentions: Sequence[Mention]) -> int:
        """Insert mentions through one Arrow batch, ignoring ids already stored; return how many were new."""
        if not mentions:
            return 0
        table = pa.Table.from_pylist([m.to_row() for m in mentions], schema=ITEM_SCHEMA)
        return self.insert_item_table(table)

    def insert_item_table(self, table: pa.Table) -> int:
        """Insert an Arrow table laid out like ``ITEM_SCHEMA``; return how many rows were new.

        Card numbers are masked and the language detected first (README, "Privacy"): a card
        number is never stored in clear, the raw payload included.
        """
        return self._insert("items", with_languages(mask_cards(table)))

    def quarantine(self, rejected: Sequence[Rejected]) -> int:
        """Keep malformed records with their reason; the same record twice is kept once."""
        rows = []
        for r in rejected:
            # Bounded and storable whatever the connector kept: quarantine must never fail a batch.
            raw = mask_card(cap_raw(r.raw))
            reason = mask_card(storable(r.reason[:2000]) or "")
            rows.append(
                {
                    "key": quarantine_key(r.source, reason, raw),
                    "source": r.source,
                    "external_id": storable(r.external_id),
                    "reason": reason,
                    "raw": raw,
                }
            )
        return self._insert("quarantine", rows)

    def quarantined(
        self, limit: int | None = 50, source: str | None = None
    ) -> list[dict[str, Any]]:
        """Return quarantined records with their reasons, the most recent first.

        Args:
            limit: At most this many (None: all).
            source: Only this source's.
        """
        return self._rows(
            "SELECT key, source, external_id, reason, raw, received_at FROM quarantine "
            "WHERE ? IS NULL OR source = ? ORDER BY received_at DESC, source, reason LIMIT ?",
            [source, source, limit],
        )

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined records per source."""
        rows = self._rows(
            "SELECT source, count(*) AS n FROM quarantine GROUP BY source ORDER BY source"
        )
        return {str(r["source"]): int(r["n"]) for r in rows}

    def clear_quarantine(self, source: str | None = None, keys: Sequence[str] | None = None) -> int:
        """Delete quarantined records: a source's, the given keys, or (neither given) all.

        Returns:
            How many were deleted.
        """
        if keys is not None:
            if not keys:
                return 0
            return self._execute(
                "DELETE FROM quarantine WHERE list_contains(?, key)", [list(keys)]
            )
        return self._execute(
            "DELETE FROM quarantine WHERE ? IS NULL OR source = ?", [source, source]
        )
