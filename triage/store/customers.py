"""Customers: the mentions behind the profiles, manual merges, stage snapshots, handoff outcomes.

Profiles and stages are derived (:mod:`triage.customers`) from the stored, classified items; the
store keeps what cannot be derived again: the manual merges, what each handoff became at its
destination (read back by ``flows/readback.py``), and the latest stage of each customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from triage.store.base import StoreBase

# The item columns :meth:`triage.customers.Mention.from_row` reads, with the current label and
# department (a reviewer's correction has already replaced the model's in both tables).
_MENTION_COLUMNS = (
    "i.id, i.source, i.source_type, i.created_at, i.author_handle, i.author_name, i.author_url, "
    "i.author_followers, i.text, i.url, p.label, r.department"
)
_OUTCOME_UPDATE = (
    "(key) DO UPDATE SET state = excluded.state, external_state = excluded.external_state, "
    "first_response_at = excluded.first_response_at, resolved_at = excluded.resolved_at, "
    "comments = excluded.comments, checked_at = excluded.checked_at, last_error = NULL, "
    "department = excluded.department, target_id = excluded.target_id, updated_at = now()"
)


class CustomerSection(StoreBase):
    """Customer profiles' inputs and outputs."""

    def customer_mentions(self) -> list[dict[str, Any]]:
        """Every classified item with its author, label and department, oldest first."""
        return self._rows(
            f"SELECT {_MENTION_COLUMNS} FROM items i JOIN predictions p ON p.item_id = i.id "
            "LEFT JOIN routes r ON r.item_id = i.id ORDER BY i.created_at, i.id"
        )

    def review_backlog(self) -> list[dict[str, Any]]:
        """Items waiting for marketing's review, oldest first."""
        return self._rows(
            "SELECT i.id AS item_id, p.label, i.source, r.routed_at AS waiting_since, i.url "
            "FROM routes r JOIN items i ON i.id = r.item_id JOIN predictions p ON p.item_id = i.id "
            "WHERE r.state = 'awaiting_review' ORDER BY r.routed_at, i.id"
        )

    # ------------------------------------------------------------ manual merges
    def add_customer_merge(self, a_key: str, b_key: str, merged_by: str | None = None) -> int:
        """Record a manual merge of two identity keys (the same pair twice is kept once)."""
        a, b = sorted((a_key, b_key))
        return self._insert("customer_merges", [{"a_key": a, "b_key": b, "merged_by": merged_by}])

    def customer_merges(self) -> list[tuple[str, str]]:
        """Every manual merge, oldest first."""
        rows = self._rows("SELECT a_key, b_key FROM customer_merges ORDER BY merged_at, a_key")
        return [(str(r["a_key"]), str(r["b_key"])) for r in rows]

    # ------------------------------------------------------------ stage snapshots
    def customer_snapshot(self) -> dict[str, dict[str, Any]]:
        """The stored profiles by id (the last refresh)."""
        return {str(r["id"]): r for r in self._rows("SELECT * FROM customer_profiles")}

    def replace_customer_profiles(self, rows: Sequence[dict[str, Any]]) -> int:
        """Replace the stored profiles with a fresh derivation, in one transaction."""
        with self.transaction():
            self._execute("DELETE FROM customer_profiles")
            return self._insert("customer_profiles", rows)

    # ------------------------------------------------------------ handoff outcomes
    def readback_targets(self, since: datetime) -> list[dict[str, Any]]:
        """Confirmed handoffs to external tools made since ``since``, with what is known of them.

        One row per handoff: its key, item, destination, system, target and department, the time
        it was made, and the outcome columns read back so far (None before the first read).
        """
        return self._rows(
            "SELECT h.key, h.item_id, h.destination, h.system, h.target_id, h.url, "
            "coalesce(h.done_at, h.created_at) AS handed_at, r.department, o.state, "
            "o.first_response_at, o.resolved_at, o.external_state, o.comments "
            "FROM handoff_refs h LEFT JOIN routes r ON r.item_id = h.item_id "
            "LEFT JOIN handoff_outcomes o ON o.key = h.key "
            "WHERE h.state = 'done' AND h.target_id IS NOT NULL "
            "AND coalesce(h.done_at, h.created_at) >= ? ORDER BY h.destination, h.key",
            [since],
        )

    def upsert_outcomes(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store read-back outcomes (one row per handoff key), replacing earlier reads."""
        return self._insert("handoff_outcomes", rows, conflict=_OUTCOME_UPDATE)

    def record_read_failures(self, rows: Sequence[dict[str, Any]]) -> int:
        """Record failed reads: a handoff never read is stored as ``unknown``; one read before
        keeps its last known outcome. Either way the error is kept in ``last_error``."""
        return self._insert(
            "handoff_outcomes",
            rows,
            conflict="(key) DO UPDATE SET last_error = excluded.last_error, "
            "checked_at = excluded.checked_at, updated_at = now()",
        )

    def handoff_outcomes(self) -> list[dict[str, Any]]:
        """Every stored outcome."""
        return self._rows("SELECT * FROM handoff_outcomes ORDER BY handed_at, key")
