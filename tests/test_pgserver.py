"""The PostgreSQL server the project starts itself: a real server answers, and nothing is left over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from triage import pgserver


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def test_a_real_server_answers_with_the_semantics_the_store_needs(pg_url: str) -> None:
    with psycopg.connect(pg_url) as con:
        version = con.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) >= 150000
        con.execute("CREATE TABLE outbox (key TEXT PRIMARY KEY, state TEXT NOT NULL)")
        con.execute("INSERT INTO outbox SELECT 'k' || g, 'pending' FROM generate_series(1, 5) g")
        # INSERT OR IGNORE of the DuckDB store becomes ON CONFLICT DO NOTHING: a repeat creates none.
        cur = con.execute(
            "INSERT INTO outbox VALUES ('k1', 'pending'), ('k9', 'pending') ON CONFLICT DO NOTHING"
        )
        assert cur.rowcount == 1
        con.commit()
    # Two workers claiming at once: the second skips the rows the first holds, never waits or
    # takes them too.
    claim = "SELECT key FROM outbox ORDER BY key LIMIT 2 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url) as second:
        mine = [r[0] for r in first.execute(claim).fetchall()]
        theirs = [r[0] for r in second.execute(claim).fetchall()]
        assert mine == ["k1", "k2"]
        assert theirs == ["k3", "k4"]


def test_each_test_gets_an_empty_database_of_its_own(
    pg_server: pgserver.PgServer, pg_url: str
) -> None:
    assert pg_url != pg_server.url
    with psycopg.connect(pg_url) as con:
        tables = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        name = con.execute("SELECT current_database()").fetchone()
    assert tables == (0,)
    assert name is not None and name[0].startswith("triage_test_")


def test_an_existing_server_is_used_and_left_running(pg_server: pgserver.PgServer) -> None:
    # What TRIAGE_TEST_PG_URL does: our databases on it are dropped, the server itself stays.
    with pgserver.running(pg_server.url) as external:
        assert external.process is None
        url = external.create_database("triage_external_check")
        with psycopg.connect(url) as con:
            con.execute("SELECT 1")
    with psycopg.connect(pg_server.url) as con:
        left = con.execute(
            "SELECT count(*) FROM pg_database WHERE datname = 'triage_external_check'"
        ).fetchone()
    assert left == (0,)


def test_start_and_stop_leave_nothing_behind() -> None:
    server = pgserver.start()
    assert server.process is not None and server.folder is not None
    pid, folder = server.process.pid, server.folder
    try:
        assert server.started_s < 60
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        # PostgreSQL refuses to run as root; under root we run it as an unprivileged account.
        assert uid != 0
        with psycopg.connect(server.url) as con:
            listen = con.execute("SHOW listen_addresses").fetchone()
            sockets = con.execute("SHOW unix_socket_directories").fetchone()
            fsync = con.execute("SHOW fsync").fetchone()
        assert listen == ("127.0.0.1",)
        assert sockets == ("",)
        assert fsync == ("off",)
    finally:
        server.stop()
    assert not _alive(pid)
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)


def test_server_shuts_down_when_its_owner_is_killed() -> None:
    # A test run killed with kill -9 must not leave a server running until reboot.
    script = (
        "import json, sys, time\n"
        "from triage import pgserver\n"
        "s = pgserver.start()\n"
        "print(json.dumps({'pid': s.process.pid, 'folder': str(s.folder), 'url': s.url}), "
        "flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    info = json.loads(line)
    try:
        with psycopg.connect(info["url"]) as con:
            assert con.execute("SELECT 1").fetchone() == (1,)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert _wait_gone(info["pid"], 20), "the server outlived the process that started it"
    finally:
        if owner.poll() is None:
            owner.kill()
        if _alive(info["pid"]):
            os.kill(info["pid"], signal.SIGKILL)
        shutil.rmtree(info["folder"], ignore_errors=True)


def test_a_named_binary_folder_without_postgres_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIAGE_PG_BINDIR", str(tmp_path))
    with pytest.raises(pgserver.PgServerError, match="has no initdb and postgres"):
        pgserver.find_bindir()


def test_initdb_failure_is_reported_with_its_cause_and_cleaned_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        folder = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(Path(folder))
        return str(folder)

    # A folder the unprivileged server account can read (pytest's tmp_path is private to root).
    bindir = Path(real_mkdtemp(prefix="triage-fakebin-"))
    try:
        bindir.chmod(0o755)
        for name, body in (
            ("initdb", "echo 'initdb: error: could not create directory: No space left' >&2"),
            ("postgres", "true"),
        ):
            exe = bindir / name
            exe.write_text(f"#!/bin/sh\n{body}\nexit 1\n")
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
        with pytest.raises(pgserver.PgServerError, match="No space left"):
            pgserver.start(bindir=bindir)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    assert len(made) == 1
    assert not made[0].exists()
