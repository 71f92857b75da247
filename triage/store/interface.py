"""The one store interface: every section's queries, and what each backend adds to open and close.

Callers annotate with :class:`Store` and get one from :func:`triage.store.open_store`: the embedded
DuckDB file (:mod:`triage.store.duckdb`) or a PostgreSQL server (:mod:`triage.store.postgres`).
"""

from __future__ import annotations

from triage.store.base import StoreBase
from triage.store.classify import ClassifySection
from triage.store.customers import CustomerSection
from triage.store.handoffs import HandoffSection
from triage.store.ingest import IngestSection
from triage.store.learning import LearningSection
from triage.store.outbox import OutboxSection
from triage.store.privacy import PrivacySection
from triage.store.review import ReviewSection
from triage.store.route import RouteSection
from triage.store.status import StatusSection


class Store(
    IngestSection,
    ClassifySection,
    RouteSection,
    OutboxSection,
    ReviewSection,
    HandoffSection,
    CustomerSection,
    LearningSection,
    StatusSection,
    PrivacySection,
    StoreBase,
):
    """A connection to the triage database with the project's queries as methods."""

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        raise NotImplementedError

    def defer_checkpoint(self) -> None:
        """Let a short-lived writer close without folding the log into the file (DuckDB)."""
        raise NotImplementedError

    def writer(self) -> Store:
        """A store for a background writer thread (close it when done)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError
