"""What the store raises when it cannot be used as it is (both backends, opening and later)."""

from __future__ import annotations


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


class StoreOutOfMemory(StoreError):
    """DuckDB needed more than its memory limit (``TRIAGE_DUCKDB_MEMORY``) for a statement.

    What was committed before stays, and the next run goes on from there; but the same backlog on
    the same store will usually fail the same way until the limit is raised.
    """
