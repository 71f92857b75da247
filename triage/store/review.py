"""Marketing's review: decisions and their audit trail, corrections, the queue, reminders, batches.

Dialect: ``unnest(?)`` over a list parameter is DuckDB's (``= ANY(%s)`` in PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from triage.store.base import StoreBase


class ReviewSection(StoreBase):
    """What reviewers decided, and what the review channel shows."""

    def lock_for_decisions(self, item_ids: Sequence[str]) -> None:
        """Hold these items, until the transaction ends, against other writers deciding them.

        Nothing to do on the embedded file: it admits one writing process, and the review paths
        in it take turns (``triage.review.STORE_LOCK``). A server backend locks.
        """
        del item_ids

    def audited_decisions(self, decision_ids: Sequence[str]) -> set[str]:
        """Return which of these spooled decision ids were already applied (any outcome)."""
        return self._present("review_audit", "decision_id", decision_ids)

    def decided_items(self, item_ids: Sequence[str]) -> set[str]:
        """Which of these items a review decision has settled already (the first one wins)."""
        return self._present("review_decisions", "item_id", item_ids)

    def relabel_predictions(self, rows: pa.Table) -> None:
        """Overwrite items' labels with reviewers' (``item_id``, ``label``, ``labels``).

        The model's label stays in the audit trail and in ``training_examples.previous_label``.
        """
        self._update_from(
            rows,
            "UPDATE predictions SET label = c.label, labels = c.labels, needs_review = false, "
            "review_reason = 'relabelled by a reviewer' FROM {rows} c "
            "WHERE predictions.item_id = c.item_id",
            like="predictions",
        )

    def set_routes(self, rows: pa.Table) -> None:
        """Change items' routes after reviewers' decisions (``item_id``, ``department``,
        ``state``, ``rule``)."""
        self._update_from(
            rows,
            "UPDATE routes SET department = c.department, state = c.state, rule = c.rule, "
            "routed_at = now() FROM {rows} c WHERE routes.item_id = c.item_id",
            like="routes",
        )

    def add_training_examples(self, rows: pa.Table) -> None:
        """Keep reviewers' corrections as training examples, the text copied from each item.

        Columns: ``item_id``, ``label``, ``previous_label``, ``decided_by``, ``decided_at``.
        """
        self._insert(
            "training_examples",
            rows,
            select="SELECT i.id AS item_id, i.text, c.label, c.previous_label, c.decided_by, "
            "c.decided_at FROM {rows} c JOIN items i ON i.id = c.item_id",
            conflict="(item_id) DO UPDATE SET label = excluded.label, "
            "decided_by = excluded.decided_by, decided_at = excluded.decided_at",
        )

    def insert_review_decisions(self, rows: list[dict[str, Any]]) -> int:
        """Store the decisions that settle items; one already settled keeps its first decision."""
        return self._insert("review_decisions", rows)

    def insert_review_audit(self, rows: list[dict[str, Any]]) -> int:
        """Append clicks to the audit trail (idempotent on ``decision_id``)."""
        return self._insert("review_audit", rows)

    def training_examples(self) -> list[dict[str, Any]]:
        """Every correction as ``{text, label}``, oldest first."""
        return self._rows(
            "SELECT text, label FROM training_examples ORDER BY decided_at, item_id"
        )

    def unannounced_decisions(self, limit: int = 500) -> list[dict[str, Any]]:
        """Decisions whose Slack message has not been updated yet (e.g. after a crash)."""
        return self._rows(
            "SELECT * FROM review_decisions WHERE message_updated_at IS NULL "
            "AND channel IS NOT NULL AND message_ts IS NOT NULL ORDER BY applied_at LIMIT ?",
            [limit],
        )

    def _stamp_now(self, table: str, column: str, key: str, values: Sequence[str]) -> None:
        # Set a timestamp column to now() on the rows whose key is among ``values``.
        if values:
            self._execute(
                f"UPDATE {table} SET {column} = now() WHERE {key} IN (SELECT unnest(?))",
                [list(values)],
            )

    def mark_message_updated(self, item_ids: Sequence[str]) -> None:
        """Record that the review messages of these items now show their decision."""
        self._stamp_now("review_decisions", "message_updated_at", "item_id", item_ids)

    def unnotified_losers(self, limit: int = 500) -> list[dict[str, Any]]:
        """Clicks that lost to an earlier decision and whose reviewer has not been told yet."""
        return self._rows(
            "SELECT a.decision_id, a.user_id, a.response_url, d.action, d.value, d.user_id "
            "AS winner_id, d.user_name AS winner_name, d.decided_at AS winner_at "
            "FROM review_audit a JOIN review_decisions d ON d.item_id = a.item_id "
            "WHERE a.outcome = 'superseded' AND a.notified_at IS NULL "
            "AND a.response_url IS NOT NULL ORDER BY a.recorded_at LIMIT ?",
            [limit],
        )

    def mark_notified(self, decision_ids: Sequence[str]) -> None:
        """Record that the reviewers of these losing clicks were told who won."""
        self._stamp_now("review_audit", "notified_at", "decision_id", decision_ids)

    def review_queue(self, limit: int = 20) -> dict[str, Any]:
        """Items awaiting review: counts per label and department, and the oldest ones."""
        base = (
            "FROM routes r JOIN predictions p ON p.item_id = r.item_id "
            "JOIN items i ON i.id = r.item_id WHERE r.state = 'awaiting_review'"
        )
        groups = self._rows(
            "SELECT p.label, coalesce(r.department, 'none') AS department, count(*) AS count, "
            f"min(r.routed_at) AS oldest {base} GROUP BY 1, 2 ORDER BY 4, 1, 2"
        )
        oldest = self._rows(
            "SELECT i.id, i.source, i.text, p.label, p.score, p.needs_review, r.department, "
            f"r.routed_at {base} ORDER BY r.routed_at, i.seq LIMIT ?",
            [limit],
        )
        return {
            "total": sum(int(g["count"]) for g in groups),
            "groups": [{**g, "count": int(g["count"])} for g in groups],
            "oldest": oldest,
        }

    def overdue_reviews(
        self, destination: str, routed_before: datetime, period: int, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Items routed before ``routed_before``, awaiting review, not reminded in ``period``.

        Only items whose review message was posted (``external_ref`` known) qualify, because the
        reminder is a reply to that message.
        """
        return self._rows(
            "SELECT r.item_id, r.routed_at, o.external_ref FROM routes r "
            "JOIN outbox o ON o.item_id = r.item_id AND o.kind = 'review' "
            "AND o.destination = ? AND o.state = 'sent' AND o.external_ref IS NOT NULL "
            "WHERE r.state = 'awaiting_review' AND r.routed_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM review_reminders m WHERE m.item_id = r.item_id "
            "AND m.period = ?) ORDER BY r.routed_at LIMIT ?",
            [destination, routed_before, period, limit],
        )

    def record_reminders(self, item_ids: Sequence[str], period: int) -> None:
        """Remember that these items were re-surfaced in ``period`` (once per period)."""
        table = pa.table(
            {
                "item_id": pa.array(list(item_ids), pa.string()),
                "period": pa.array([period] * len(item_ids), pa.int64()),
            }
        )
        self._insert("review_reminders", table, select="SELECT *, now() AS sent_at FROM {rows}")

    def due_review_items(self, destination: str) -> list[dict[str, Any]]:
        """Review deliveries due to ``destination`` with what a batch summary shows about them."""
        return self._rows(
            "SELECT o.item_id, o.created_at, coalesce(p.needs_review, false) AS needs_review, "
            "p.label, coalesce(r.department, 'none') AS department FROM outbox o "
            "LEFT JOIN predictions p ON p.item_id = o.item_id "
            "LEFT JOIN routes r ON r.item_id = o.item_id "
            "WHERE o.destination = ? AND o.kind = 'review' "
            "AND o.state IN ('pending', 'sending', 'failed') "
            "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())",
            [destination],
        )

    def review_batch(self, key: str) -> dict[str, Any] | None:
        """Return a batch parent message recorded under ``key``, if any."""
        return self._one("SELECT * FROM review_batches WHERE key = ?", [key])

    def record_review_batch(
        self, key: str, destination: str, channel: str, ts: str, items: int
    ) -> None:
        """Remember a batch parent message so a crashed run threads under the same parent."""
        self._insert(
            "review_batches",
            [{"key": key, "destination": destination, "channel": channel, "ts": ts, "items": items}],
        )

    def recent_review_threads(self, destination: str, limit: int = 5) -> list[str]:
        """Thread timestamps of the latest batch parents (for reconciling threaded replies)."""
        rows = self._rows(
            "SELECT ts FROM review_batches WHERE destination = ? ORDER BY created_at DESC LIMIT ?",
            [destination, limit],
        )
        return [str(r["ts"]) for r in rows]
