"""The DuckDB store: schema migrations and every SQL statement the project runs.

All SQL lives in this module so the same schema can later move to DuckLake with a PostgreSQL
catalog without hunting for queries across the code base.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from triage.models import Mention, Rejected

# Each migration runs once, in order, inside one transaction with its bookkeeping row.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE SEQUENCE item_seq;
        CREATE TABLE items (
            id VARCHAR PRIMARY KEY,
            seq BIGINT NOT NULL DEFAULT nextval('item_seq'),
            source VARCHAR NOT NULL,
            external_id VARCHAR NOT NULL,
            url VARCHAR,
            author_handle VARCHAR,
            author_name VARCHAR,
            author_url VARCHAR,
            author_followers BIGINT,
            text VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL,
            thread VARCHAR,
            in_reply_to VARCHAR,
            language VARCHAR,
            source_type VARCHAR,
            raw VARCHAR,
            stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE quarantine (
            key VARCHAR PRIMARY KEY,
            source VARCHAR NOT NULL,
            external_id VARCHAR,
            reason VARCHAR NOT NULL,
            raw VARCHAR,
            received_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE connector_state (
            connector VARCHAR PRIMARY KEY,
            cursor VARCHAR,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE predictions (
            item_id VARCHAR PRIMARY KEY,
            label VARCHAR NOT NULL,
            labels VARCHAR[] NOT NULL,
            score DOUBLE NOT NULL,
            scores VARCHAR NOT NULL,
            needs_review BOOLEAN NOT NULL,
            review_reason VARCHAR,
            model_version VARCHAR NOT NULL,
            classified_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE routes (
            item_id VARCHAR PRIMARY KEY,
            department VARCHAR,
            rule VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            routed_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE outbox (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            destination VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            state VARCHAR NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error VARCHAR,
            next_attempt_at TIMESTAMPTZ,
            external_ref VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            sent_at TIMESTAMPTZ
        );
        """,
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("external_id", pa.string()),
        ("url", pa.string()),
        ("author_handle", pa.string()),
        ("author_name", pa.string()),
        ("author_url", pa.string()),
        ("author_followers", pa.int64()),
        ("text", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("thread", pa.string()),
        ("in_reply_to", pa.string()),
        ("language", pa.string()),
        ("source_type", pa.string()),
        ("raw", pa.string()),
    ]
)

OUTBOX_STATES = ("pending", "sending", "sent", "failed", "dead")
# Tasks of one flow run open the store from several threads; only one may migrate at a time.
_MIGRATE_LOCK = threading.Lock()


class StoreBusy(RuntimeError):
    """Another process holds the database file's write lock for longer than we were willing to wait."""


def _connect(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    # DuckDB admits one writing process per file; a scheduled run may overlap a CLI call, so wait a
    # little instead of failing at once, then say plainly what is going on.
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                if "lock" in str(exc).lower():
                    raise StoreBusy(
                        f"{path} is locked by another process (a running flow or server?); "
                        f"waited {wait_s:.0f}s"
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class Store:
    """A connection to the triage database with the project's queries as methods.

    Open it briefly with :func:`open_store`; long-lived services must not hold the file open,
    because DuckDB lets only one process write at a time.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        """Wrap an open connection; use :func:`open_store` rather than calling this directly."""
        self.con = con
        self.path = path

    # ----------------------------------------------------------------- schema
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ DEFAULT now())"
        )
        row = self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        for version, name, sql in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction():
                self.con.execute(sql)
                self.con.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name]
                )
            current = version
        return current

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction: all of it is stored, or none of it."""
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        else:
            self.con.commit()

    # ------------------------------------------------------------ ingestion
    def get_cursor(self, connector: str) -> Any:
        """Return the stored cursor (decoded JSON) of a source, or None before its first run."""
        row = self.con.execute(
            "SELECT cursor FROM connector_state WHERE connector = ?", [connector]
        ).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None

    def ingest(
        self,
        source: str,
        mentions: Sequence[Mention],
        rejected: Sequence[Rejected],
        cursor: Any,
        *,
        advance_cursor: bool = True,
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

        Returns:
            ``(new_items, new_quarantined)``: how many rows this call created.
        """
        with self.transaction():
            new_items = self.insert_items(mentions)
            new_quarantined = self.quarantine(rejected)
            if advance_cursor:
                self.con.execute(
                    "INSERT INTO connector_state (connector, cursor, updated_at) VALUES (?, ?, now()) "
                    "ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, "
                    "updated_at = excluded.updated_at",
                    [source, json.dumps(cursor, default=str)],
                )
        return new_items, new_quarantined

    def insert_items(self, mentions: Sequence[Mention]) -> int:
        """Insert mentions through one Arrow batch, ignoring ids already stored; return how many were new."""
        if not mentions:
            return 0
        table = pa.Table.from_pylist([m.to_row() for m in mentions], schema=ITEM_SCHEMA)
        return self.insert_item_table(table)

    def insert_item_table(self, table: pa.Table) -> int:
        """Insert an Arrow table laid out like ``ITEM_SCHEMA``; return how many rows were new."""
        self.con.register("_incoming_items", table)
        try:
            row = self.con.execute(
                "INSERT OR IGNORE INTO items BY NAME SELECT * FROM _incoming_items"
            ).fetchone()
        finally:
            self.con.unregister("_incoming_items")
        return int(row[0]) if row else 0

    def quarantine(self, rejected: Sequence[Rejected]) -> int:
        """Keep malformed records with their reason; the same record twice is kept once."""
        if not rejected:
            return 0
        rows = [
            {
                "key": hashlib.blake2b(
                    f"{r.source}\x1f{r.reason}\x1f{r.raw}".encode(errors="replace"), digest_size=12
                ).hexdigest(),
                "source": r.source,
                "external_id": r.external_id,
                "reason": r.reason,
                "raw": r.raw,
            }
            for r in rejected
        ]
        self.con.register("_incoming_quarantine", pa.Table.from_pylist(rows))
        try:
            row = self.con.execute(
                "INSERT OR IGNORE INTO quarantine BY NAME SELECT * FROM _incoming_quarantine"
            ).fetchone()
        finally:
            self.con.unregister("_incoming_quarantine")
        return int(row[0]) if row else 0

    # --------------------------------------------------------- classification
    def unclassified(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Stream ``(id, text)`` of items without a prediction, oldest first, in Arrow batches."""
        # A separate cursor keeps this scan's snapshot while predictions commit on the main one.
        reader = (
            self.con.cursor()
            .execute(
                "SELECT i.id, i.text FROM items i ANTI JOIN predictions p ON p.item_id = i.id "
                "ORDER BY i.seq"
            )
            .to_arrow_reader(batch_size)
        )
        yield from reader

    def insert_predictions(self, table: pa.Table) -> int:
        """Store a batch of predictions (columns as in the ``predictions`` table)."""
        self.con.register("_incoming_predictions", table)
        try:
            row = self.con.execute(
                "INSERT OR IGNORE INTO predictions BY NAME SELECT * FROM _incoming_predictions"
            ).fetchone()
        finally:
            self.con.unregister("_incoming_predictions")
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- routing
    def unrouted(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Stream classified items that have no route yet, with what routing rules look at."""
        reader = (
            self.con.cursor()
            .execute(
                "SELECT p.item_id, i.source, i.text, p.label, p.score, p.needs_review "
                "FROM predictions p JOIN items i ON i.id = p.item_id "
                "ANTI JOIN routes r ON r.item_id = p.item_id ORDER BY i.seq"
            )
            .to_arrow_reader(batch_size)
        )
        yield from reader

    def insert_routes(self, routes: pa.Table, outbox: pa.Table) -> tuple[int, int]:
        """Store routes and their outbox deliveries in one transaction; return rows created."""
        with self.transaction():
            self.con.register("_incoming_routes", routes)
            self.con.register("_incoming_outbox", outbox)
            try:
                r = self.con.execute(
                    "INSERT OR IGNORE INTO routes BY NAME SELECT * FROM _incoming_routes"
                ).fetchone()
                o = self.con.execute(
                    "INSERT OR IGNORE INTO outbox BY NAME SELECT * FROM _incoming_outbox"
                ).fetchone()
            finally:
                self.con.unregister("_incoming_routes")
                self.con.unregister("_incoming_outbox")
        return (int(r[0]) if r else 0), (int(o[0]) if o else 0)

    def enqueue(self, outbox: pa.Table) -> int:
        """Queue deliveries (``OUTBOX_SCHEMA`` rows); keys already queued are ignored."""
        self.con.register("_incoming_outbox", outbox)
        try:
            row = self.con.execute(
                "INSERT OR IGNORE INTO outbox BY NAME SELECT * FROM _incoming_outbox"
            ).fetchone()
        finally:
            self.con.unregister("_incoming_outbox")
        return int(row[0]) if row else 0

    def set_route(self, item_id: str, department: str | None, state: str, rule: str) -> None:
        """Change an item's route (after a reviewer's decision)."""
        self.con.execute(
            "UPDATE routes SET department = ?, state = ?, rule = ?, routed_at = now() "
            "WHERE item_id = ?",
            [department, state, rule, item_id],
        )

    # --------------------------------------------------------------- delivery
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
        sql += " ORDER BY o.created_at, o.key LIMIT ?"
        params.append(limit)
        cur = self.con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def delivery_context(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Return everything a message needs about each item: the mention, prediction and route."""
        if not item_ids:
            return {}
        cur = self.con.execute(
            "SELECT i.id, i.source, i.external_id, i.url, i.author_handle, i.author_name, "
            "i.author_url, i.author_followers, i.text, i.created_at, i.source_type, "
            "p.label, p.labels, p.score, p.scores, p.needs_review, p.review_reason, "
            "p.model_version, r.department, r.state AS route_state "
            "FROM items i JOIN predictions p ON p.item_id = i.id "
            "LEFT JOIN routes r ON r.item_id = i.id WHERE i.id IN (SELECT unnest(?))",
            [list(item_ids)],
        )
        cols = [d[0] for d in cur.description]
        out: dict[str, dict[str, Any]] = {}
        for row in cur.fetchall():
            rec = dict(zip(cols, row, strict=True))
            rec["scores"] = json.loads(rec["scores"])
            out[rec["id"]] = rec
        return out

    def mark_sending(self, key: str) -> None:
        """Record that a send is about to start, so a crash after it is reconciled, not repeated."""
        self.con.execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE key = ?", [key]
        )

    def mark_sent(self, key: str, external_ref: str | None) -> None:
        """Record a confirmed delivery and the destination's reference for it."""
        self.con.execute(
            "UPDATE outbox SET state = 'sent', sent_at = now(), external_ref = ?, last_error = NULL "
            "WHERE key = ?",
            [external_ref, key],
        )

    def mark_failed(self, key: str, error: str, retry_in_s: float, max_attempts: int) -> str:
        """Record a failed attempt; dead-letter it after ``max_attempts``. Return the new state."""
        row = self.con.execute("SELECT attempts FROM outbox WHERE key = ?", [key]).fetchone()
        attempts = int(row[0]) if row else max_attempts
        state = "dead" if attempts >= max_attempts else "failed"
        self.con.execute(
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
        row = self.con.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Summarise the store: totals by label, department, review state and delivery state."""

        def pairs(sql: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in self.con.execute(sql).fetchall()}

        def scalar(sql: str) -> int:
            row = self.con.execute(sql).fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        deliveries = dict.fromkeys(OUTBOX_STATES, 0)
        deliveries.update(pairs("SELECT state, count(*) FROM outbox GROUP BY state"))
        return {
            "items_total": scalar("SELECT count(*) FROM items"),
            "classified": scalar("SELECT count(*) FROM predictions"),
            "by_label": pairs(
                "SELECT label, count(*) FROM predictions GROUP BY label ORDER BY label"
            ),
            "by_department": pairs(
                "SELECT coalesce(department, 'none'), count(*) FROM routes GROUP BY 1 ORDER BY 1"
            ),
            "by_source": pairs(
                "SELECT source, count(*) FROM items GROUP BY source ORDER BY source"
            ),
            "needs_review": scalar("SELECT count(*) FROM predictions WHERE needs_review"),
            "quarantined": scalar("SELECT count(*) FROM quarantine"),
            "deliveries": deliveries,
            "schema_version": scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"),
        }

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        """Return the most recent quarantined records with their reasons."""
        cur = self.con.execute(
            "SELECT source, external_id, reason, raw, received_at FROM quarantine "
            "ORDER BY received_at DESC LIMIT ?",
            [limit],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def count(self, table: str) -> int:
        """Row count of one of the project's tables (used by the benchmark and tests)."""
        if table not in {
            "items",
            "quarantine",
            "predictions",
            "routes",
            "outbox",
            "connector_state",
        }:
            raise ValueError(f"unknown table {table!r}")
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


@contextmanager
def open_store(
    path: str | Path, *, read_only: bool = False, wait_s: float = 30.0
) -> Iterator[Store]:
    """Open the database, apply migrations (when writable) and close it again afterwards.

    Args:
        path: The DuckDB file; its folder is created when missing.
        read_only: Open without taking the write lock (fails if the file does not exist yet).
        wait_s: How long to wait for another process's write lock before raising ``StoreBusy``.

    Yields:
        A :class:`Store`.
    """
    p = Path(path)
    if not read_only:
        p.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(p, read_only, wait_s)
    try:
        store = Store(con, p)
        if not read_only:
            with _MIGRATE_LOCK:
                store.migrate()
        yield store
    finally:
        con.close()
