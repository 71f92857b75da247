"""What every section of the store is written against: a few primitives and helpers on them.

Like a small database object (``execute``, one read helper, one insert helper), so the sections
(``ingest``, ``classify``, ``route``, ``outbox``, ``review``, ``handoffs``, ``status``) hold the
store's logic and SQL and nothing about connections. A backend implements the primitives: the
embedded DuckDB file in :mod:`triage.store.duckdb`; a server backend implements the same five
(with its own bulk path, e.g. COPY into a stage table) and overrides the few statements whose
dialect differs (listed in each section's docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa

from triage.store.schema import MIGRATIONS

# Ids per `IN (?, ...)` lookup: large enough for one batch, small enough for a short statement.
LOOKUP_CHUNK = 500

# What an insert may take: an Arrow table, or rows as dicts (turned into one Arrow batch).
Rows: TypeAlias = "pa.Table | Sequence[dict[str, Any]]"


def marks(values: Sequence[Any]) -> str:
    """``?, ?, ?``: one placeholder per value."""
    return ", ".join("?" for _ in values)


def chunks(values: Sequence[str], size: int = LOOKUP_CHUNK) -> Iterator[list[str]]:
    """The distinct values, in order, ``size`` at a time."""
    distinct = list(dict.fromkeys(values))
    for start in range(0, len(distinct), size):
        yield distinct[start : start + size]


class StoreBase:
    """The primitives a backend provides, and the helpers every section uses on top of them."""

    path: Path
    # True where several processes may work the same backlog at once (a server database): the
    # pending-work reads then claim what they return, and the flow writes inline, in the claim.
    claims_work = False

    # ------------------------------------------------------------ primitives (per backend)
    def transaction(self) -> AbstractContextManager[None]:
        """Run the block in one transaction: all of it is stored, or none of it."""
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement that changes rows; return how many it changed."""
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The one read helper: every row of a query as a dict of its columns."""
        raise NotImplementedError

    def _stream(
        self, sql: str, batch_size: int, params: Sequence[Any] = ()
    ) -> Iterator[pa.RecordBatch]:
        """A long read as Arrow batches, on its own snapshot (writes may commit meanwhile)."""
        raise NotImplementedError

    def _with_rows(self, rows: pa.Table, like: str | None = None) -> AbstractContextManager[str]:
        """Make ``rows`` readable by SQL for the block; yields the name to select from.

        ``like`` names the table the rows are meant for: a backend that copies them may give its
        columns that table's types.
        """
        raise NotImplementedError

    def _insert_statement(self, table: str, query: str, conflict: str) -> str:
        """The INSERT of ``query``'s rows into ``table``, columns matched by name."""
        return f"INSERT INTO {table} BY NAME {query} ON CONFLICT {conflict}"

    @contextmanager
    def source_lease(self, source: str) -> Iterator[bool]:
        """Hold the right to fetch ``source`` for the block; yields False when another run has it.

        The embedded file admits one writer, so holding the store is holding every source.
        """
        del source
        yield True

    # ------------------------------------------------------------ helpers (shared)
    def _insert(
        self,
        table: str,
        rows: Rows,
        *,
        select: str = "SELECT * FROM {rows}",
        conflict: str = "DO NOTHING",
    ) -> int:
        """The one insert helper: rows in one batch, matched to ``table``'s columns by name.

        Args:
            table: The target table.
            rows: An Arrow table or dicts; nothing to insert returns 0 without a statement.
            select: The query over the incoming rows (``{rows}`` names them), e.g. to add or
                join columns.
            conflict: What a row whose key exists does: ``DO NOTHING`` (keep the first, so
                inserting twice is harmless) or ``(key) DO UPDATE SET ...``.

        Returns:
            How many rows were inserted (or updated by ``conflict``).
        """
        table_rows = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        if table_rows.num_rows == 0:
            return 0
        with self._with_rows(table_rows, like=table) as name:
            query = select.replace("{rows}", name)
            return self._execute(self._insert_statement(table, query, conflict))

    def _update_from(self, rows: pa.Table, sql: str, like: str | None = None) -> int:
        """One set-based statement over a table of changes (``{rows}`` names them)."""
        if rows.num_rows == 0:
            return 0
        with self._with_rows(rows, like=like) as name:
            return self._execute(sql.replace("{rows}", name))

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when there is none)."""
        rows = self._rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def _apply_migrations(self, run: Callable[[str], object]) -> int:
        """Apply the migrations newer than ``schema_migrations`` records; return the version.

        Each runs (``run`` executes its SQL in the backend's dialect) in its own transaction,
        together with its row in ``schema_migrations``: a crash leaves a whole migration or none.
        """
        current = int(self._scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))
        for version, name, sql in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction():
                run(sql)
                self._insert("schema_migrations", [{"version": version, "name": name}])
            current = version
        return current

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        """The first row, or None."""
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _present(self, table: str, column: str, values: Sequence[str]) -> set[str]:
        """Which of ``values`` the column holds (looked up through its index, in chunks)."""
        found: set[str] = set()
        for chunk in chunks(values):
            rows = self._rows(
                f"SELECT {column} AS v FROM {table} WHERE {column} IN ({marks(chunk)})", chunk
            )
            found.update(str(r["v"]) for r in rows)
        return found
