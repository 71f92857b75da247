"""Opening the store: refuse what is damaged, too new or not a store; wait out a lock.

A ``postgresql://`` URL opens the server backend (:func:`_open_server`); anything else is a
DuckDB file.

Nothing is written to a file that fails a check (README, "Reliability": database files).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from triage.store import location
from triage.store.duckdb import DuckDBStore
from triage.store.errors import StoreBusy, StoreCorrupt, StoreError, StoreTooNew
from triage.store.interface import Store
from triage.store.schema import SCHEMA_VERSION

# Tasks of one flow run open the store from several threads; only one may migrate at a time.
_MIGRATE_LOCK = threading.Lock()

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B\s*", re.IGNORECASE)


def memory_limit(streaming: bool = False) -> str:
    """DuckDB's memory limit for a use of the store (README, "Performance").

    ``TRIAGE_DUCKDB_MEMORY`` (384MB) in general. The stages that only stream 5,000-row batches
    in and out (ingest, classification) take ``TRIAGE_DUCKDB_MEMORY_STREAMING`` (256MB) when that
    is lower: they spill without slowing down, and it keeps a 1M-item backfill under 1 GB. Routing
    keeps the larger pool, which inserting a million deliveries beside the key indexes needs.
    """
    general = os.environ.get("TRIAGE_DUCKDB_MEMORY", "384MB")
    if not streaming:
        return general
    streaming_limit = os.environ.get("TRIAGE_DUCKDB_MEMORY_STREAMING", "256MB")
    sizes = [_size(general), _size(streaming_limit)]
    if None in sizes:
        return streaming_limit  # not a size we read: DuckDB says what is wrong with it
    return general if sizes[0] <= sizes[1] else streaming_limit  # type: ignore[operator]


def _size(text: str) -> float | None:
    match = _SIZE.fullmatch(text)
    if match is None:
        return None
    number, prefix, binary = match.groups()
    power = "KMGT".find(prefix.upper()) + 1 if prefix else 0
    return float(number) * (1024 if binary else 1000) ** power


def duckdb_threads() -> int:
    """``TRIAGE_DUCKDB_THREADS`` (1), or a StoreError (exit 2) naming it when it is not 1 or more.

    A StoreError, not int()'s ValueError: the command line answers it with one line.
    """
    raw = os.environ.get("TRIAGE_DUCKDB_THREADS") or "1"
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise StoreError(
            f"TRIAGE_DUCKDB_THREADS must be a whole number of threads (1 or more), not {raw!r}"
        )
    return threads


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


def _connect(
    path: Path, read_only: bool, wait_s: float, memory: str
) -> duckdb.DuckDBPyConnection:
    # DuckDB admits one writing process per file; a scheduled run may overlap a CLI call, so wait a
    # little instead of failing at once, then say plainly what is going on.
    _check_files(path)
    threads = duckdb_threads()
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            config: dict[str, str | bool | int | float | list[str]] = {
                # A bounded buffer pool keeps a 1M-item backfill under 1 GB of memory; DuckDB
                # spills to disk beyond it instead of taking 80% of RAM, its default. Measured
                # 1M-mention peak RSS: 1,044-1,057 MB with 512MB, 961 MB with 384MB (the faster
                # columnar ingest leaves more freed memory with the allocators at any one time).
                # The same in every connection's configuration: DuckDB refuses a second
                # connection to a file whose configuration differs from the first's. A use's
                # own limit is set below.
                "memory_limit": memory_limit(),
                # The pipeline writes 5,000-row batches from one thread per stage: DuckDB's worker
                # threads buy nothing on batches that small and take a core from the classifier
                # (100k-mention ingest on 2 cores: 8.4 s with 2 threads, 6.0 s with 1).
                "threads": threads,
                # The default 16 MB WAL limit checkpoints the whole file (indexes included) every
                # ~25k items of a backfill; a checkpoint per ~400k items costs far less in total.
                "checkpoint_threshold": os.environ.get("TRIAGE_DUCKDB_CHECKPOINT", "256MB"),
                # Never fetch an extension at run time (an odd file can make DuckDB try to).
                "autoinstall_known_extensions": False,
            }
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            # Connections in one process share one database instance and its limit: each use
            # sets its own (the last to open wins while uses overlap; a flow's stages do not).
            con.execute("SET memory_limit = '{}'".format(memory.replace("'", "''")))
            return con
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


@contextmanager
def open_store(
    path: str | Path,
    *,
    read_only: bool = False,
    wait_s: float = 30.0,
    streaming: bool = False,
) -> Iterator[Store]:
    """Open the database, check it, apply migrations (when writable) and close it afterwards.

    Nothing is written to a file that fails a check: a damaged file or write-ahead log, a file
    that is not a triage store, or one of a newer schema raises before the first statement.

    Args:
        path: The DuckDB file (its folder is created when missing) or a ``postgresql://`` URL.
        read_only: Open without taking the write lock (fails if the file does not exist yet).
        wait_s: How long to wait for another process's write lock before raising ``StoreBusy``.
        streaming: For a stage that only streams batches in and out: DuckDB's smaller memory
            limit (:func:`memory_limit`).

    Yields:
        A :class:`Store`.

    Raises:
        StoreError: ``StoreBusy``, ``StoreCorrupt`` (also for damage found by a later read) or
            ``StoreTooNew``, each with a message for the user.
    """
    if location.is_server(path):
        with _open_server(str(path), read_only=read_only, wait_s=wait_s) as server_store:
            yield server_store
        return
    p = Path(path)
    if not read_only:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # A path under a regular file, or a folder nobody may create: the user's to fix,
            # said in one line like any other problem with the database's place.
            why = location.why_not_made(p.parent, exc)
            raise StoreError(f"cannot create the folder of the database {p}: {why}") from None
    con = _connect(p, read_only, wait_s, memory_limit(streaming))
    try:
        try:
            _check_schema(con, p)
        except duckdb.Error as exc:
            raise (_damaged(p, exc) if _is_damage(exc) else exc) from exc
        store = DuckDBStore(con, p)
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


@contextmanager
def _open_server(url: str, *, read_only: bool, wait_s: float) -> Iterator[Store]:
    """Connect to PostgreSQL, check the schema, migrate (when writable); close afterwards.

    A server that cannot be reached raises ``StoreBusy`` (trying again later may work; the Slack
    app and the intake server spool meanwhile); a refused login or a missing database is a
    ``StoreError`` the user must fix. The password never appears in a message.
    """
    import psycopg

    from triage.store.postgres import PgStore, connect

    shown = location.shown(url)
    deadline = time.monotonic() + min(wait_s, 10.0)
    while True:
        try:
            con = connect(url, timeout_s=min(wait_s, 5.0))
            break
        except psycopg.OperationalError as exc:
            first = location.shown(str(exc).strip().splitlines()[0] if str(exc) else "")
            if "password authentication" in first or "does not exist" in first:
                raise StoreError(f"cannot open the database {shown}: {first}") from None
            if time.monotonic() >= deadline:
                raise StoreBusy(
                    f"the database server {shown} cannot be reached ({first}); try again when it "
                    "is up"
                ) from None
            time.sleep(0.2)
    store = PgStore(con, url, shown)
    try:
        found = 0
        if store._scalar("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            found = store._scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if int(found or 0) > SCHEMA_VERSION:
            raise StoreTooNew(
                f"{shown} has schema version {found}, written by a newer feedback-triage; this "
                f"one knows versions up to {SCHEMA_VERSION}. Upgrade feedback-triage (nothing "
                "was changed)"
            )
        if read_only:
            con.execute("SET default_transaction_read_only = on")
        else:
            store.migrate()
        yield store
    finally:
        store.close()
