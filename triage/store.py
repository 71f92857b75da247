"""The DuckDB store: schema migrations and every SQL statement the project runs.

All SQL lives in this module so the same schema can later move to DuckLake with a PostgreSQL
catalog without hunting for queries across the code base.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from triage.keys import stable_key
from triage.models import (
    ITEM_SCHEMA,
    LABELS,
    DeliveryItem,
    Mention,
    Rejected,
    cap_raw,
    storable,
)

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
    (
        2,
        "slack review decisions",
        """
        -- One row per item: the first decision applied wins, later clicks lose to it.
        CREATE TABLE review_decisions (
            item_id VARCHAR PRIMARY KEY,
            decision_id VARCHAR NOT NULL UNIQUE,
            action VARCHAR NOT NULL,
            value VARCHAR,
            user_id VARCHAR NOT NULL,
            user_name VARCHAR,
            decided_at TIMESTAMPTZ NOT NULL,
            before_label VARCHAR,
            before_department VARCHAR,
            before_state VARCHAR,
            after_label VARCHAR,
            after_department VARCHAR,
            after_state VARCHAR NOT NULL,
            channel VARCHAR,
            message_ts VARCHAR,
            message_updated_at TIMESTAMPTZ,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- Every click, winning or not: who, when, what, before and after.
        CREATE TABLE review_audit (
            decision_id VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            value VARCHAR,
            user_id VARCHAR NOT NULL,
            user_name VARCHAR,
            decided_at TIMESTAMPTZ NOT NULL,
            outcome VARCHAR NOT NULL,
            before VARCHAR,
            after VARCHAR,
            response_url VARCHAR,
            notified_at TIMESTAMPTZ,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE training_examples (
            item_id VARCHAR PRIMARY KEY,
            text VARCHAR NOT NULL,
            label VARCHAR NOT NULL,
            previous_label VARCHAR,
            decided_by VARCHAR NOT NULL,
            decided_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE review_reminders (
            item_id VARCHAR NOT NULL,
            period BIGINT NOT NULL,
            sent_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (item_id, period)
        );
        CREATE TABLE review_batches (
            key VARCHAR PRIMARY KEY,
            destination VARCHAR NOT NULL,
            channel VARCHAR NOT NULL,
            ts VARCHAR NOT NULL,
            items INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        "department handoffs",
        """
        -- One row per handoff delivery to an external system: what was created or joined there.
        CREATE TABLE handoff_refs (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            destination VARCHAR NOT NULL,
            system VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            target_id VARCHAR,
            url VARCHAR,
            author_key VARCHAR,
            state VARCHAR NOT NULL,
            note_state VARCHAR NOT NULL DEFAULT 'none',
            note_ref VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            done_at TIMESTAMPTZ
        );
        CREATE TABLE feature_groups (
            id VARCHAR PRIMARY KEY,
            destination VARCHAR NOT NULL,
            title VARCHAR NOT NULL,
            signature VARCHAR NOT NULL,
            mentions INTEGER NOT NULL DEFAULT 0,
            issue_number BIGINT,
            issue_url VARCHAR,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE feature_mentions (
            key VARCHAR PRIMARY KEY,
            item_id VARCHAR NOT NULL,
            group_id VARCHAR NOT NULL,
            similarity DOUBLE NOT NULL,
            signature VARCHAR NOT NULL,
            added_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE testimonials (
            item_id VARCHAR PRIMARY KEY,
            key VARCHAR NOT NULL,
            author_key VARCHAR NOT NULL,
            author_handle VARCHAR,
            author_name VARCHAR,
            author_url VARCHAR,
            source VARCHAR NOT NULL,
            url VARCHAR,
            text VARCHAR NOT NULL,
            score DOUBLE,
            said_at TIMESTAMPTZ NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        -- died_at is the dead-lettering moment, so a delivery that dies again after a retry is
        -- announced again.
        CREATE TABLE dead_letter_alerts (
            key VARCHAR NOT NULL,
            died_at TIMESTAMPTZ NOT NULL,
            ref VARCHAR,
            announced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (key, died_at)
        );
        """,
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

# Predictions' scores as JSON text, formatted by DuckDB's printf: the same digits as Python's
# "%.5f" (checked against it), and no Python string building per row.
_SCORE_COLUMNS = ", ".join(f"score_{lab}" for lab in LABELS)
_SCORES_JSON_SQL = (
    "printf('{" + ", ".join(f'"{lab}": %.5f' for lab in LABELS) + "}', " + _SCORE_COLUMNS + ")"
)

# "previewed": written as a JSON preview (no credentials), not posted anywhere; counted apart from
# "sent" so `triage status` never reports previews as sends.
OUTBOX_STATES = ("pending", "sending", "sent", "previewed", "failed", "dead")
# Tasks of one flow run open the store from several threads; only one may migrate at a time.
_MIGRATE_LOCK = threading.Lock()


# Ids per `IN (?, ...)` lookup: large enough for one batch, small enough for a short statement.
_LOOKUP_CHUNK = 500


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class StoreError(RuntimeError):
    """The database cannot be used as it is; the message names the file, the cause and the fix.

    ``exit_code`` is what the command line exits with: 2 when the user must act (a damaged file,
    a newer schema), 1 when trying again later may work (another process holds the file).
    """

    exit_code = 2


class StoreBusy(StoreError):
    """Another process holds the database file's write lock for longer than we were willing to wait."""

    exit_code = 1


class StoreCorrupt(StoreError):
    """The database file, or the write-ahead log beside it, is damaged or is not DuckDB's."""


class StoreTooNew(StoreError):
    """The database was written by a newer feedback-triage whose schema this one does not know."""


# The one DuckDB error that means "another process has the file": only this one is waited out.
# Anything else that mentions a lock (a checksum failure "in block at location ...") is damage.
_LOCK_CONFLICT = "could not set lock on file"
# DuckDB's words for a damaged file or log, at open or on a later read.
_DAMAGE = (
    "not a valid duckdb database file",
    "corrupt database file",
    "corrupt wal file",
    "failure while replaying wal",
    "could not read enough bytes",
)
# A DuckDB file has "DUCK" at bytes 8-12 of its first header; a WAL starts with its version entry
# (field 100 = entry type 98, field 101 = the WAL version, end of object).
_DB_MAGIC = (8, b"DUCK")
_WAL_START = b"\x64\x00\x62\x65\x00"


def _is_damage(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc).lower() for m in _DAMAGE)


def _damaged(path: Path, exc: BaseException) -> StoreCorrupt:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StoreCorrupt(
        f"{path} is damaged and was not used ({first}). Restore it from a backup, or move it "
        "aside to start an empty store (its items would be fetched again only from sources whose "
        "history is still available)"
    )


def _check_files(path: Path) -> None:
    """Refuse, before DuckDB touches them, a file that is not DuckDB's or a log that is garbage.

    DuckDB itself silently discards a write-ahead log whose first entry it cannot read, and with it
    every transaction the log holds; stopping here keeps the log for whoever investigates.
    """
    if path.is_dir():
        raise StoreCorrupt(f"{path} is a directory, not a database file")
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:
            head = f.read(_DB_MAGIC[0] + len(_DB_MAGIC[1]))
        if head[_DB_MAGIC[0] :] != _DB_MAGIC[1]:
            raise StoreCorrupt(f"{path} is not a DuckDB database file; it was not touched")
    wal = path.with_name(path.name + ".wal")
    # A log shorter than its first entry was never committed to: DuckDB writes it whole.
    if wal.exists() and wal.stat().st_size >= 8:
        with wal.open("rb") as f:
            start = f.read(8)
        if not start.startswith(_WAL_START) or start[6:8] != b"\xff\xff":
            raise StoreCorrupt(
                f"{wal} (the write-ahead log beside the database) is not a DuckDB log; nothing "
                "was opened. If it is damaged, move it aside: the store then opens as of its last "
                "checkpoint, and what only the log held is lost"
            )


def _connect(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    # DuckDB admits one writing process per file; a scheduled run may overlap a CLI call, so wait a
    # little instead of failing at once, then say plainly what is going on.
    _check_files(path)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            config: dict[str, str | bool | int | float | list[str]] = {
                # A bounded buffer pool keeps a 1M-item backfill under 1 GB of memory; DuckDB
                # spills to disk beyond it instead of taking 80% of RAM, its default. Measured
                # 1M-mention peak RSS: 1,044-1,057 MB with 512MB, 961 MB with 384MB (the faster
                # columnar ingest leaves more freed memory with the allocators at any one time).
                "memory_limit": os.environ.get("TRIAGE_DUCKDB_MEMORY", "384MB"),
                # The pipeline writes 5,000-row batches from one thread per stage: DuckDB's worker
                # threads buy nothing on batches that small and take a core from the classifier
                # (100k-mention ingest on 2 cores: 8.4 s with 2 threads, 6.0 s with 1).
                "threads": int(os.environ.get("TRIAGE_DUCKDB_THREADS", "1")),
                # The default 16 MB WAL limit checkpoints the whole file (indexes included) every
                # ~25k items of a backfill; a checkpoint per ~400k items costs far less in total.
                "checkpoint_threshold": os.environ.get("TRIAGE_DUCKDB_CHECKPOINT", "256MB"),
                # Never fetch an extension at run time (an odd file can make DuckDB try to).
                "autoinstall_known_extensions": False,
            }
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.Error as exc:
            if _LOCK_CONFLICT not in str(exc).lower():
                if _is_damage(exc):
                    raise _damaged(path, exc) from exc
                first = str(exc).splitlines()[0]
                raise StoreError(f"cannot open the database {path}: {first}") from exc
            if time.monotonic() >= deadline:
                raise StoreBusy(
                    f"{path} is locked by another process (a running flow or server?); "
                    f"waited {wait_s:.0f}s. Try again when it has finished"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a database of a newer schema, or a DuckDB file that is not a triage store."""
    tables = {
        str(r[0])
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
    }
    if "schema_migrations" not in tables:
        if tables:
            raise StoreError(
                f"{path} is a DuckDB database but not a feedback-triage store "
                f"(tables: {', '.join(sorted(tables)[:5])}); give another --db"
            )
        return
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise StoreTooNew(
            f"{path} has schema version {found}, written by a newer feedback-triage; this one "
            f"knows versions up to {SCHEMA_VERSION}. Upgrade feedback-triage (nothing was changed)"
        )


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

    def reset_cursor(self, connector: str) -> bool:
        """Forget a source's cursor: its next run reads from the start (stable ids absorb repeats).

        Returns:
            True when there was a cursor to forget.
        """
        row = self.con.execute(
            "DELETE FROM connector_state WHERE connector = ? RETURNING connector", [connector]
        ).fetchall()
        return bool(row)

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
        rows = []
        for r in rejected:
            # Bounded and storable whatever the connector kept: quarantine must never fail a batch.
            raw = cap_raw(r.raw)
            reason = storable(r.reason[:2000]) or ""
            rows.append(
                {
                    "key": stable_key(r.source, reason, raw, errors="replace"),
                    "source": r.source,
                    "external_id": storable(r.external_id),
                    "reason": reason,
                    "raw": raw,
                }
            )
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
        """Stream ``(id, text)`` of items without a prediction, in Arrow batches."""
        # A separate cursor keeps this scan's snapshot while predictions commit on the main one.
        # No ORDER BY: sorting would hold every pending text in memory before the first batch.
        reader = (
            self.con.cursor()
            .execute("SELECT i.id, i.text FROM items i ANTI JOIN predictions p ON p.item_id = i.id")
            .to_arrow_reader(batch_size)
        )
        yield from reader

    def insert_predictions(self, table: pa.Table) -> int:
        """Store a batch of predictions.

        Args:
            table: The ``predictions`` columns, except that ``scores`` comes as one DOUBLE column
                per label, ``score_<label>``; the JSON text is formatted here.

        Returns:
            How many predictions were new.
        """
        self.con.register("_incoming_predictions", table)
        try:
            row = self.con.execute(
                "INSERT OR IGNORE INTO predictions BY NAME SELECT "
                f"* EXCLUDE ({_SCORE_COLUMNS}), {_SCORES_JSON_SQL} AS scores "
                "FROM _incoming_predictions"
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
                "ANTI JOIN routes r ON r.item_id = p.item_id"
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
        # Within one routing batch, items flagged for review go first (reviewers see them on top).
        sql += (
            " ORDER BY o.created_at, (SELECT p.needs_review FROM predictions p "
            "WHERE p.item_id = o.item_id) DESC NULLS LAST, o.key LIMIT ?"
        )
        params.append(limit)
        cur = self.con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def delivery_context(self, item_ids: Sequence[str]) -> dict[str, DeliveryItem]:
        """Return everything a message needs about each item: the mention, prediction and route."""
        out: dict[str, DeliveryItem] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            # A list of parameters, not unnest(?): DuckDB then looks the ids up in the primary
            # key's index instead of scanning the tables (220k items: 0.07 s instead of 0.4 s).
            cur = self.con.execute(
                "SELECT i.id, i.source, i.external_id, i.url, i.author_handle, i.author_name, "
                "i.author_url, i.author_followers, i.text, i.created_at, i.source_type, "
                "p.label, p.labels, p.score, p.scores, p.needs_review, p.review_reason, "
                "p.model_version, r.department, r.state AS route_state "
                "FROM items i JOIN predictions p ON p.item_id = i.id "
                f"LEFT JOIN routes r ON r.item_id = i.id WHERE i.id IN ({_marks(chunk)})",
                chunk,
            )
            cols = [d[0] for d in cur.description]
            for row in cur.fetchall():
                item = DeliveryItem.from_row(dict(zip(cols, row, strict=True)))
                out[item.id] = item
        return out

    def mark_sending(self, key: str) -> None:
        """Record that a send is about to start, so a crash after it is reconciled, not repeated."""
        self.con.execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE key = ?", [key]
        )

    def mark_sent(self, key: str, external_ref: str | None) -> None:
        """Record a confirmed delivery and the destination's reference for it."""
        self._mark_done(key, "sent", external_ref)

    def mark_previewed(self, key: str, path: str | None) -> None:
        """Record that a delivery was written as a JSON preview (nothing was posted)."""
        self._mark_done(key, "previewed", path)

    def _mark_done(self, key: str, state: str, external_ref: str | None) -> None:
        self.con.execute(
            "UPDATE outbox SET state = ?, sent_at = now(), external_ref = ?, last_error = NULL "
            "WHERE key = ?",
            [state, external_ref, key],
        )

    def mark_lookup_failed(self, key: str, error: str, retry_in_s: float, max_attempts: int) -> str:
        """Record a failed reconciliation of a delivery left ``sending``; return the new state.

        The row stays ``sending`` (so the next attempt looks the key up again instead of sending
        blindly, which could post twice) until ``max_attempts`` lookups failed: then it is dead.
        """
        row = self.con.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
            "state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE 'sending' END "
            "WHERE key = ? RETURNING state",
            [error[:2000], datetime.now(UTC) + timedelta(seconds=retry_in_s), max_attempts, key],
        ).fetchone()
        return str(row[0]) if row else "dead"

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

    def quarantined(
        self, limit: int | None = 50, source: str | None = None
    ) -> list[dict[str, Any]]:
        """Return quarantined records with their reasons, the most recent first.

        Args:
            limit: At most this many (None: all).
            source: Only this source's.
        """
        cur = self.con.execute(
            "SELECT key, source, external_id, reason, raw, received_at FROM quarantine "
            "WHERE ? IS NULL OR source = ? ORDER BY received_at DESC, source, reason LIMIT ?",
            [source, source, limit],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined records per source."""
        rows = self.con.execute(
            "SELECT source, count(*) FROM quarantine GROUP BY source ORDER BY source"
        ).fetchall()
        return {str(k): int(v) for k, v in rows}

    def clear_quarantine(self, source: str | None = None, keys: Sequence[str] | None = None) -> int:
        """Delete quarantined records: a source's, the given keys, or (neither given) all.

        Returns:
            How many were deleted.
        """
        if keys is not None:
            if not keys:
                return 0
            rows = self.con.execute(
                "DELETE FROM quarantine WHERE list_contains(?, key) RETURNING key", [list(keys)]
            ).fetchall()
        else:
            rows = self.con.execute(
                "DELETE FROM quarantine WHERE ? IS NULL OR source = ? RETURNING key",
                [source, source],
            ).fetchall()
        return len(rows)

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

    # ------------------------------------------------- slack review (issue 5)
    def audited_decisions(self, decision_ids: Sequence[str]) -> set[str]:
        """Return which of these spooled decision ids were already applied (any outcome)."""
        return self._present("review_audit", "decision_id", decision_ids)

    def decided_items(self, item_ids: Sequence[str]) -> set[str]:
        """Which of these items a review decision has settled already (the first one wins)."""
        return self._present("review_decisions", "item_id", item_ids)

    def _present(self, table: str, column: str, values: Sequence[str]) -> set[str]:
        found: set[str] = set()
        wanted = list(dict.fromkeys(values))
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            rows = self.con.execute(
                f"SELECT {column} FROM {table} WHERE {column} IN ({_marks(chunk)})", chunk
            ).fetchall()
            found.update(str(r[0]) for r in rows)
        return found

    def defer_checkpoint(self) -> None:
        """Skip the checkpoint when this connection closes; the next writer folds the log in.

        Closing DuckDB checkpoints the whole file, indexes included: about a second on a
        220,000-item store, for a handful of changed rows. The changes are durable in the
        write-ahead log either way; a later run's close (or the log size limit) checkpoints them.
        """
        self.con.execute("PRAGMA disable_checkpoint_on_shutdown")

    def _update_from(self, rows: pa.Table, sql: str) -> None:
        # One set-based statement over an Arrow table of changes (view name private to this).
        if rows.num_rows == 0:
            return
        self.con.register("_review_changes", rows)
        try:
            self.con.execute(sql)
        finally:
            self.con.unregister("_review_changes")

    def relabel_predictions(self, rows: pa.Table) -> None:
        """Overwrite items' labels with reviewers' (``item_id``, ``label``, ``labels``).

        The model's label stays in the audit trail and in ``training_examples.previous_label``.
        """
        self._update_from(
            rows,
            "UPDATE predictions SET label = c.label, labels = c.labels, needs_review = false, "
            "review_reason = 'relabelled by a reviewer' FROM _review_changes c "
            "WHERE predictions.item_id = c.item_id",
        )

    def set_routes(self, rows: pa.Table) -> None:
        """Change items' routes after reviewers' decisions (``item_id``, ``department``,
        ``state``, ``rule``)."""
        self._update_from(
            rows,
            "UPDATE routes SET department = c.department, state = c.state, rule = c.rule, "
            "routed_at = now() FROM _review_changes c WHERE routes.item_id = c.item_id",
        )

    def add_training_examples(self, rows: pa.Table) -> None:
        """Keep reviewers' corrections as training examples, the text copied from each item.

        Columns: ``item_id``, ``label``, ``previous_label``, ``decided_by``, ``decided_at``.
        """
        self._update_from(
            rows,
            "INSERT INTO training_examples (item_id, text, label, previous_label, decided_by, "
            "decided_at) SELECT i.id, i.text, c.label, c.previous_label, c.decided_by, "
            "c.decided_at FROM _review_changes c JOIN items i ON i.id = c.item_id "
            "ON CONFLICT (item_id) DO UPDATE SET label = excluded.label, "
            "decided_by = excluded.decided_by, decided_at = excluded.decided_at",
        )

    def insert_review_decisions(self, rows: list[dict[str, Any]]) -> int:
        """Store the decisions that settle items; one already settled keeps its first decision."""
        return self._insert_rows("review_decisions", rows)

    def insert_review_audit(self, rows: list[dict[str, Any]]) -> int:
        """Append clicks to the audit trail (idempotent on ``decision_id``)."""
        return self._insert_rows("review_audit", rows)

    def training_examples(self) -> list[dict[str, Any]]:
        """Every correction as ``{text, label}``, oldest first."""
        rows = self.con.execute(
            "SELECT text, label FROM training_examples ORDER BY decided_at, item_id"
        ).fetchall()
        return [{"text": t, "label": lab} for t, lab in rows]

    def unannounced_decisions(self, limit: int = 500) -> list[dict[str, Any]]:
        """Decisions whose Slack message has not been updated yet (e.g. after a crash)."""
        cur = self.con.execute(
            "SELECT * FROM review_decisions WHERE message_updated_at IS NULL "
            "AND channel IS NOT NULL AND message_ts IS NOT NULL ORDER BY applied_at LIMIT ?",
            [limit],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def mark_message_updated(self, item_ids: Sequence[str]) -> None:
        """Record that the review messages of these items now show their decision."""
        if item_ids:
            self.con.execute(
                "UPDATE review_decisions SET message_updated_at = now() "
                "WHERE item_id IN (SELECT unnest(?))",
                [list(item_ids)],
            )

    def unnotified_losers(self, limit: int = 500) -> list[dict[str, Any]]:
        """Clicks that lost to an earlier decision and whose reviewer has not been told yet."""
        cur = self.con.execute(
            "SELECT a.decision_id, a.user_id, a.response_url, d.action, d.value, d.user_id "
            "AS winner_id, d.user_name AS winner_name, d.decided_at AS winner_at "
            "FROM review_audit a JOIN review_decisions d ON d.item_id = a.item_id "
            "WHERE a.outcome = 'superseded' AND a.notified_at IS NULL "
            "AND a.response_url IS NOT NULL ORDER BY a.recorded_at LIMIT ?",
            [limit],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def mark_notified(self, decision_ids: Sequence[str]) -> None:
        """Record that the reviewers of these losing clicks were told who won."""
        if decision_ids:
            self.con.execute(
                "UPDATE review_audit SET notified_at = now() "
                "WHERE decision_id IN (SELECT unnest(?))",
                [list(decision_ids)],
            )

    def review_queue(self, limit: int = 20) -> dict[str, Any]:
        """Items awaiting review: counts per label and department, and the oldest ones."""
        base = (
            "FROM routes r JOIN predictions p ON p.item_id = r.item_id "
            "JOIN items i ON i.id = r.item_id WHERE r.state = 'awaiting_review'"
        )
        groups = self.con.execute(
            f"SELECT p.label, coalesce(r.department, 'none'), count(*), min(r.routed_at) {base} "
            "GROUP BY 1, 2 ORDER BY 4, 1, 2"
        ).fetchall()
        cur = self.con.execute(
            "SELECT i.id, i.source, i.text, p.label, p.score, p.needs_review, r.department, "
            f"r.routed_at {base} ORDER BY r.routed_at, i.seq LIMIT ?",
            [limit],
        )
        cols = [d[0] for d in cur.description]
        return {
            "total": sum(int(g[2]) for g in groups),
            "groups": [
                {"label": g[0], "department": g[1], "count": int(g[2]), "oldest": g[3]}
                for g in groups
            ],
            "oldest": [dict(zip(cols, row, strict=True)) for row in cur.fetchall()],
        }

    def overdue_reviews(
        self, destination: str, routed_before: datetime, period: int, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Items routed before ``routed_before``, awaiting review, not reminded in ``period``.

        Only items whose review message was posted (``external_ref`` known) qualify, because the
        reminder is a reply to that message.
        """
        cur = self.con.execute(
            "SELECT r.item_id, r.routed_at, o.external_ref FROM routes r "
            "JOIN outbox o ON o.item_id = r.item_id AND o.kind = 'review' "
            "AND o.destination = ? AND o.state = 'sent' AND o.external_ref IS NOT NULL "
            "WHERE r.state = 'awaiting_review' AND r.routed_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM review_reminders m WHERE m.item_id = r.item_id "
            "AND m.period = ?) ORDER BY r.routed_at LIMIT ?",
            [destination, routed_before, period, limit],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def record_reminders(self, item_ids: Sequence[str], period: int) -> None:
        """Remember that these items were re-surfaced in ``period`` (once per period)."""
        if not item_ids:
            return
        table = pa.table(
            {
                "item_id": pa.array(list(item_ids), pa.string()),
                "period": pa.array([period] * len(item_ids), pa.int64()),
            }
        )
        self.con.register("_incoming_reminders", table)
        try:
            self.con.execute(
                "INSERT OR IGNORE INTO review_reminders BY NAME "
                "SELECT *, now() AS sent_at FROM _incoming_reminders"
            )
        finally:
            self.con.unregister("_incoming_reminders")

    def due_review_items(self, destination: str) -> list[dict[str, Any]]:
        """Review deliveries due to ``destination`` with what a batch summary shows about them."""
        cur = self.con.execute(
            "SELECT o.item_id, o.created_at, coalesce(p.needs_review, false) AS needs_review, "
            "p.label, coalesce(r.department, 'none') AS department FROM outbox o "
            "LEFT JOIN predictions p ON p.item_id = o.item_id "
            "LEFT JOIN routes r ON r.item_id = o.item_id "
            "WHERE o.destination = ? AND o.kind = 'review' "
            "AND o.state IN ('pending', 'sending', 'failed') "
            "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())",
            [destination],
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def review_batch(self, key: str) -> dict[str, Any] | None:
        """Return a batch parent message recorded under ``key``, if any."""
        cur = self.con.execute("SELECT * FROM review_batches WHERE key = ?", [key])
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    def record_review_batch(
        self, key: str, destination: str, channel: str, ts: str, items: int
    ) -> None:
        """Remember a batch parent message so a crashed run threads under the same parent."""
        self.con.execute(
            "INSERT OR IGNORE INTO review_batches (key, destination, channel, ts, items) "
            "VALUES (?, ?, ?, ?, ?)",
            [key, destination, channel, ts, items],
        )

    def recent_review_threads(self, destination: str, limit: int = 5) -> list[str]:
        """Thread timestamps of the latest batch parents (for reconciling threaded replies)."""
        rows = self.con.execute(
            "SELECT ts FROM review_batches WHERE destination = ? ORDER BY created_at DESC LIMIT ?",
            [destination, limit],
        ).fetchall()
        return [str(r[0]) for r in rows]

    # ------------------------------------------------- department handoffs (issue 6)
    def _insert_rows(self, table: str, rows: list[dict[str, Any]]) -> int:
        # One Arrow batch per call, like insert_items; the view name is private to this helper.
        if not rows:
            return 0
        self.con.register("_incoming_handoff_rows", pa.Table.from_pylist(rows))
        try:
            row = self.con.execute(
                f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM _incoming_handoff_rows"
            ).fetchone()
        finally:
            self.con.unregister("_incoming_handoff_rows")
        return int(row[0]) if row else 0

    def _dicts(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def handoff_ref(self, key: str) -> dict[str, Any] | None:
        """Return what a handoff delivery created or joined at its destination, if recorded."""
        rows = self._dicts("SELECT * FROM handoff_refs WHERE key = ?", [key])
        return rows[0] if rows else None

    def begin_handoff(
        self,
        key: str,
        item_id: str,
        destination: str,
        system: str,
        action: str,
        *,
        target_id: str | None = None,
        url: str | None = None,
        author_key: str | None = None,
    ) -> None:
        """Record that a handoff is about to be attempted (and, for a join, what it joins)."""
        self.con.execute(
            "INSERT INTO handoff_refs (key, item_id, destination, system, action, target_id, url, "
            "author_key, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'attempted') "
            "ON CONFLICT (key) DO UPDATE SET action = excluded.action, "
            "target_id = excluded.target_id, url = excluded.url",
            [key, item_id, destination, system, action, target_id, url, author_key],
        )

    def finish_handoff(
        self, key: str, target_id: str | None, url: str | None, note: bool = False
    ) -> None:
        """Record the confirmed target (ticket, issue, note) of a handoff; optionally queue its note."""
        self.con.execute(
            "UPDATE handoff_refs SET state = 'done', target_id = ?, url = ?, done_at = now(), "
            "note_state = CASE WHEN ? AND note_state = 'none' THEN 'pending' ELSE note_state END "
            "WHERE key = ?",
            [target_id, url, note, key],
        )

    def recent_tickets(
        self, destination: str, author_key: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """An author's tickets whose items were written between ``since`` and ``until``, newest first."""
        return self._dicts(
            "SELECT h.target_id, h.url, i.text, i.created_at FROM handoff_refs h "
            "JOIN items i ON i.id = h.item_id WHERE h.destination = ? AND h.author_key = ? "
            "AND h.state = 'done' AND i.created_at BETWEEN ? AND ? ORDER BY i.created_at DESC",
            [destination, author_key, since, until],
        )

    def pending_notes(self) -> list[dict[str, Any]]:
        """Handoffs whose Slack thread note has not been confirmed yet."""
        return self._dicts(
            "SELECT key, item_id, destination, system, action, target_id, url, note_state "
            "FROM handoff_refs WHERE note_state IN ('pending', 'sending') ORDER BY done_at",
            [],
        )

    def set_note_state(self, key: str, state: str, ref: str | None = None) -> None:
        """Move a thread note along pending -> sending -> posted (or skipped)."""
        self.con.execute(
            "UPDATE handoff_refs SET note_state = ?, note_ref = coalesce(?, note_ref) WHERE key = ?",
            [state, ref, key],
        )

    def review_ref(self, item_id: str) -> tuple[str, str | None] | None:
        """The state and reference (``channel:ts`` once sent) of the item's review message."""
        row = self.con.execute(
            "SELECT state, external_ref FROM outbox WHERE item_id = ? AND kind = 'review' "
            "ORDER BY (state = 'sent') DESC, created_at LIMIT 1",
            [item_id],
        ).fetchone()
        return (str(row[0]), None if row[1] is None else str(row[1])) if row else None

    def feature_signatures(self, destination: str) -> list[tuple[str, str]]:
        """``(group_id, signature)`` of every mention folded into a tracker's groups."""
        rows = self.con.execute(
            "SELECT m.group_id, m.signature FROM feature_mentions m "
            "JOIN feature_groups g ON g.id = m.group_id WHERE g.destination = ? "
            "ORDER BY m.added_at, m.key",
            [destination],
        ).fetchall()
        return [(str(g), str(sig)) for g, sig in rows]

    def feature_group(self, group_id: str) -> dict[str, Any] | None:
        """One feature-request group."""
        rows = self._dicts("SELECT * FROM feature_groups WHERE id = ?", [group_id])
        return rows[0] if rows else None

    def feature_mention(self, key: str) -> dict[str, Any] | None:
        """The group a handoff's item was folded into, if it was."""
        rows = self._dicts("SELECT * FROM feature_mentions WHERE key = ?", [key])
        return rows[0] if rows else None

    def add_feature_mention(
        self,
        key: str,
        item_id: str,
        similarity: float,
        group_id: str,
        new_group: dict[str, Any] | None = None,
        signature: str = "",
    ) -> None:
        """Fold an item into a group (creating the group first when given), counting it once."""
        with self.transaction():
            if new_group is not None:
                self._insert_rows("feature_groups", [new_group])
            added = self._insert_rows(
                "feature_mentions",
                [
                    {
                        "key": key,
                        "item_id": item_id,
                        "group_id": group_id,
                        "similarity": similarity,
                        "signature": signature,
                    }
                ],
            )
            if added:
                self.con.execute(
                    "UPDATE feature_groups SET mentions = mentions + 1, updated_at = now() "
                    "WHERE id = ?",
                    [group_id],
                )

    def set_group_issue(self, group_id: str, number: int, url: str) -> None:
        """Remember the tracker issue of a group."""
        self.con.execute(
            "UPDATE feature_groups SET issue_number = ?, issue_url = ?, updated_at = now() "
            "WHERE id = ?",
            [number, url, group_id],
        )

    def group_mentions(self, group_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The mentions of a group, oldest first, with what the issue body lists about each."""
        return self._dicts(
            "SELECT m.key, i.source, i.url, i.author_handle, i.text, i.created_at "
            "FROM feature_mentions m JOIN items i ON i.id = m.item_id WHERE m.group_id = ? "
            "ORDER BY m.added_at, m.key LIMIT ?",
            [group_id, limit],
        )

    def add_testimonial(self, row: dict[str, Any]) -> int:
        """Keep a kudos item as a testimonial; the same item twice is kept once."""
        return self._insert_rows("testimonials", [row])

    def praise_history(self, author_key: str) -> dict[str, Any]:
        """How often an author has praised us: ``count``, ``first`` and ``last``."""
        row = self.con.execute(
            "SELECT count(*), min(said_at), max(said_at) FROM testimonials WHERE author_key = ?",
            [author_key],
        ).fetchone()
        if not row:
            return {"count": 0, "first": None, "last": None}
        return {"count": int(row[0]), "first": row[1], "last": row[2]}

    def testimonials(self) -> list[dict[str, Any]]:
        """Every testimonial with its author's praise history, newest first."""
        return self._dicts(
            "SELECT t.said_at, t.source, t.author_handle, t.author_name, t.author_url, t.url, "
            "t.text, t.score, a.praise_count, a.first_praise, a.last_praise "
            "FROM testimonials t JOIN (SELECT author_key, count(*) AS praise_count, "
            "min(said_at) AS first_praise, max(said_at) AS last_praise FROM testimonials "
            "GROUP BY author_key) a USING (author_key) ORDER BY t.said_at DESC, t.item_id",
            [],
        )

    def unannounced_dead(self, limit: int = 100) -> list[dict[str, Any]]:
        """Dead-lettered deliveries whose current death has not been announced yet."""
        return self._dicts(
            "SELECT o.key, o.item_id, o.destination, o.kind, o.attempts, o.last_error, "
            "o.next_attempt_at AS died_at FROM outbox o WHERE o.state = 'dead' "
            "AND NOT EXISTS (SELECT 1 FROM dead_letter_alerts a WHERE a.key = o.key "
            "AND a.died_at = o.next_attempt_at) ORDER BY o.next_attempt_at, o.key LIMIT ?",
            [limit],
        )

    def mark_dead_announced(self, key: str, died_at: datetime, ref: str | None) -> None:
        """Remember that a dead-lettered delivery was announced."""
        self._insert_rows("dead_letter_alerts", [{"key": key, "died_at": died_at, "ref": ref}])


@contextmanager
def open_store(
    path: str | Path, *, read_only: bool = False, wait_s: float = 30.0
) -> Iterator[Store]:
    """Open the database, check it, apply migrations (when writable) and close it afterwards.

    Nothing is written to a file that fails a check: a damaged file or write-ahead log, a file
    that is not a triage store, or one of a newer schema raises before the first statement.

    Args:
        path: The DuckDB file; its folder is created when missing.
        read_only: Open without taking the write lock (fails if the file does not exist yet).
        wait_s: How long to wait for another process's write lock before raising ``StoreBusy``.

    Yields:
        A :class:`Store`.

    Raises:
        StoreError: ``StoreBusy``, ``StoreCorrupt`` (also for damage found by a later read) or
            ``StoreTooNew``, each with a message for the user.
    """
    p = Path(path)
    if not read_only:
        p.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(p, read_only, wait_s)
    try:
        try:
            _check_schema(con, p)
        except duckdb.Error as exc:
            raise (_damaged(p, exc) if _is_damage(exc) else exc) from exc
        store = Store(con, p)
        if not read_only:
            with _MIGRATE_LOCK:
                store.migrate()
        yield store
    except duckdb.Error as exc:
        # Damage in a data block surfaces only when a statement reads it.
        if _is_damage(exc):
            raise _damaged(p, exc) from exc
        raise
    finally:
        con.close()
