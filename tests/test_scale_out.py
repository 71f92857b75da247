"""Scale-out on PostgreSQL: the demo flow unchanged, clicks written directly, the scale benchmark.

Real server (``tests/pg_fixture.py``), the real flow, real worker processes for the benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from typer.testing import CliRunner

from flows.settings import load_config
from flows.triage import triage
from tests.conftest import DEMO_DIR
from tests.fakes import slack_payloads
from tests.pg_gate import Gate
from triage.cli import app
from triage.cli.bench_scale import RecordingSink, Workers, check
from triage.config import Config
from triage.review import DecisionSpool, DirectApply, apply_spool
from triage.review.clicks import Decision
from triage.servers.slack_app import EVENTS_PATH, build_app, serve
from triage.slack.messages import ACTION_CONFIRM
from triage.store import open_store


@pytest.fixture
def demo_on_pg(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo configuration, run once by the real flow into a PostgreSQL database."""
    shutil.copytree(DEMO_DIR, tmp_path / "demo")
    monkeypatch.setenv("TRIAGE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.chdir(tmp_path)
    summary = triage(config_path=str(tmp_path / "demo" / "triage.yaml"), database=pg_url)
    assert summary["classify"]["classified"] > 0
    # The summary names the database without its password.
    assert "***" in summary["database"]
    assert pg_url.split(":")[2].split("@")[0] not in summary["database"]
    return tmp_path / "demo" / "triage.yaml"


def test_the_demo_runs_unchanged_on_postgres_and_a_rerun_creates_nothing(
    demo_on_pg: Path, pg_url: str, tmp_path: Path
) -> None:
    with open_store(pg_url) as store:
        first = store.status()
    again = triage(config_path=str(demo_on_pg), database=pg_url)
    assert sum(s["stored"] for s in again["sources"].values()) == 0
    assert again["route"]["enqueued"] == 0
    with open_store(pg_url) as store:
        assert store.status()["items_total"] == first["items_total"]
    # The same result as the embedded file on the same feeds.
    duck = tmp_path / "same.duckdb"
    triage(config_path=str(demo_on_pg), database=str(duck))
    with open_store(duck) as store:
        on_file = store.status()
    for key in ("items_total", "by_label", "by_department", "needs_review", "quarantined"):
        assert on_file[key] == first[key], key
    # `triage status` reads it with the same command, the URL given like a path.
    result = CliRunner().invoke(app, ["status", "--json", "--db", pg_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items_total"] == first["items_total"]


def _decision(item: str, n: int, user: str = "U0ALICE") -> Decision:
    return Decision(
        decision_id=f"d{n}",
        item_id=item,
        action="confirm",
        value=None,
        user_id=user,
        user_name=user.lower(),
        decided_at="2026-03-01T12:00:00+00:00",
    )


def test_a_click_is_written_to_postgres_directly_and_applied_once(
    demo_on_pg: Path, pg_url: str
) -> None:
    config = load_config(str(demo_on_pg), database=pg_url)
    apply_direct = DirectApply(config)
    with open_store(pg_url) as store:
        item = str(
            store._scalar("SELECT item_id FROM routes WHERE state = 'awaiting_review' LIMIT 1")
        )
    assert apply_direct([_decision(item, 1)]) == {"d1": "applied"}
    # A second reviewer's click on the same item loses to the first; a repeat changes nothing.
    assert apply_direct([_decision(item, 2, "U0BOB")]) == {"d2": "superseded"}
    assert apply_direct([_decision(item, 1)]) == {}
    with open_store(pg_url) as store:
        assert store._scalar("SELECT state FROM routes WHERE item_id = ?", [item]) == "released"
        assert store._scalar("SELECT count(*) FROM review_decisions") == 1
        assert store._scalar("SELECT count(*) FROM review_audit") == 2
    assert len(DecisionSpool(config.review.spool)) == 0


def test_a_click_is_spooled_quickly_when_the_server_is_down(demo_on_pg: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    down = f"postgresql://triage:secret@127.0.0.1:{port}/triage"
    config = load_config(str(demo_on_pg), database=down)
    started = time.monotonic()
    assert DirectApply(config)([_decision("some-item", 1)]) is None
    # Well inside Slack's 3 seconds: the caller still spools and acknowledges in time.
    assert time.monotonic() - started < 2.5


def test_the_recording_sink_serves_history_and_counts_repeats(tmp_path: Path) -> None:
    sink = RecordingSink({"review": "CREVIEW"})
    sink.start()
    try:
        client = WebClient(token=sink.token, base_url=sink.url)
        for n in range(205):
            key = "twice" if n in (3, 204) else f"k{n}"
            client.chat_postMessage(
                channel="CREVIEW",
                text="x",
                metadata={"event_type": "triage_delivery", "event_payload": {"key": key}},
            )
        first = client.conversations_history(channel="CREVIEW", limit=200)
        assert len(first["messages"]) == 200
        assert first["messages"][0]["metadata"]["event_payload"]["key"] == "twice"
        rest = client.conversations_history(
            channel="CREVIEW", limit=200, cursor=first["response_metadata"]["next_cursor"]
        )
        assert len(rest["messages"]) == 5
        assert sink.keys()["twice"] == 2
    finally:
        sink.stop()
    # check() counts a message posted twice as a duplicate, and a sent row the sink lacks as lost.
    db = tmp_path / "x.duckdb"
    with open_store(db) as store:
        store._execute(
            "INSERT INTO outbox (key, item_id, destination, kind, state) "
            "VALUES ('k1', 'i', 'review', 'review', 'sent'), ('gone', 'i', 'review', 'review', 'sent')"
        )
    duplicates, lost = check(str(db), 0, sink)
    assert duplicates == 1
    assert lost == 1


@pytest.mark.slow
def test_scale_bench_reports_every_field_with_nothing_lost_or_doubled() -> None:
    result = CliRunner().invoke(app, ["bench", "--n", "1500", "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    for key in ("per_s_one_worker", "per_s_workers", "speedup", "duckdb_per_s"):
        assert report[key] > 0, key
    assert report["speedup"] == pytest.approx(
        report["per_s_workers"] / report["per_s_one_worker"], abs=2e-3
    )
    assert report["kill_run"]["kills"] == 2
    assert report["kill_run"]["delivered"] > 0
    # Each worker's own account: together they classified every mention exactly once.
    assert sum(w["classified"] for w in report["worker_workers"]) == 1500
    assert report["duplicates"] == 0
    assert report["lost"] == 0


# ------------------------------------------------------------------ the Slack app's answer
SECRET = "scale-out-signing-secret-7d21"
SLACK_LIMIT_S = 3.0


class Endpoint:
    """The Slack app's real HTTP endpoint on a random port, without a review worker: the tests
    apply the spool themselves, when they want to."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = build_app(config, bot_token="xoxb-scale-out", signing_secret=SECRET)
        self.server = serve(self.app, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{EVENTS_PATH}"
        self.spool = DecisionSpool(config.review.spool)

    def click(self, item_id: str, user: str = "U0ALICE") -> tuple[httpx.Response, float]:
        """A reviewer's signed "confirm" click on the item; the answer and how long it took."""
        response_url = "https://hooks.slack.com/actions/T0/1/x"
        payload = slack_payloads.block_actions(
            item_id, ACTION_CONFIRM, "C0REVIEW", "1700000000.000100", response_url, user=user
        )
        body = urlencode({"payload": json.dumps(payload)})
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(
                timestamp=ts, body=body
            ),
        }
        started = time.monotonic()
        answer = httpx.post(self.url, content=body, headers=headers, timeout=30)
        return answer, time.monotonic() - started

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def awaiting(url: str, n: int) -> list[str]:
    """``n`` items awaiting review."""
    with open_store(url) as store:
        rows = store._rows(
            "SELECT item_id FROM routes WHERE state = 'awaiting_review' ORDER BY item_id LIMIT ?",
            [n],
        )
    assert len(rows) == n
    return [str(r["item_id"]) for r in rows]


def decided(url: str, items: list[str]) -> dict[str, Any]:
    """How the items were decided: decisions per item, audit rows by outcome, route states."""
    with open_store(url) as store:
        per_item = store._rows(
            "SELECT item_id, count(*) AS n FROM review_decisions WHERE item_id = ANY(?) GROUP BY 1",
            [items],
        )
        audit = store._rows(
            "SELECT outcome, count(*) AS n FROM review_audit WHERE item_id = ANY(?) GROUP BY 1",
            [items],
        )
        states = store._rows("SELECT DISTINCT state FROM routes WHERE item_id = ANY(?)", [items])
    return {
        "decisions": {str(r["item_id"]): int(r["n"]) for r in per_item},
        "audit": {str(r["outcome"]): int(r["n"]) for r in audit},
        "states": {str(r["state"]) for r in states},
    }


# What a session waits for behind another's row lock, or behind an advisory lock.
LOCKS = ("transactionid", "tuple", "advisory")


def waiting_on(url: str, events: tuple[str, ...]) -> int:
    """Sessions of the test's database waiting for a lock of these kinds (pg_stat_activity)."""
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = ANY(%s)",
            [list(events)],
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until ``check()`` is truthy (for what must happen, never to conclude it did not)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.05)
    return result


def test_a_server_that_hangs_mid_write_costs_a_click_its_wait_not_its_answer(
    demo_on_pg: Path, pg_url: str
) -> None:
    gate = Gate(pg_url)
    endpoint = Endpoint(load_config(str(demo_on_pg), database=gate.url))
    first, second = awaiting(pg_url, 2)
    try:
        # The write connects, logs in and reads the schema version; then the server goes silent.
        gate.hang_on = b"pg_advisory_xact_lock"
        answer, took = endpoint.click(first)
        print(f"\nclick answered with the server hung mid-write in {took:.3f}s")
        assert answer.status_code == 200
        assert took < SLACK_LIMIT_S, took
        assert gate.hung.is_set()  # it did hang inside the click's transaction
        assert [d.item_id for d in endpoint.spool.read()] == [first]
        # After a late write the app spools straight away for a while: no connection per click.
        tried = gate.accepted
        answer, took = endpoint.click(second)
        assert answer.status_code == 200
        assert took < 1.0, took
        assert gate.accepted == tried
        assert endpoint.app.direct is not None
        assert (endpoint.app.direct.writes.written, endpoint.app.direct.writes.fell_back) == (0, 2)
    finally:
        endpoint.stop()
        gate.close()  # the hung connection drops: the server rolls its transaction back
    # The review worker's next pass, with the server back, applies each spooled click once.
    config = load_config(str(demo_on_pg), database=pg_url)
    report = apply_spool(config, DecisionSpool(config.review.spool))
    assert (report.applied, report.superseded, report.rejected) == (2, 0, 0)
    assert decided(pg_url, [first, second]) == {
        "decisions": {first: 1, second: 1},
        "audit": {"applied": 2},
        "states": {"released"},
    }


def test_a_click_on_a_row_a_worker_holds_is_answered_in_time_and_applied_once(
    demo_on_pg: Path, pg_url: str
) -> None:
    config = load_config(str(demo_on_pg), database=pg_url)
    endpoint = Endpoint(config)
    (item,) = awaiting(pg_url, 1)
    passes: list[Any] = []
    holder = psycopg.connect(pg_url)  # a worker's claiming transaction
    try:
        holder.execute("SELECT * FROM routes WHERE item_id = %s FOR UPDATE", [item])
        answer, took = endpoint.click(item)
        print(f"\nclick answered with its route row locked in {took:.3f}s")
        assert answer.status_code == 200
        assert took < SLACK_LIMIT_S, took
        assert [d.item_id for d in endpoint.spool.read()] == [item]
        # The click's write did not give up: it still waits for the row...
        wait_for(lambda: waiting_on(pg_url, LOCKS) == 1)
        # ...when the review worker's pass comes for the spooled copy; it waits its turn.
        spooled = threading.Thread(
            target=lambda: passes.append(apply_spool(config, endpoint.spool))
        )
        spooled.start()
        wait_for(lambda: waiting_on(pg_url, LOCKS) == 2)
    finally:
        holder.rollback()  # the worker's claim ends
        holder.close()
        endpoint.stop()
    spooled.join(30)
    # The late write committed; the pass found its decision in the audit trail and skipped it.
    assert (passes[0].applied, passes[0].superseded, passes[0].rejected) == (0, 0, 0)
    assert len(endpoint.spool) == 0
    assert decided(pg_url, [item]) == {
        "decisions": {item: 1},
        "audit": {"applied": 1},
        "states": {"released"},
    }


def test_two_writers_deciding_one_item_at_once_take_turns(demo_on_pg: Path, pg_url: str) -> None:
    # Two app processes (or a click's late write and the worker's pass) decide one item at the
    # same moment: the second waits for the first, then sees it, so the route is the winner's.
    config = load_config(str(demo_on_pg), database=pg_url)
    (item,) = awaiting(pg_url, 1)
    spam = dataclasses.replace(_decision(item, 2, "U0BOB"), action="spam")
    outcomes: dict[str, str] = {}

    def click(decision: Decision) -> None:
        result = DirectApply(config, wait_s=60)([decision])
        assert result is not None
        outcomes.update(result)

    holder = psycopg.connect(pg_url)  # holds both writers at the same point for a moment
    try:
        holder.execute("SELECT * FROM routes WHERE item_id = %s FOR UPDATE", [item])
        first = threading.Thread(target=click, args=(_decision(item, 1),))
        first.start()
        wait_for(lambda: waiting_on(pg_url, LOCKS) == 1)
        second = threading.Thread(target=click, args=(spam,))
        second.start()
        wait_for(lambda: waiting_on(pg_url, LOCKS) == 2)
    finally:
        holder.rollback()
        holder.close()
    first.join(30)
    second.join(30)
    assert outcomes == {"d1": "applied", "d2": "superseded"}
    # The route is the confirmation's (released), not the losing spam click's (suppressed).
    assert decided(pg_url, [item]) == {
        "decisions": {item: 1},
        "audit": {"applied": 1, "superseded": 1},
        "states": {"released"},
    }


@pytest.mark.slow
def test_clicks_are_answered_within_slacks_3s_while_two_workers_write(
    demo_on_pg: Path, pg_url: str, tmp_path: Path
) -> None:
    # Two worker processes classify and route a 20,000-mention backlog into the same database
    # while reviewers click through the app's real endpoint.
    from triage.cli.bench_data import generate, write_config

    data = tmp_path / "backlog"
    generate(data, 20_000)
    config_path = write_config(data, tmp_path / "unused.duckdb")
    config = load_config(str(demo_on_pg), database=pg_url)
    endpoint = Endpoint(config)
    with open_store(pg_url) as store:
        items = [
            str(r["item_id"])
            for r in store._rows("SELECT item_id FROM routes WHERE state = 'awaiting_review'")
        ]
    assert len(items) >= 5
    workers = Workers(config_path, {**os.environ, "TRIAGE_DB": pg_url})
    latencies: list[float] = []
    clicked: list[str] = []
    overlapped = 0  # clicks sent while both workers were still running
    try:
        procs = workers.start(2)
        workers.go(procs)
        for item in items:
            running = sum(p.poll() is None for p in procs)
            if not running:
                break
            overlapped += running == 2
            answer, took = endpoint.click(item)
            assert answer.status_code == 200
            latencies.append(took)
            clicked.append(item)
            time.sleep(0.2)
        reports = workers.wait()
    finally:
        workers.kill_all()
        endpoint.stop()
    assert overlapped >= 5, "the workers finished before the clicks could overlap them"
    assert sum(r["classified"] for r in reports) == 20_000
    assert endpoint.app.direct is not None
    direct, spooled = endpoint.app.direct.writes.written, endpoint.app.direct.writes.fell_back
    print(
        f"\nclick answers while two workers write: n={len(latencies)} ({overlapped} sent while "
        "both ran) "
        f"p50={statistics.median(latencies):.3f}s max={max(latencies):.3f}s "
        f"written directly={direct} spooled={spooled}"
    )
    assert max(latencies) < SLACK_LIMIT_S, latencies
    # Each click decided its item once, whichever way it went.
    apply_spool(config, endpoint.spool)
    assert decided(pg_url, clicked)["decisions"] == dict.fromkeys(clicked, 1)
