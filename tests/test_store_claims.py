"""Several workers on one PostgreSQL store: each batch, delivery and source goes to one of them.

Real server (``tests/pg_fixture.py``), real connections; a worker "dies" by being killed with
SIGKILL in a child process, the way ``kill -9`` ends a flow run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.test_store_backends import predictions, routes_and_outbox
from triage.models import Mention
from triage.store import open_store
from triage.store.postgres import PgStore

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def fill(url: str, n: int) -> list[str]:
    batch = [Mention("social", f"p{i}", f"text {i}", T0 + timedelta(seconds=i)) for i in range(n)]
    with open_store(url) as s:
        s.ingest("social", batch, [], None)
    return [m.id for m in batch]


def test_two_workers_claim_different_batches(pg_url: str) -> None:
    fill(pg_url, 10)
    with open_store(pg_url) as a, open_store(pg_url) as b:
        assert isinstance(a, PgStore) and a.claims_work
        first = a.unclassified(4)
        mine = next(first).column("id").to_pylist()
        # While ``a`` holds its batch, ``b`` is handed the others, never the same rows.
        theirs: list[str] = []
        for batch in b.unclassified(4):
            theirs += batch.column("id").to_pylist()
            b.insert_predictions(predictions(batch.column("id").to_pylist()))
        assert len(mine) == 4
        assert len(theirs) == 6
        assert not set(mine) & set(theirs)
        with open_store(pg_url) as c:
            assert c.count("predictions") == 6  # ``a``'s batch is not committed yet
        # ``a`` stores its predictions inside its claim; they commit when it asks for more.
        a.insert_predictions(predictions(mine))
        assert list(first) == []
    with open_store(pg_url) as c:
        assert c.count("predictions") == 10
        assert [batch.num_rows for batch in c.unclassified(100)] == []


def test_a_killed_workers_batch_goes_back_to_the_others(pg_url: str, tmp_path: Path) -> None:
    ids = fill(pg_url, 6)
    ready = tmp_path / "claimed"
    script = (
        "import sys, time, pathlib\n"
        "from triage.store import open_store\n"
        "with open_store(sys.argv[1]) as s:\n"
        "    claims = s.unclassified(6)\n"
        "    batch = next(claims)\n"
        "    pathlib.Path(sys.argv[2]).write_text(str(batch.num_rows))\n"
        "    time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, pg_url, str(ready)], cwd=Path.cwd())
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.read_text() == "6"
        with open_store(pg_url) as s:
            assert [b.num_rows for b in s.unclassified(6)] == []  # all claimed by the child
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 20
        with open_store(pg_url) as s:
            while True:
                free = [i for b in s.unclassified(6) for i in b.column("id").to_pylist()]
                if free or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert sorted(free) == sorted(ids)
    finally:
        if child.poll() is None:
            child.kill()


def test_two_workers_route_different_batches(pg_url: str) -> None:
    ids = fill(pg_url, 6)
    with open_store(pg_url) as s:
        s.insert_predictions(predictions(ids))
    with open_store(pg_url) as a, open_store(pg_url) as b:
        held = a.unrouted(3)
        mine = next(held).column("item_id").to_pylist()
        theirs: list[str] = []
        for batch in b.unrouted(3):
            theirs += batch.column("item_id").to_pylist()
            b.insert_routes(*routes_and_outbox(batch.column("item_id").to_pylist()))
        assert len(mine) == 3 and len(theirs) == 3 and not set(mine) & set(theirs)
        a.insert_routes(*routes_and_outbox(mine))
        assert list(held) == []
        assert a.count("routes") == 6
        assert a.count("outbox") == 6


def test_a_delivery_is_claimed_by_one_worker_and_not_resent(pg_url: str) -> None:
    ids = fill(pg_url, 6)
    with open_store(pg_url) as s:
        s.insert_predictions(predictions(ids))
        s.insert_routes(*routes_and_outbox(ids))
    with open_store(pg_url) as a, open_store(pg_url) as b:
        mine = {r["key"] for r in a.due_deliveries(4)}
        theirs = {r["key"] for r in b.due_deliveries(4)}
        assert len(mine) == 4 and len(theirs) == 2 and not mine & theirs
        done = min(mine)
        a.mark_sending(done)
        a.mark_sent(done, "ts1")
        # ``a`` comes back for more: its claims are released; the sent one is never handed out.
        again = {r["key"] for r in a.due_deliveries(10)}
        assert done not in again
        assert again == mine - {done}
    with open_store(pg_url) as c:
        assert {r["key"] for r in c.due_deliveries(10)} == (mine | theirs) - {done}


def test_a_source_is_fetched_by_one_run_at_a_time(pg_url: str) -> None:
    with open_store(pg_url) as a, open_store(pg_url) as b:
        with a.source_lease("social") as first, b.source_lease("social") as second:
            assert first is True
            assert second is False
            with b.source_lease("forms") as other:
                assert other is True
        with b.source_lease("social") as later:
            assert later is True
