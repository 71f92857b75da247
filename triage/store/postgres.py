"""The server backend: PostgreSQL, for several workers and services writing the same store at once.

The primitives of :class:`~triage.store.base.StoreBase` on a psycopg connection (Arrow batches go
in through ``COPY`` into a temporary stage table, then one ``INSERT ... SELECT ... ON CONFLICT``),
and what lets several processes work one backlog without doing anything twice:

* classify and route *claim* their batches (``FOR UPDATE SKIP LOCKED``) and store the results in
  the claiming transaction, so a batch is either done once or, if its worker dies, released whole;
* a delivery is claimed with a session advisory lock on its key, held while it is sent and
  recorded, and released by the server when the worker's connection drops (``kill -9``); a row
  left ``sending`` is then reconciled by the next worker, as with the embedded file;
* a source is fetched by one run at a time: a session advisory lock per source.

Dialect differences are translated in :mod:`triage.store.pgsql`, nowhere else.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pyarrow as pa

from triage.models import LABELS
from triage.store import pgsql
from triage.store.classify import SCORE_COLUMNS
from triage.store.interface import Store
from triage.store.schema import SCHEMA_VERSION

_STAGE_IDS = count()
# Advisory lock namespaces (the first of the two int4 keys): one per kind of claim.
_LOCK_MIGRATE, _LOCK_SOURCE, _LOCK_DELIVERY, _LOCK_DECISION = 7301, 7302, 7303, 7304
# Column types per table, read once per process (the schema only changes by migration).
_TYPES: dict[tuple[str, str], dict[str, str]] = {}
_TYPES_LOCK = threading.Lock()


def _key(text: str) -> int:
    """A stable signed 32-bit key for an advisory lock (the same in every process)."""
    return zlib.crc32(text.encode("utf-8")) - 2**31


class PgStore(Store):
    """A connection to a PostgreSQL triage database; open it with :func:`triage.store.open_store`."""

    claims_work = True

    def __init__(self, con: psycopg.Connection[Any], url: str, shown: str) -> None:
        """Wrap an open (autocommit) connection; ``shown`` is the URL without its password."""
        self.con = con
        self.url = url
        self.path = Path(shown)
        self._claimed: list[str] = []

    # ------------------------------------------------------------ primitives
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction (a savepoint inside another): all of it, or none."""
        with self.con.transaction():
            yield

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.con.execute(pgsql.statement(sql), list(params))
        return max(cur.rowcount, 0)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(pgsql.statement(sql), list(params))
        if cur.description is None:
            return []
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def _stream(
        self, sql: str, batch_size: int, params: Sequence[Any] = ()
    ) -> Iterator[pa.RecordBatch]:
        # A connection of its own with a server-side cursor: one snapshot, rows in batches.
        with (
            psycopg.connect(self.url, **_CONNECT) as con,
            con.transaction(),
            con.cursor(name="triage_stream") as cur,
        ):
            cur.execute(pgsql.statement(sql), list(params))
            while rows := cur.fetchmany(batch_size):
                names = [d.name for d in cur.description or ()]
                yield pa.RecordBatch.from_pylist([dict(zip(names, r, strict=True)) for r in rows])

    @contextmanager
    def _with_rows(self, rows: pa.Table, like: str | None = None) -> Iterator[str]:
        # COPY into a temporary stage table (dropped at commit): tens of thousands of rows a
        # second, where one INSERT per row manages a few thousand.
        name = f"_incoming_{next(_STAGE_IDS)}"
        target = self._types(like) if like else {}
        columns = ", ".join(
            f'"{f.name}" {target.get(f.name) or pgsql.column_type(f.type)}' for f in rows.schema
        )
        with self.con.transaction():
            self.con.execute(f"CREATE TEMPORARY TABLE {name} ({columns}) ON COMMIT DROP")
            names = ", ".join(f'"{n}"' for n in rows.column_names)
            with self.con.cursor().copy(f"COPY {name} ({names}) FROM STDIN (FORMAT csv)") as cp:
                cp.write(pgsql.csv_bytes(rows))
            yield name

    def _insert_statement(self, table: str, query: str, conflict: str) -> str:
        # PostgreSQL matches columns by position: name them, as the query returns them.
        cur = self.con.execute(f"SELECT * FROM ({query}) q LIMIT 0")
        names = ", ".join(f'"{d.name}"' for d in cur.description or ())
        return (
            f"INSERT INTO {table} ({names}) SELECT {names} FROM ({query}) q ON CONFLICT {conflict}"
        )

    def _types(self, table: str) -> dict[str, str]:
        key = (self.url, table)
        with _TYPES_LOCK:
            if key not in _TYPES:
                rows = self.con.execute(
                    "SELECT column_name, format_type(atttypid, atttypmod) FROM "
                    "information_schema.columns c JOIN pg_attribute a ON a.attrelid = "
                    "%s::regclass AND a.attname = c.column_name WHERE c.table_name = %s "
                    "AND c.table_schema = current_schema()",
                    [table, table],
                ).fetchall()
                _TYPES[key] = {str(r[0]): str(r[1]) for r in rows}
            return _TYPES[key]

    # ------------------------------------------------------------ dialect
    def insert_predictions(self, table: pa.Table) -> int:
        """Store a batch of predictions (``scores`` as ``score_<label>`` columns, see the base)."""
        scores = pgsql.scores_json(table, LABELS)
        rows = table.drop_columns(SCORE_COLUMNS.split(", ")).append_column("scores", scores)
        return self._insert("predictions", rows)

    def _items_above(self, results: str, *, having: bool) -> str:
        """Items above a floor with (or without) a result row, in PostgreSQL's words."""
        exists = "EXISTS" if having else "NOT EXISTS"
        return (
            f"items i WHERE i.seq > ? AND {exists} "
            f"(SELECT 1 FROM {results} r WHERE r.item_id = i.id)"
        )

    # ------------------------------------------------------------ claims
    def unclassified(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Claim items without a prediction, a batch at a time, until none is left unclaimed.

        Each batch stays locked (``FOR UPDATE SKIP LOCKED``: other workers take the next ones)
        until the caller comes back for the next batch; write its predictions before that, on
        this store, and they commit with the claim.
        """
        return self._claims(
            "SELECT i.seq, i.id, i.source, i.text, i.language FROM items i WHERE i.seq > %s AND "
            "NOT EXISTS "
            "(SELECT 1 FROM predictions p WHERE p.item_id = i.id) ORDER BY i.seq LIMIT %s "
            "FOR UPDATE OF i SKIP LOCKED",
            batch_size,
            "id",
            "predictions",
            self.pending_floor("classify"),
        )

    def unrouted(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Claim classified items without a route, like :meth:`unclassified`."""
        return self._claims(
            "SELECT i.seq, p.item_id, i.source, i.text, i.language, p.label, p.score, "
            "p.needs_review "
            "FROM predictions p JOIN items i ON i.id = p.item_id WHERE i.seq > %s AND NOT "
            "EXISTS (SELECT 1 FROM routes r WHERE r.item_id = p.item_id) ORDER BY i.seq "
            "LIMIT %s FOR UPDATE OF p SKIP LOCKED",
            batch_size,
            "item_id",
            "routes",
            self.pending_floor("route"),
        )

    def _claims(
        self, sql: str, batch_size: int, id_column: str, results: str, floor: int
    ) -> Iterator[pa.RecordBatch]:
        # One sweep in item order from the stage's floor (nothing under it is pending: see
        # triage.store.floors), then one more from the floor for rows that were locked by a
        # worker that has died since; a row this call already handed out ends the sweep (its
        # caller did not store it, and handing it out again would loop).
        seen: set[str] = set()
        after, sweeps = floor, 0
        while sweeps < 2:
            # The claim, the caller's work on it and its writes are one transaction: a worker
            # killed meanwhile leaves nothing half-written, and its rows free for the others.
            with self.con.transaction():
                cur = self.con.execute(sql, [after, batch_size])
                names = [d.name for d in cur.description or ()]
                rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
                ids = [str(r[id_column]) for r in rows]
                if rows and not seen.intersection(ids):
                    seen.update(ids)
                    after = max(int(r.pop("seq")) for r in rows)
                    # A row whose lock we got the moment another worker committed its results
                    # still passed the claim's NOT EXISTS (read before that commit): a second
                    # statement sees the commit, and the row is left out.
                    done = self._present(results, "item_id", ids)
                    rows = [r for r in rows if str(r[id_column]) not in done]
                    if rows:
                        batch = pa.RecordBatch.from_pylist(rows)
                        # A column with no value in this batch (e.g. no language detected) is
                        # text, as it is from the file backend, not Arrow's null type.
                        yield pa.RecordBatch.from_arrays(
                            [
                                c.cast(pa.string()) if pa.types.is_null(c.type) else c
                                for c in batch.columns
                            ],
                            names=batch.schema.names,
                        )
                    continue
            if sweeps == 0 and rows == [] and after > floor:
                after, sweeps = floor, 1
            else:
                return

    @contextmanager
    def source_lease(self, source: str) -> Iterator[bool]:
        """Hold ``source``'s fetch lease (a session advisory lock) for the block, if free.

        The lease goes with the connection: a worker that dies frees it at once, and the next
        run fetches from the cursor that the dead one last committed.
        """
        args = [_LOCK_SOURCE, _key(source)]
        got = self.con.execute("SELECT pg_try_advisory_lock(%s, %s)", args).fetchone()
        if not (got and got[0]):
            yield False
            return
        try:
            yield True
        finally:
            if not self.con.closed:
                self.con.execute("SELECT pg_advisory_unlock(%s, %s)", args)

    def due_deliveries(
        self, limit: int, destinations: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Claim due deliveries: each returned row is locked to this worker until its next call.

        Rows another worker is sending are skipped; a row is re-read after it is locked, so one
        finished meanwhile is not sent again.
        """
        self._release_claims()
        candidates = super().due_deliveries(limit * 2 + 20, destinations)
        mine: list[dict[str, Any]] = []
        for row in candidates:
            if len(mine) >= limit:
                break
            got = self.con.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_DELIVERY, _key(row["key"])]
            ).fetchone()
            if got and got[0]:
                self._claimed.append(row["key"])
                mine.append(row)
        if not mine:
            return []
        # Still due now that it is ours (another worker may have finished it before our lock).
        fresh = self._rows(
            "SELECT key, state, attempts FROM outbox WHERE key IN (SELECT unnest(?)) "
            "AND state IN ('pending', 'sending', 'failed') "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= now())",
            [[r["key"] for r in mine]],
        )
        now = {r["key"]: r for r in fresh}
        return [{**r, **now[r["key"]]} for r in mine if r["key"] in now]

    def lock_for_decisions(self, item_ids: Sequence[str]) -> None:
        """Lock these items for the transaction (advisory locks, in key order: no deadlock).

        A click written directly, a late one committing after its copy was spooled, and the
        worker applying the spool may decide one item at once: each waits for the one before,
        and then reads what it committed (the first decision wins, an audited one is skipped).
        """
        keys = sorted({_key(i) for i in item_ids})
        if keys:
            self.con.execute(
                "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k",
                [_LOCK_DECISION, keys],
            )

    def _release_claims(self) -> None:
        if self._claimed and not self.con.closed:
            self.con.execute(
                "SELECT pg_advisory_unlock(%s, k) FROM unnest(%s::int[]) AS k",
                [_LOCK_DELIVERY, [_key(k) for k in self._claimed]],
            )
        self._claimed = []

    # ------------------------------------------------------------ server only
    # Indexes the claims and the due-deliveries scan need on a server shared by several workers
    # (the embedded file scans instead); created after the migrations, idempotently.
    SERVER_INDEXES: ClassVar[dict[str, str]] = {
        "items_seq": "items (seq)",
        # A run reads each source's latest items to estimate its label mix (recent_texts).
        "items_source_seq": "items (source, seq)",
        "outbox_due": "outbox (created_at) WHERE state IN ('pending', 'sending', 'failed')",
        "outbox_item": "outbox (item_id)",
        "routes_state": "routes (state)",
    }

    def _up_to_date(self) -> bool:
        # Plain reads: every worker and every click opens the store, and taking the migration
        # path (DDL locks a table even when there is nothing to create) would make them queue
        # behind, or deadlock with, the writers.
        if not self._scalar("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            return False
        version = int(self._scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))
        indexes = self._scalar(
            "SELECT count(*) FROM pg_class WHERE relkind = 'i' AND relname = ANY(?) "
            "AND relnamespace = current_schema()::regnamespace",
            [list(self.SERVER_INDEXES)],
        )
        return version >= SCHEMA_VERSION and int(indexes) == len(self.SERVER_INDEXES)

    def migrate(self) -> int:
        """Apply pending migrations (one process at a time); return the schema version."""
        if self._up_to_date():
            return SCHEMA_VERSION
        with self.con.transaction():
            self.con.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_MIGRATE])
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT, applied_at TIMESTAMPTZ DEFAULT now())"
            )
            current = self._apply_migrations(
                lambda sql: self.con.execute(pgsql.migration(sql).encode())
            )
            for name, spec in self.SERVER_INDEXES.items():
                if not self._scalar("SELECT to_regclass(?) IS NOT NULL", [name]):
                    self.con.execute(f"CREATE INDEX {name} ON {spec}")
        return current

    def defer_checkpoint(self) -> None:
        """Nothing to defer: the server checkpoints on its own schedule."""

    def writer(self) -> PgStore:
        """A second connection, for a writer thread (the flow writes inline instead: the claim's
        writes must commit with it, on the claiming connection)."""
        return PgStore(connect(self.url), self.url, str(self.path))

    def close(self) -> None:
        """Release this worker's delivery claims and close the connection."""
        if not self.con.closed:
            self._release_claims()
            self.con.close()


# Fail fast when the server is away; keep dead peers from holding claims for long. Keepalives end
# an idle connection to a vanished server after ~60 s; tcp_user_timeout does the same for a
# connection with a write in flight that the server never acknowledges (without it a write stuck
# on a dropped link keeps its thread until the kernel's retransmissions give up, ~15 min).
_CONNECT: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


def connect(url: str, timeout_s: float = 5.0) -> psycopg.Connection[Any]:
    """An autocommit connection in UTC that interpolates parameters on the client.

    Client-side binding lets the sections' SQL pass None and lists where PostgreSQL's
    server-side binding would need a cast on every parameter (``? IS NULL``, ``LIMIT ?``).
    """
    con: psycopg.Connection[Any] = psycopg.connect(
        url,
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
        options="-c timezone=UTC -c idle_in_transaction_session_timeout=600000",
        **{**_CONNECT, "connect_timeout": max(1, round(timeout_s))},
    )
    return con
