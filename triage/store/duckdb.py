"""The embedded backend: one DuckDB file, Arrow batches in and out.

The primitives of :class:`~triage.store.base.StoreBase` on a DuckDB connection, and the
DuckDB-only parts: migrations, deferred checkpoints, a second connection for a background writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from triage.store.errors import StoreOutOfMemory
from triage.store.interface import Store

# View names for registered Arrow tables: unique per registration, so nested ones never clash.
_VIEW_IDS = count()


def quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Turn DuckDB's progress bar off on this connection and return it.

    DuckDB draws a bar on standard output whenever a query runs longer than two seconds, in
    scripts and scheduled runs too: a 1M-mention ``triage bench --json`` printed one line of it
    before its JSON. The setting is per connection (cursors do not inherit it, and it cannot be
    set globally), so every connection and cursor the store makes goes through here. Printing is
    turned off as well as the bar: DuckDB turns the bar back on when ``progress_bar_time`` is set,
    and still drew its last line with the bar off, but never prints with printing off.
    """
    con.execute("SET enable_progress_bar = false")
    con.execute("SET enable_progress_bar_print = false")
    return con


class DuckDBStore(Store):
    """A connection to the triage database with the project's queries as methods.

    Open it briefly with :func:`triage.store.open_store`; long-lived services must not hold the
    file open, because DuckDB lets only one process write at a time.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        """Wrap an open connection; use :func:`open_store` rather than calling this directly."""
        self.con = quiet(con)
        self.path = path

    # ------------------------------------------------------------ primitives
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

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._memory_explained():
            row = self.con.execute(sql, list(params)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._memory_explained():
            cur = self.con.execute(sql, list(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def _stream(
        self, sql: str, batch_size: int, params: Sequence[Any] = ()
    ) -> Iterator[pa.RecordBatch]:
        # A separate cursor keeps this scan's snapshot while writes commit on the main one.
        with self._memory_explained():
            cur = quiet(self.con.cursor()).execute(sql, list(params))
            yield from cur.to_arrow_reader(batch_size)

    @contextmanager
    def _memory_explained(self) -> Iterator[None]:
        """Turn DuckDB's out-of-memory error into one that says which setting to raise.

        DuckDB's own message suggests ``SET memory_limit``, which a user of this tool cannot
        type anywhere; and the error comes back on every run with the same backlog.
        """
        try:
            yield
        except duckdb.OutOfMemoryException as exc:
            raise StoreOutOfMemory(self._memory_advice(exc)) from exc

    def _memory_advice(self, exc: BaseException) -> str:
        try:
            row = self.con.execute(
                "SELECT current_setting('memory_limit'), (SELECT count(*) FROM items)"
            ).fetchone()
        except duckdb.Error:
            row = None
        limit, items = (str(row[0]), int(row[1])) if row else ("its limit", None)
        size = f" of {items:,} items" if items is not None else ""
        first_line = str(exc).splitlines()[0]
        return (
            f"DuckDB ran out of memory ({limit}) in the store{size} at {self.path}: "
            f"{first_line}. What was stored before this is kept, but the next run will likely "
            "stop here again. Raise TRIAGE_DUCKDB_MEMORY (its key indexes grow with the store: "
            "routing a backlog of a million items into a store of six million needed 1GB), or "
            "move to the PostgreSQL store (README, Limits)."
        )

    @contextmanager
    def _with_rows(self, rows: pa.Table, like: str | None = None) -> Iterator[str]:
        # DuckDB reads a registered Arrow table in place: no copy, no row-by-row conversion.
        name = f"_incoming_{next(_VIEW_IDS)}"
        self.con.register(name, rows)
        try:
            yield name
        finally:
            self.con.unregister(name)

    # ------------------------------------------------------------ DuckDB only
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ DEFAULT now())"
        )
        return self._apply_migrations(self.con.execute)

    def defer_checkpoint(self) -> None:
        """Skip the checkpoint when this connection closes; the next writer folds the log in.

        Closing DuckDB checkpoints the whole file, indexes included: about a second on a
        220,000-item store, for a handful of changed rows. The changes are durable in the
        write-ahead log either way; a later run's close (or the log size limit) checkpoints them.
        """
        self.con.execute("PRAGMA disable_checkpoint_on_shutdown")

    def writer(self) -> DuckDBStore:
        """A second connection to the same database, for a writer thread (close it when done)."""
        return DuckDBStore(self.con.cursor(), self.path)

    def close(self) -> None:
        """Close this connection."""
        self.con.close()


def compact(path: Path) -> None:
    """Rewrite the database file so no deleted row's bytes survive in its free blocks.

    The tables, sequences and data are copied into a fresh file beside it (DuckDB's
    ``COPY FROM DATABASE``), which then replaces the original. Call it with the store closed.
    """
    fresh = path.with_name(path.name + ".compact")
    fresh.unlink(missing_ok=True)
    con = quiet(duckdb.connect(str(fresh)))
    try:
        name = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        con.execute(f"ATTACH '{_sql_path(path)}' AS old_store (READ_ONLY)")
        con.execute(f"COPY FROM DATABASE old_store TO {_quoted(name)}")
        con.execute("DETACH old_store")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(fresh, path)
    Path(str(path) + ".wal").unlink(missing_ok=True)


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
