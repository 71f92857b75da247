"""The store at a glance: ``triage status`` and row counts."""

from __future__ import annotations

from typing import Any

from triage.store.base import StoreBase
from triage.store.schema import COUNTED_TABLES, OUTBOX_STATES


class StatusSection(StoreBase):
    """Totals by label, department, source, review and delivery state."""

    def _counts(self, sql: str) -> dict[str, int]:
        # Queries of two columns: a name (``k``) and a count (``n``).
        return {str(r["k"]): int(r["n"]) for r in self._rows(sql)}

    def _count(self, sql: str) -> int:
        value = self._scalar(sql)
        return int(value) if value is not None else 0

    def status(self) -> dict[str, Any]:
        """Summarise the store: totals by label, department, review state and delivery state."""
        deliveries = dict.fromkeys(OUTBOX_STATES, 0)
        deliveries.update(self._counts("SELECT state AS k, count(*) AS n FROM outbox GROUP BY 1"))
        return {
            "items_total": self._count("SELECT count(*) FROM items"),
            "classified": self._count("SELECT count(*) FROM predictions"),
            "by_label": self._counts(
                "SELECT label AS k, count(*) AS n FROM predictions GROUP BY 1 ORDER BY 1"
            ),
            "by_department": self._counts(
                "SELECT coalesce(department, 'none') AS k, count(*) AS n FROM routes "
                "GROUP BY 1 ORDER BY 1"
            ),
            "by_source": self._counts(
                "SELECT source AS k, count(*) AS n FROM items GROUP BY 1 ORDER BY 1"
            ),
            "by_language": self._counts(
                "SELECT coalesce(language, 'not detected') AS k, count(*) AS n FROM items "
                "GROUP BY 1 ORDER BY 2 DESC, 1"
            ),
            "needs_review": self._count("SELECT count(*) FROM predictions WHERE needs_review"),
            "quarantined": self._count("SELECT count(*) FROM quarantine"),
            "deliveries": deliveries,
            "schema_version": self._count(
                "SELECT coalesce(max(version), 0) FROM schema_migrations"
            ),
        }

    def count(self, table: str) -> int:
        """Row count of one of the project's tables (used by the benchmark and tests)."""
        if table not in COUNTED_TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self._count(f"SELECT count(*) FROM {table}")
