"""Opening the store: damage, a garbage write-ahead log and a newer schema are refused, untouched.

Only a real lock conflict ("Could not set lock on file") is waited out; everything else that DuckDB
reports at open, or on a later read of a damaged block, is a StoreCorrupt / StoreTooNew / StoreError
with a message for the user, raised before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.clirun import store_held_by_another_process
from triage.store import (
    SCHEMA_VERSION,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreOutOfMemory,
    StoreTooNew,
    open_store,
)
from triage.store.opening import memory_limit


def _digest(*paths: Path) -> list[str | None]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths]


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store with 20,000 items, checkpointed (no WAL)."""
    path = tmp_path_factory.mktemp("store") / "good.duckdb"
    with open_store(path) as store:
        store.con.execute(
            "INSERT INTO items (id, source, external_id, text, created_at, fetched_at) "
            "SELECT md5(range::VARCHAR), 's', range::VARCHAR, repeat(md5(range::VARCHAR), 8), "
            "now(), now() FROM range(20000)"
        )
        store.con.execute("CHECKPOINT")
    return path


def _copy(good: Path, tmp_path: Path) -> Path:
    target = tmp_path / "triage.duckdb"
    shutil.copy(good, target)
    return target


def _refused(path: Path, error: type[StoreError], words: str, read_only: bool = False) -> str:
    before = _digest(path, path.with_name(path.name + ".wal"))
    started = time.monotonic()
    with pytest.raises(error) as info, open_store(path, read_only=read_only) as store:
        store.status()
        store.con.execute("SELECT sum(length(text)) FROM items").fetchall()
    # No lock wait (the default wait is 30 s), and the files are exactly as they were.
    assert time.monotonic() - started < 10
    assert _digest(path, path.with_name(path.name + ".wal")) == before
    message = str(info.value)
    assert words in message and str(path) in message, message
    assert "locked" not in message
    return message


def test_a_good_store_opens(good_store: Path, tmp_path: Path) -> None:
    path = _copy(good_store, tmp_path)
    with open_store(path, read_only=True) as store:
        assert store.status()["items_total"] == 20000


@pytest.mark.parametrize("read_only", [False, True])
def test_a_truncated_file_is_damage_not_a_lock(
    good_store: Path, tmp_path: Path, read_only: bool
) -> None:
    path = _copy(good_store, tmp_path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    _refused(path, StoreCorrupt, "is damaged", read_only)


def test_a_damaged_data_block_is_damage_not_a_lock(good_store: Path, tmp_path: Path) -> None:
    # DuckDB says "... does not match stored checksum ... in block at location N": the word
    # "block" once made the store wait 30 s and report a lock.
    path = _copy(good_store, tmp_path)
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(64 * 1024))
    message = _refused(path, StoreCorrupt, "is damaged")
    assert "checksum" in message or "read enough bytes" in message


def test_a_file_that_is_not_duckdb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "triage.duckdb"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    _refused(path, StoreCorrupt, "is not a DuckDB database file")
    path.write_bytes(os.urandom(8192))
    _refused(path, StoreCorrupt, "is not a DuckDB database file", read_only=True)


def test_a_database_path_under_a_file_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    # mkdir's FileExistsError came out of `triage run --db` as a traceback (exit 1).
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as info, open_store(blocker / "x.duckdb"):
        pass
    assert f"{blocker} is a file, not a folder" in str(info.value)
    assert blocker.read_text() == "not a folder"


def test_a_garbage_wal_beside_a_good_file_is_refused_and_kept(
    good_store: Path, tmp_path: Path
) -> None:
    path = _copy(good_store, tmp_path)
    wal = path.with_name(path.name + ".wal")
    wal.write_bytes(os.urandom(20_000))
    _refused(path, StoreCorrupt, "write-ahead log")
    assert wal.stat().st_size == 20_000  # DuckDB alone would have discarded it silently


def test_a_damaged_entry_inside_a_real_wal_is_refused(good_store: Path, tmp_path: Path) -> None:
    path = _copy(good_store, tmp_path)
    # A writer killed before its checkpoint leaves its committed work in the WAL.
    code = (
        "import duckdb, os, signal\n"
        f"con = duckdb.connect({str(path)!r}, config={{'checkpoint_threshold': '1GB'}})\n"
        'con.execute("INSERT INTO quarantine (key, source, reason) '
        "SELECT range::VARCHAR, 's', 'r' FROM range(5000)\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    wal = path.with_name(path.name + ".wal")
    assert wal.stat().st_size > 1000
    with wal.open("r+b") as f:
        f.seek(200)
        f.write(os.urandom(256))
    _refused(path, StoreCorrupt, "is damaged")


def test_a_newer_schema_is_refused_before_anything_is_written(
    good_store: Path, tmp_path: Path
) -> None:
    path = _copy(good_store, tmp_path)
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, 'from the future')",
            [SCHEMA_VERSION + 1],
        )
        con.execute("CHECKPOINT")
    message = _refused(path, StoreTooNew, f"schema version {SCHEMA_VERSION + 1}")
    assert "Upgrade feedback-triage" in message
    _refused(path, StoreTooNew, "newer feedback-triage", read_only=True)


def test_a_duckdb_file_of_something_else_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "analytics.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE revenue AS SELECT 1 AS x")
    _refused(path, StoreError, "not a feedback-triage store")


def test_only_a_real_lock_conflict_waits(good_store: Path, tmp_path: Path) -> None:
    path = _copy(good_store, tmp_path)
    with store_held_by_another_process(path):
        started = time.monotonic()
        with (
            pytest.raises(StoreBusy, match="locked by another process") as info,
            open_store(path, wait_s=1.5),
        ):
            pass
        assert time.monotonic() - started >= 1.5  # it waited for the lock, then gave up
        assert info.value.exit_code == 1
    with open_store(path) as store:  # free again
        assert store.status()["items_total"] == 20000


_SLOW_QUERY = "SELECT count(*) FROM range(150000000) t(x) WHERE x % 7 = 3"


def test_long_queries_draw_no_progress_bar_on_stdout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """DuckDB's progress bar would land in the output of ``--json`` commands and scheduled runs."""
    control = duckdb.connect()
    control.execute("SET progress_bar_time = 0")  # draw at once instead of after two seconds
    control.execute(_SLOW_QUERY).fetchall()
    control.close()
    drawn = capfd.readouterr()
    assert "%" in drawn.out + drawn.err, "DuckDB drew no bar even on a bare connection"

    with open_store(tmp_path / "quiet.duckdb") as store:
        writer = store.writer()
        for con in (store.con, writer.con):
            con.execute("SET progress_bar_time = 0")
            assert con.execute(_SLOW_QUERY).fetchone() == (21428571,)
        writer.close()
    printed = capfd.readouterr()
    assert printed.out == "" and "%" not in printed.err


def _limit(store: object) -> str:
    con = store.con  # type: ignore[attr-defined]
    return str(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])


def test_streaming_stages_get_the_smaller_memory_limit_and_the_rest_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TRIAGE_DUCKDB_MEMORY", "TRIAGE_DUCKDB_MEMORY_STREAMING"):
        monkeypatch.delenv(name, raising=False)
    assert (memory_limit(), memory_limit(streaming=True)) == ("384MB", "256MB")
    db = tmp_path / "t.duckdb"
    # Connections in one process share one database instance: each use still gets its limit.
    with open_store(db, streaming=True) as ingest:
        assert _limit(ingest) == "244.1 MiB"  # 256 MB, as DuckDB shows it
        with open_store(db) as route:
            assert _limit(route) == "366.2 MiB"  # 384 MB
        with open_store(db, streaming=True) as classify:
            assert _limit(classify) == "244.1 MiB"
    # A general limit below the streaming one is never raised by it; units are DuckDB's.
    monkeypatch.setenv("TRIAGE_DUCKDB_MEMORY", "200MiB")
    assert memory_limit(streaming=True) == "200MiB"
    monkeypatch.setenv("TRIAGE_DUCKDB_MEMORY", "1GB")
    monkeypatch.setenv("TRIAGE_DUCKDB_MEMORY_STREAMING", "0.5 GiB")
    assert memory_limit(streaming=True) == "0.5 GiB" and memory_limit() == "1GB"
    monkeypatch.setenv("TRIAGE_DUCKDB_MEMORY_STREAMING", "2GB")
    assert memory_limit(streaming=True) == "1GB"


def test_running_out_of_duckdbs_memory_says_which_setting_to_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_DUCKDB_MEMORY", "16MB")
    db = tmp_path / "t.duckdb"
    with open_store(db) as store:
        # One list of ten million numbers: an aggregate DuckDB cannot spill to disk.
        big = "SELECT list(i) AS l FROM range(10000000) t(i)"
        with pytest.raises(StoreOutOfMemory) as caught:
            store._rows(big)
        with pytest.raises(StoreOutOfMemory):
            list(store._stream(big, 10))
        # The store is still usable after the failed statement.
        assert store.count("items") == 0
    message = str(caught.value)
    assert "TRIAGE_DUCKDB_MEMORY" in message and "PostgreSQL" in message
    assert str(db) in message and "of 0 items" in message and "15.2 MiB" in message
    assert "SET memory_limit" not in message  # DuckDB's advice, which no user can follow here
    assert isinstance(caught.value, StoreError) and caught.value.exit_code == 2
