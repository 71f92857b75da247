"""The outbox: due deliveries, what each needs about its item, and the delivery state machine.

States: ``pending`` → ``sending`` (committed before the call out) → ``sent`` / ``previewed``, or
``failed`` (retried with backoff) → ``dead`` after ``max_attempts``. A row left ``sending`` by a
crash is looked up at its destination before anything is sent again (README, "How it works").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from triage.models import DeliveryItem
from triage.store.base import StoreBase, chunks, marks


class OutboxSection(StoreBase):
    """Deliveries and their states."""

    def due_deliveries(
        self, limit: int, destinations: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Return outbox rows ready to send (pending, retry due, or left mid-send by a crash)."""
        sql = (
            "SELECT o.key, o.item_id, o.destination, o.kind, o.state, o.attempts "
            "FROM outbox o WHERE o.state IN ('pending', 'sending', 'failed') "
            "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())"
        )
        params: list[Any] = []
        if destinations is not None:
            sql += " AND o.destination IN (SELECT unnest(?))"
            params.append(list(destinations))
        # Within one routing batch, items flagged for review go first (reviewers see them on top).
        sql += (
            " ORDER BY o.created_at, (SELECT p.needs_review FROM predictions p "
            "WHERE p.item_id = o.item_id) DESC NULLS LAST, o.key LIMIT ?"
        )
        params.append(limit)
        return self._rows(sql, params)

    def delivery_context(self, item_ids: Sequence[str]) -> dict[str, DeliveryItem]:
        """Return everything a message needs about each item: the mention, prediction and route."""
        out: dict[str, DeliveryItem] = {}
        for chunk in chunks(item_ids):
            # A list of parameters, not unnest(?): DuckDB then looks the ids up in the primary
            # key's index instead of scanning the tables (220k items: 0.07 s instead of 0.4 s).
            rows = self._rows(
                "SELECT i.id, i.source, i.external_id, i.url, i.author_handle, i.author_name, "
                "i.author_url, i.author_followers, i.text, i.created_at, i.source_type, "
                "p.label, p.labels, p.score, p.scores, p.needs_review, p.review_reason, "
                "p.model_version, r.department, r.state AS route_state "
                "FROM items i JOIN predictions p ON p.item_id = i.id "
                f"LEFT JOIN routes r ON r.item_id = i.id WHERE i.id IN ({marks(chunk)})",
                chunk,
            )
            for row in rows:
                item = DeliveryItem.from_row(row)
                out[item.id] = item
        return out

    def mark_sending(self, key: str) -> None:
        """Record that a send is about to start, so a crash after it is reconciled, not repeated."""
        self._execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE key = ?", [key]
        )

    def mark_sent(self, key: str, external_ref: str | None) -> None:
        """Record a confirmed delivery and the destination's reference for it."""
        self._mark_done(key, "sent", external_ref)

    def mark_previewed(self, key: str, path: str | None) -> None:
        """Record that a delivery was written as a JSON preview (nothing was posted)."""
        self._mark_done(key, "previewed", path)

    def _mark_done(self, key: str, state: str, external_ref: str | None) -> None:
        self._execute(
            "UPDATE outbox SET state = ?, sent_at = now(), external_ref = ?, last_error = NULL "
            "WHERE key = ?",
            [state, external_ref, key],
        )

    def mark_lookup_failed(self, key: str, error: str, retry_in_s: float, max_attempts: int) -> str:
        """Record a failed reconciliation of a delivery left ``sending``; return the new state.

        The row stays ``sending`` (so the next attempt looks the key up again instead of sending
        blindly, which could post twice) until ``max_attempts`` lookups failed: then it is dead.
        """
        state = self._scalar(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
            "state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE 'sending' END "
            "WHERE key = ? RETURNING state",
            [error[:2000], datetime.now(UTC) + timedelta(seconds=retry_in_s), max_attempts, key],
        )
        return str(state) if state is not None else "dead"

    def mark_failed(self, key: str, error: str, retry_in_s: float, max_attempts: int) -> str:
        """Record a failed attempt; dead-letter it after ``max_attempts``. Return the new state."""
        attempts = self._scalar("SELECT attempts FROM outbox WHERE key = ?", [key])
        attempts = int(attempts) if attempts is not None else max_attempts
        state = "dead" if attempts >= max_attempts else "failed"
        self._execute(
            "UPDATE outbox SET state = ?, last_error = ?, next_attempt_at = ? WHERE key = ?",
            [state, error[:2000], datetime.now(UTC) + timedelta(seconds=retry_in_s), key],
        )
        return state

    def retry_dead(self, destination: str | None = None) -> int:
        """Put dead-lettered deliveries back in the queue; return how many."""
        sql = (
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = NULL "
            "WHERE state = 'dead'"
        )
        params: list[Any] = []
        if destination:
            sql += " AND destination = ?"
            params.append(destination)
        return self._execute(sql, params)

    def unannounced_dead(self, limit: int = 100) -> list[dict[str, Any]]:
        """Dead-lettered deliveries whose current death has not been announced yet."""
        return self._rows(
            "SELECT o.key, o.item_id, o.destination, o.kind, o.attempts, o.last_error, "
            "o.next_attempt_at AS died_at FROM outbox o WHERE o.state = 'dead' "
            "AND NOT EXISTS (SELECT 1 FROM dead_letter_alerts a WHERE a.key = o.key "
            "AND a.died_at = o.next_attempt_at) ORDER BY o.next_attempt_at, o.key LIMIT ?",
            [limit],
        )

    def mark_dead_announced(self, key: str, died_at: datetime, ref: str | None) -> None:
        """Remember that a dead-lettered delivery was announced."""
        self._insert("dead_letter_alerts", [{"key": key, "died_at": died_at, "ref": ref}])
