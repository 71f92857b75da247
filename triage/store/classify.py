"""Classification: stream the items without a prediction, store predictions in batches.

Dialect: DuckDB's ``printf`` (the scores JSON) is DuckDB's; a server backend builds the JSON text
in Arrow and claims its pending items instead of streaming them (see the PostgreSQL design note).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from triage.models import LABELS
from triage.store.floors import FloorSection

# Predictions' scores as JSON text, formatted by DuckDB's printf: the same digits as Python's
# "%.5f" (checked against it), and no Python string building per row.
SCORE_COLUMNS = ", ".join(f"score_{lab}" for lab in LABELS)
SCORES_JSON_SQL = (
    "printf('{" + ", ".join(f'"{lab}": %.5f' for lab in LABELS) + "}', " + SCORE_COLUMNS + ")"
)


class ClassifySection(FloorSection):
    """Items waiting for a prediction, and the predictions."""

    def unclassified(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Stream ``(id, source, text, language)`` of items without a prediction, in batches.

        Only items above the stage's floor are looked at (:mod:`triage.store.floors`).
        """
        # No ORDER BY: sorting would hold every pending text in memory before the first batch.
        return self._stream(
            "SELECT i.id, i.source, i.text, i.language FROM "
            + self._items_above("predictions", having=False),
            batch_size,
            [self.pending_floor("classify")],
        )

    def recent_texts(self, source: str, limit: int) -> list[str]:
        """The texts of ``source``'s latest ``limit`` classified items, newest first.

        A run estimates a source's label mix on these and its new items together
        (:mod:`classifiers.adapt`): a run may bring only a few items, and the mix belongs to the
        source, not to the run.
        """
        if limit <= 0:
            return []
        # Items under the floor all have predictions: only those above it need the join, which
        # on DuckDB would otherwise hash every prediction in the store (3.4 s at six million).
        floor = self.pending_floor("classify")
        rows = self._rows(
            "SELECT text FROM (SELECT i.text, i.seq FROM items i WHERE i.source = ? "
            "AND i.seq <= ? UNION ALL SELECT i.text, i.seq FROM "
            + self._items_above("predictions", having=True)
            + " AND i.source = ?) AS classified ORDER BY seq DESC LIMIT ?",
            [source, floor, floor, source, limit],
        )
        return [str(r["text"]) for r in rows]

    def insert_predictions(self, table: pa.Table) -> int:
        """Store a batch of predictions.

        Args:
            table: The ``predictions`` columns, except that ``scores`` comes as one DOUBLE column
                per label, ``score_<label>``; the JSON text is formatted here.

        Returns:
            How many predictions were new.
        """
        return self._insert(
            "predictions",
            table,
            select=f"SELECT * EXCLUDE ({SCORE_COLUMNS}), {SCORES_JSON_SQL} AS scores FROM {{rows}}",
        )
