"""The store: every SQL statement the project runs, in one package, behind one interface.

* :mod:`~triage.store.schema`: the migrations (the schema, table by table) and state names;
* :mod:`~triage.store.opening`: opening a file (damaged-file, lock and newer-schema checks);
* :mod:`~triage.store.base`: the primitives each section is written against, with the one insert
  helper (``_insert``) and the one read helper (``_rows``);
* one module per section: ``ingest`` (items, cursors, quarantine), ``classify``, ``route``,
  ``outbox``, ``review``, ``handoffs``, ``status``, ``privacy`` (erasure, retention);
* :mod:`~triage.store.interface`: :class:`Store`, the one interface over every section;
* :mod:`~triage.store.duckdb`: the embedded DuckDB backend that implements the primitives;
* :mod:`~triage.store.postgres`: the PostgreSQL backend, for several workers at once, with its
  dialect translated in :mod:`~triage.store.pgsql` and :mod:`~triage.store.location` telling a
  URL from a file path.

Callers only ever see :func:`open_store` and :class:`Store`.
"""

from __future__ import annotations

from duckdb import Error as _DuckDBError
from psycopg import Error as _PsycopgError

from triage.store.errors import (
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreOutOfMemory,
    StoreTooNew,
)
from triage.store.interface import Store
from triage.store.opening import open_store
from triage.store.schema import MIGRATIONS, OUTBOX_STATES, SCHEMA_VERSION

# What a statement of either backend raises when the database refuses it (DuckDB's out-of-memory
# error comes explained, as StoreOutOfMemory).
DATABASE_ERRORS: tuple[type[Exception], ...] = (_DuckDBError, _PsycopgError, StoreOutOfMemory)

__all__ = [
    "DATABASE_ERRORS",
    "MIGRATIONS",
    "OUTBOX_STATES",
    "SCHEMA_VERSION",
    "Store",
    "StoreBusy",
    "StoreCorrupt",
    "StoreError",
    "StoreOutOfMemory",
    "StoreTooNew",
    "open_store",
]
