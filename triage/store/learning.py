"""The learning loop's rows: corrections (imported and from Slack), drift inputs and drift alerts.

Reviewers' Slack decisions are not copied into ``corrections``: they already live in
``training_examples`` (relabels and spam marks) and ``review_decisions`` (reroutes), and are read
from there, so there is one record of each click. ``corrections`` holds what came from files.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from triage.store.base import StoreBase, chunks, marks

_CORRECTION_COLUMNS = (
    "id, text_key, text, label, source, provenance_kind, provenance, line, item_id, "
    "previous_label, created_at"
)


class LearningSection(StoreBase):
    """Corrections in and out, the predictions drift is computed from, drift alerts."""

    def insert_corrections(self, rows: pa.Table) -> int:
        """Append corrections (``classifiers.corrections.to_arrow`` rows); a known id is a no-op.

        Returns:
            How many rows were new.
        """
        return self._insert("corrections", rows)

    def imported_corrections(self) -> list[dict[str, Any]]:
        """Every stored correction row, oldest first (equal times: in the order stored)."""
        return self._rows(f"SELECT {_CORRECTION_COLUMNS} FROM corrections ORDER BY created_at, seq")

    def review_corrections(self) -> list[dict[str, Any]]:
        """Reviewers' relabels and spam marks, with the item's source, oldest first.

        Rows have ``item_id``, ``text``, ``label``, ``previous_label``, ``decided_by``,
        ``decided_at`` and ``source``.
        """
        return self._rows(
            "SELECT t.item_id, t.text, t.label, t.previous_label, t.decided_by, t.decided_at, "
            "i.source FROM training_examples t LEFT JOIN items i ON i.id = t.item_id "
            "ORDER BY t.decided_at, t.item_id"
        )

    def review_reroutes(self) -> list[dict[str, Any]]:
        """Reviewers' reroutes: ``item_id``, ``text``, ``department`` (the new one),
        ``previous_label``, ``decided_by``, ``decided_at``, ``source``; oldest first."""
        return self._rows(
            "SELECT d.item_id, i.text, d.after_department AS department, "
            "d.before_label AS previous_label, d.user_id AS decided_by, d.decided_at, i.source "
            "FROM review_decisions d JOIN items i ON i.id = d.item_id "
            "WHERE d.action = 'reroute' AND d.after_department IS NOT NULL "
            "ORDER BY d.decided_at, d.item_id"
        )

    def drift_predictions(self, since: datetime) -> pa.Table:
        """Predictions classified since ``since`` with their item's source (drift's input).

        Columns: ``item_id``, ``source``, ``classified_at``, ``label``, ``score``,
        ``needs_review``.
        """
        # A literal, not a parameter: the streaming read takes none. It is formatted from a
        # datetime here, never from user input.
        cutoff = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        batches = list(
            self._stream(
                "SELECT p.item_id, i.source, p.classified_at, p.label, p.score, p.needs_review "
                "FROM predictions p JOIN items i ON i.id = p.item_id "
                f"WHERE p.classified_at >= TIMESTAMPTZ '{cutoff}'",
                50_000,
            )
        )
        if not batches:
            return pa.table(
                {
                    "item_id": pa.array([], pa.string()),
                    "source": pa.array([], pa.string()),
                    "classified_at": pa.array([], pa.timestamp("us", tz="UTC")),
                    "label": pa.array([], pa.string()),
                    "score": pa.array([], pa.float64()),
                    "needs_review": pa.array([], pa.bool_()),
                }
            )
        return pa.Table.from_batches(batches)

    def drift_daily(
        self, start: datetime, before: datetime, labels: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Per source and UTC day in [start, before): the drift signals, aggregated in SQL.

        The baseline of the drift watch: a month of a busy store is hundreds of thousands of
        predictions, summed here instead of read row by row. Columns: ``source``, ``day``,
        ``items``, ``review_rate``, ``mean_top_score``, ``top_score_sd`` and ``share_<label>``.
        """
        shares = ", ".join(
            f"avg(CASE WHEN p.label = '{label}' THEN 1.0 ELSE 0.0 END) AS share_{label}"
            for label in labels
            if label.isidentifier()  # labels are the contract's names; never quoted input
        )
        return self._rows(
            "SELECT i.source, CAST(timezone('UTC', p.classified_at) AS DATE) AS day, "
            "count(*) AS items, avg(CASE WHEN p.needs_review THEN 1.0 ELSE 0.0 END) AS review_rate, "
            f"avg(p.score) AS mean_top_score, stddev_pop(p.score) AS top_score_sd, {shares} "
            "FROM predictions p JOIN items i ON i.id = p.item_id "
            "WHERE p.classified_at >= ? AND p.classified_at < ? GROUP BY 1, 2 ORDER BY 1, 2",
            [start, before],
        )

    def item_links(self, item_ids: Sequence[str]) -> dict[str, str | None]:
        """The original post's URL of each item (None when it has none)."""
        out: dict[str, str | None] = {}
        for chunk in chunks(item_ids):
            rows = self._rows(f"SELECT id, url FROM items WHERE id IN ({marks(chunk)})", chunk)
            out.update({str(r["id"]): r["url"] for r in rows})
        return out

    def record_drift_alerts(self, rows: Sequence[dict[str, Any]]) -> int:
        """Remember drift alerts (``key`` and the alert's fields); a known key is kept as it was.

        Returns:
            How many were new.
        """
        return self._insert("drift_alerts", rows)

    def unannounced_drift_alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """Drift alerts not announced yet, oldest first."""
        return self._rows(
            "SELECT * FROM drift_alerts WHERE announced_at IS NULL "
            "ORDER BY day, source, metric LIMIT ?",
            [limit],
        )

    def mark_drift_announced(self, key: str, ref: str | None) -> None:
        """Record that a drift alert was posted (``ref``: where)."""
        self._execute(
            "UPDATE drift_alerts SET announced_at = now(), ref = ? WHERE key = ?", [ref, key]
        )
