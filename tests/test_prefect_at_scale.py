"""Prefect at scale (README, "Prefect at scale"), end to end, as an operator sets it up.

A Prefect server of the test's own whose database is PostgreSQL
(``PREFECT_API_DATABASE_CONNECTION_URL``), the process pool of prefect.yaml with two
`prefect worker start` processes, `prefect deploy --all`, the ``triage_db`` variable pointing at a
PostgreSQL store, and two runs of ``triage-parallel`` started at once over one generated backlog.
Both servers are real (``tests/pg_fixture.py`` starts PostgreSQL); Slack is the benchmark's local
recording sink, so a message posted twice would be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun, WorkerStatus
from prefect.deployments import run_deployment
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    temporary_settings,
)
from prefect.variables import Variable

from tests.clirun import BIN, clean_env
from tests.pg_fixture import fresh_database
from tests.prefect_deploy import POOL, deploy, prefect_env, stop, wait_for_run, workers
from triage import pgserver
from triage.cli.bench_data import DESTINATIONS, SOURCES, generate, write_config
from triage.cli.bench_scale import RecordingSink, check

# About a minute; the deadlines inside (server start, workers online, runs) allow for a machine
# many times slower, past pytest-timeout's default of 600 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PARALLEL = "triage/triage-parallel"
# Enough that the first run is still fetching when the second starts (about 8 s later: a worker's
# poll and a new process): the second finds a source leased and classifies and routes its share.
MENTIONS = 30_000
# Batches of 1,000 (the flow's batch_size parameter): each stage claims and commits in steps small
# enough for a second run to take its share.
BATCH = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def prefect_db(pg_server: pgserver.PgServer) -> Iterator[str]:
    """A fresh database on the test PostgreSQL server for Prefect's own tables, dropped afterwards."""
    with fresh_database(pg_server, "prefect_test") as url:
        yield url


@pytest.fixture
def prefect_server_on_pg(prefect_db: str, tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 with its database on PostgreSQL; yields its API URL."""
    port = _free_port()
    log = tmp_path / "prefect-server.log"
    env = clean_env(
        ephemeral=True,
        PREFECT_API_DATABASE_CONNECTION_URL=prefect_db.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    args = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(BIN / "prefect"), *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        # Creating Prefect's tables on a fresh database takes a while on a loaded machine.
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"prefect server exited:\n{_tail(log)}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"prefect server not up in 240 s:\n{_tail(log)}"
            time.sleep(1)
        yield api
    finally:
        stop(server)


def _without_password(url: str) -> tuple[str, str]:
    """``(url without its password, the password)``: the password goes in PGPASSWORD."""
    parts = urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), parts.password or ""


def _online_workers() -> int:
    async def count() -> int:
        async with get_client() as client:
            found = await client.read_workers_for_work_pool(POOL)
        return sum(w.status == WorkerStatus.ONLINE for w in found)

    return asyncio.run(count())


def _workers_of(runs: list[FlowRun], timeout_s: float = 120) -> dict[str, str]:
    """Which worker submitted each run (flow run id -> worker name), from the workers' events.

    Events reach the server's database a few seconds after they happen: poll until all are there.
    """
    wanted = {f"prefect.flow-run.{r.id}": str(r.id) for r in runs}
    name_filter = EventFilter(event=EventNameFilter(name=["prefect.worker.submitted-flow-run"]))
    deadline = time.monotonic() + timeout_s
    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for event in client.read_events(filter=name_filter, limit=50).events:
                for related in event.related:
                    if related.id in wanted:
                        found[wanted[related.id]] = str(event.resource.name)
            time.sleep(1)
    return found


def _summary(run: FlowRun) -> dict[str, Any]:
    """The run's returned summary, read back from the result the worker persisted."""
    assert run.state is not None
    result = run.state.result()
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    assert isinstance(result, dict), result
    return result


def _stored(url: str) -> int:
    with psycopg.connect(url) as con:
        # The first run creates the store's tables when it starts.
        if con.execute("SELECT to_regclass('items')").fetchone() == (None,):
            return 0
        row = con.execute("SELECT count(*) FROM items").fetchone()
    return int(row[0]) if row else 0


def _start_second_run_once_work_is_stored(first: FlowRun, store: str) -> FlowRun:
    """Start another run once the first has committed a batch or two.

    Started together (10,000 mentions, batches of 5,000), the second run found every source leased
    and the store still empty, and ended in a second having done nothing: correct, but it shows
    nothing about sharing work.
    """
    deadline = time.monotonic() + 600
    while _stored(store) < 2 * BATCH:
        assert time.monotonic() < deadline, "the first run stored nothing in 600 s"
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(first.id).state
        assert state is None or not state.is_final(), f"the first run ended early: {state}"
        time.sleep(0.5)
    second = run_deployment(PARALLEL, parameters={"batch_size": BATCH}, timeout=0)
    assert isinstance(second, FlowRun)
    return second


def test_two_workers_share_a_backlog_on_a_prefect_server_on_postgres(
    prefect_server_on_pg: str, prefect_db: str, pg_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "backlog"
    per_source = generate(data, MENTIONS)
    assert set(per_source) == set(SOURCES)
    config = write_config(data, tmp_path / "unused.duckdb")
    # The review spool in the test's folder, not beside the worker's working directory.
    text = config.read_text(encoding="utf-8")
    spool = tmp_path / "review.decisions.jsonl"
    config.write_text(
        text.replace(
            "review: {destination: review}", f"review: {{destination: review, spool: {spool}}}"
        ),
        encoding="utf-8",
    )
    store_url, password = _without_password(pg_url)
    sink = RecordingSink({dest: "C" + dest.upper() for dest in DESTINATIONS})
    sink.start()
    results = tmp_path / "results"
    worker_log = tmp_path / "workers.log"
    env = prefect_env(
        PREFECT_API_URL=prefect_server_on_pg,
        # As the README says: the password in PGPASSWORD, not in the URL the UI shows.
        PGPASSWORD=password,
        BENCH_SLACK_TOKEN=sink.token,
        SLACK_API_URL=sink.url,
        TRIAGE_OUTBOX_DIR=str(tmp_path / "outbox"),
        # The summaries the runs return, kept so the test can read them back.
        PREFECT_RESULTS_PERSIST_BY_DEFAULT="true",
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(results),
    )
    settings = {PREFECT_API_URL: prefect_server_on_pg, PREFECT_RESULTS_LOCAL_STORAGE_PATH: results}
    try:
        with temporary_settings(updates=settings):
            deploy(env)
            Variable.set("triage_config", str(config), overwrite=True)
            Variable.set("triage_db", store_url, overwrite=True)
            # One flow run at a time per worker (--limit 1): two runs at once need both workers.
            with workers(env, count=2, limit=1, log=worker_log):
                deadline = time.monotonic() + 180
                while _online_workers() < 2:
                    assert time.monotonic() < deadline, _tail(worker_log)
                    time.sleep(1)
                first = run_deployment(PARALLEL, parameters={"batch_size": BATCH}, timeout=0)
                assert isinstance(first, FlowRun)
                second = _start_second_run_once_work_is_stored(first, pg_url)
                runs = [wait_for_run(r.id, timeout_s=900) for r in (first, second)]
            for run in runs:
                assert run.state is not None and run.state.is_completed(), (
                    f"{run.name}: {run.state}\n{_tail(worker_log)}"
                )
            summaries = [_summary(run) for run in runs]
            submitted_by = _workers_of(runs)
    finally:
        sink.stop()

    # Two workers took one run each (their events say which), and the runs overlapped in time.
    assert len(set(submitted_by.values())) == 2, submitted_by
    starts = [r.start_time for r in runs if r.start_time]
    ends = [r.end_time for r in runs if r.end_time]
    assert len(starts) == len(ends) == 2, runs
    assert max(starts) < min(ends), (starts, ends)

    # Each source was fetched by one run: the other found its lease taken ("leased": false) or
    # nothing new past the cursor the first had committed.
    for name, count in per_source.items():
        fetched = [s["sources"][name] for s in summaries]
        assert sum(f["stored"] for f in fetched) == count, (name, fetched)
        assert sum(f["fetched"] > 0 for f in fetched) == 1, (name, fetched)

    # Both runs did part of the work, and every mention was classified and routed exactly once.
    shares = [
        (s["classify"]["classified"], s["route"]["routed"], s["deliver"]["sent"]) for s in summaries
    ]
    assert all(sum(share) > 0 for share in shares), shares
    assert sum(classified for classified, _, _ in shares) == MENTIONS, shares
    assert sum(routed for _, routed, _ in shares) == MENTIONS, shares
    # Stored once, nothing missing, no delivery left half-sent, each message posted once.
    assert check(pg_url, MENTIONS, sink) == (0, 0), shares
    sent = sum(sent for _, _, sent in shares)
    assert sent > 0 and sum(sink.keys().values()) == sent

    # Prefect itself kept its runs, deployments and events in PostgreSQL.
    with psycopg.connect(prefect_db) as con:
        ids = [r.id for r in runs]
        row = con.execute("SELECT count(*) FROM flow_run WHERE id = ANY(%s)", [ids]).fetchone()
        assert row == (2,)
        names = {r[0] for r in con.execute("SELECT name FROM deployment").fetchall()}
        assert "triage-parallel" in names
