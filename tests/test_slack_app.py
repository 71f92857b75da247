"""The Slack review app end to end: signed requests to the real endpoint, a real store, fake Slack.

The store is seeded once per module by a real flow run over the demo feeds (threaded batches on),
and each test works on its own copy of that database, against the same fake Slack workspace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk import WebClient
from typer.testing import CliRunner

from classifiers.data import load_examples
from flows.settings import load_config
from flows.triage import triage
from tests.conftest import DEMO_DIR
from tests.fakes import slack_payloads
from tests.fakes.slack import FakeSlack, start_fake_slack
from tests.fakes.slack_payloads import slash_command, text_objects
from triage.cli import app as cli_app
from triage.config import Config
from triage.models import DeliveryItem
from triage.review import STORE_LOCK, DecisionSpool, process_pending, resurface
from triage.review import apply as apply_mod
from triage.review import clicks as clicks_mod
from triage.review import upkeep as upkeep_mod
from triage.servers.slack_app import EVENTS_PATH, ReviewApp, ReviewWorker, build_app, serve
from triage.slack.client import make_client
from triage.slack.messages import (
    ACTION_CONFIRM,
    ACTION_RELABEL,
    ACTION_REROUTE,
    ACTION_SPAM,
    decided_message,
    queue_blocks,
    review_message,
)
from triage.store import open_store

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BATCH_THRESHOLD = 20


# ----------------------------------------------------------------- fixtures
@dataclass
class Seeded:
    """The module's seeded database and the fake workspace its messages were posted to."""

    fake: FakeSlack
    config_path: Path
    db: Path
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def seeded(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("seeded")
    shutil.copytree(DEMO_DIR, root / "demo")
    cfg = root / "demo" / "triage.yaml"
    text = cfg.read_text(encoding="utf-8")
    # Turn on threaded batches and keep the spool inside the test's folder.
    # (The demo already sets resurface_after: 24h; a second one would be a duplicate key.)
    text = text.replace("review:\n", f"review:\n  batch_threshold: {BATCH_THRESHOLD}\n", 1)
    cfg.write_text(text, encoding="utf-8")
    fake, server = start_fake_slack()
    db = root / "seed.duckdb"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLACK_BOT_TOKEN", fake.token)
        mp.setenv("SLACK_API_URL", fake.url)
        mp.setenv("TRIAGE_OUTBOX_DIR", str(root / "outbox"))
        summary = triage(config_path=str(cfg), database=str(db))
    try:
        yield Seeded(fake=fake, config_path=cfg, db=db, summary=summary)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Env:
    """One test's copy of the store, its configuration and helpers."""

    fake: FakeSlack
    config: Config
    db: Path
    # The fake workspace is shared by the module: each test looks only at what came after these.
    first_call: int = 0
    first_response: int = 0

    def calls(self, method: str) -> list[Any]:
        return [
            c for c in self.fake.calls[self.first_call :] if c.method == method and c.status == 200
        ]

    def responses(self) -> list[dict[str, Any]]:
        return self.fake.responses[self.first_response :]

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        # Same process as the server: go through the store's lock, like the app does.
        with STORE_LOCK, open_store(self.db) as store:
            return store.con.execute(sql, params or []).fetchall()

    @property
    def spool(self) -> DecisionSpool:
        return DecisionSpool(self.config.review.spool)


@pytest.fixture
def env(seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    db = tmp_path / "triage.duckdb"
    shutil.copy(seeded.db, db)
    monkeypatch.setenv("SLACK_BOT_TOKEN", seeded.fake.token)
    monkeypatch.setenv("SLACK_API_URL", seeded.fake.url)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    return Env(
        fake=seeded.fake,
        config=load_config(seeded.config_path, database=str(db)),
        db=db,
        first_call=len(seeded.fake.calls),
        first_response=len(seeded.fake.responses),
    )


@dataclass
class Server:
    url: str
    worker: ReviewWorker | None
    app: ReviewApp


@pytest.fixture
def start_server(env: Env) -> Iterator[Callable[..., Server]]:
    """Start the real endpoint on a random port; ``worker_interval=None`` runs no worker."""
    started: list[tuple[Any, ReviewWorker | None, ReviewApp]] = []

    def start(worker_interval: float | None = 0.3) -> Server:
        worker = (
            ReviewWorker(env.config, interval=worker_interval, wait_s=0.3)
            if worker_interval is not None
            else None
        )
        app = build_app(env.config, bot_token=env.fake.token, signing_secret=SECRET, worker=worker)
        server = serve(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        if worker is not None:
            worker.start()
        started.append((server, worker, app))
        return Server(
            url=f"http://127.0.0.1:{server.server_address[1]}{EVENTS_PATH}",
            worker=worker,
            app=app,
        )

    yield start
    for server, worker, app in started:
        server.shutdown()
        server.server_close()
        app.responder.shutdown()
        if worker is not None:
            worker.stop()


# ------------------------------------------------------------------ helpers
def sign(body: str, ts: int, secret: str = SECRET) -> dict[str, str]:
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def post_form(url: str, form: dict[str, str], *, ts: int | None = None, secret: str = SECRET):
    body = urlencode(form)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    headers.update(sign(body, ts if ts is not None else int(time.time()), secret))
    return httpx.post(url, content=body, headers=headers, timeout=10)


def block_actions(
    env: Env,
    item_id: str,
    action_id: str,
    *,
    user: str = "U0ALICE",
    choice: str | None = None,
    response_url: str | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` payload shaped like Slack's for a click on the item's review message."""
    ref = env.rows(
        "SELECT external_ref FROM outbox WHERE item_id = ? AND kind = 'review'", [item_id]
    )[0][0]
    channel, _, ts = ref.partition(":")
    url = response_url or env.fake.response_url(f"T0/{user}/x")
    return slack_payloads.block_actions(
        item_id, action_id, channel, ts, url, user=user, choice=choice
    )


def click(url: str, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    return post_form(url, {"payload": json.dumps(payload)}, **kw)


def waiting_item(env: Env, label: str | None = None, department: str | None = None) -> str:
    sql = (
        "SELECT r.item_id FROM routes r JOIN predictions p ON p.item_id = r.item_id "
        "JOIN outbox o ON o.item_id = r.item_id AND o.kind = 'review' "
        "WHERE r.state = 'awaiting_review' AND o.state = 'sent'"
    )
    params: list[Any] = []
    if label:
        sql += " AND p.label = ?"
        params.append(label)
    if department:
        sql += " AND r.department = ?"
        params.append(department)
    return str(env.rows(sql + " ORDER BY r.item_id LIMIT 1", params)[0][0])


def wait_for(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll until ``check()`` is truthy: only ever for something that must happen (a generous
    bound, never a race), never to conclude that something did not."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.1)


def updates_of(env: Env, ts: str) -> list[Any]:
    return [c for c in env.calls("chat.update") if c.args.get("ts") == ts]


def message(fake: FakeSlack, channel: str, ts: str) -> dict[str, Any]:
    return next(m for m in fake.messages[channel] if m["ts"] == ts)


def review_ref(env: Env, item_id: str) -> tuple[str, str]:
    ref = env.rows(
        "SELECT external_ref FROM outbox WHERE item_id = ? AND kind = 'review'", [item_id]
    )[0][0]
    channel, _, ts = ref.partition(":")
    return channel, ts


def handoffs(env: Env, item_id: str) -> list[tuple[Any, ...]]:
    return env.rows(
        "SELECT destination, state FROM outbox WHERE item_id = ? AND kind = 'handoff'", [item_id]
    )


# -------------------------------------------------------------------- tests
def test_valid_click_is_recorded_acted_on_and_shown(env: Env, start_server) -> None:
    server = start_server()
    item = waiting_item(env, department="marketing")
    channel, ts = review_ref(env, item)

    resp = click(server.url, block_actions(env, item, ACTION_CONFIRM, user="U0ALICE"))

    assert resp.status_code == 200  # the ack deadline itself: test_slack_endpoint.py (slow)
    wait_for(lambda: updates_of(env, ts))
    decision = env.rows(
        "SELECT action, user_id, after_state, after_department, message_updated_at "
        "FROM review_decisions WHERE item_id = ?",
        [item],
    )
    assert decision[0][:4] == ("confirm", "U0ALICE", "released", "marketing")
    wait_for(lambda: env.rows("SELECT message_updated_at FROM review_decisions")[0][0])
    assert env.rows("SELECT state FROM routes WHERE item_id = ?", [item]) == [("released",)]
    assert handoffs(env, item) == [("marketing-channel", "pending")]
    audit = env.rows("SELECT outcome, before, after FROM review_audit WHERE item_id = ?", [item])
    assert audit[0][0] == "applied"
    assert json.loads(audit[0][1])["state"] == "awaiting_review"
    assert json.loads(audit[0][2]) == {
        "label": "kudos",
        "department": "marketing",
        "state": "released",
    }
    # The message now says who decided what and when, and its buttons are gone.
    shown = message(env.fake, channel, ts)
    assert not any(b["type"] == "actions" for b in shown["blocks"])
    assert "Confirmed by <@U0ALICE>" in json.dumps(shown["blocks"])
    assert len(env.spool) == 0


def test_relabel_reroute_and_spam_act_and_corrections_export(
    env: Env, start_server, tmp_path: Path
) -> None:
    server = start_server()
    to_relabel = waiting_item(env, label="kudos")
    to_reroute = waiting_item(env, label="sales_lead")
    to_spam = waiting_item(env, label="feature_request")

    for payload in (
        block_actions(env, to_relabel, ACTION_RELABEL, choice="feature_request"),
        block_actions(env, to_reroute, ACTION_REROUTE, choice="support"),
        block_actions(env, to_spam, ACTION_SPAM),
    ):
        assert click(server.url, payload).status_code == 200
    wait_for(lambda: len(env.rows("SELECT 1 FROM review_decisions")) == 3)

    assert env.rows("SELECT label FROM predictions WHERE item_id = ?", [to_relabel]) == [
        ("feature_request",)
    ]
    assert handoffs(env, to_relabel) == [("product-channel", "pending")]
    assert handoffs(env, to_reroute) == [("support-channel", "pending")]
    assert handoffs(env, to_spam) == []
    assert env.rows("SELECT state FROM routes WHERE item_id = ?", [to_spam]) == [("suppressed",)]

    out = tmp_path / "corrections.jsonl"
    result = CliRunner().invoke(
        cli_app,
        ["corrections", "export", "--out", str(out), "--config", str(env.config.path)]
        + ["--db", str(env.db)],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["label"] for r in rows) == ["feature_request", "other"]
    assert all(set(r) == {"text", "label"} and r["text"] for r in rows)
    # The same loader `triage train --data` uses accepts the file.
    assert sorted(ex.label for ex in load_examples([out])) == ["feature_request", "other"]


def test_forged_and_replayed_requests_are_rejected(env: Env, start_server) -> None:
    # No worker: a click is spooled before its answer is sent, so once the 401s are back nothing
    # more can happen: no need to sleep and hope.
    server = start_server(worker_interval=None)
    payload = block_actions(env, waiting_item(env), ACTION_CONFIRM)

    forged = click(server.url, payload, secret="not-the-signing-secret")
    stale = click(server.url, payload, ts=int(time.time()) - 6 * 60)
    unsigned = httpx.post(server.url, data={"payload": json.dumps(payload)}, timeout=10)

    assert (forged.status_code, stale.status_code, unsigned.status_code) == (401, 401, 401)
    assert len(env.spool) == 0
    assert env.rows("SELECT count(*) FROM review_audit") == [(0,)]


def test_unknown_or_malformed_actions_get_a_clean_error(env: Env, start_server) -> None:
    server = start_server()
    item = waiting_item(env)

    unknown = click(server.url, block_actions(env, item, "triage_launch_rockets"))
    bad_ts = block_actions(env, item, ACTION_CONFIRM)
    bad_ts["actions"][0]["action_ts"] = "yesterday"
    bad_time = click(server.url, bad_ts)
    bad_label = click(server.url, block_actions(env, item, ACTION_RELABEL, choice="pizza"))
    bad_item = block_actions(env, item, ACTION_CONFIRM)
    bad_item["actions"][0]["value"] = "'; DROP TABLE items; --"
    bad_value = click(server.url, bad_item)

    for resp in (unknown, bad_label, bad_value, bad_time):
        assert resp.status_code == 400
        assert resp.json()["ok"] is False and resp.json()["error"] == "invalid_action"
    assert "triage_launch_rockets" in unknown.json()["detail"]
    assert len(env.spool) == 0
    assert env.rows("SELECT count(*) FROM review_audit") == [(0,)]


def test_concurrent_clicks_yield_one_decision_and_the_others_see_it(env: Env, start_server) -> None:
    server = start_server()
    item = waiting_item(env, department="marketing")
    channel, ts = review_ref(env, item)
    reviewers = [f"U0REV{i}" for i in range(6)]
    actions = [
        ACTION_CONFIRM,
        ACTION_SPAM,
        ACTION_CONFIRM,
        ACTION_SPAM,
        ACTION_CONFIRM,
        ACTION_SPAM,
    ]
    payloads = [
        block_actions(env, item, a, user=u) for a, u in zip(actions, reviewers, strict=True)
    ]
    barrier = threading.Barrier(len(payloads))
    statuses: list[int] = []

    def go(payload: dict[str, Any]) -> None:
        barrier.wait()
        statuses.append(click(server.url, payload).status_code)

    threads = [threading.Thread(target=go, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert statuses == [200] * len(payloads)
    wait_for(lambda: len(env.rows("SELECT 1 FROM review_audit")) == len(payloads))
    wait_for(lambda: len(env.responses()) >= len(payloads) - 1)
    decisions = env.rows("SELECT user_id, action FROM review_decisions WHERE item_id = ?", [item])
    assert len(decisions) == 1
    winner, action = decisions[0]
    outcomes = dict(env.rows("SELECT user_id, outcome FROM review_audit"))
    assert outcomes.pop(winner) == "applied"
    assert set(outcomes.values()) == {"superseded"}
    assert len(handoffs(env, item)) == (1 if action == "confirm" else 0)
    # Every loser was told, ephemerally, who decided first; the message shows the winner.
    notes = [r for r in env.responses() if r["path"].split("/")[3] != winner]
    assert len(notes) == len(payloads) - 1
    assert all(n["response_type"] == "ephemeral" and f"<@{winner}>" in n["text"] for n in notes)
    wait_for(lambda: updates_of(env, ts))
    assert f"by <@{winner}>" in json.dumps(message(env.fake, channel, ts)["blocks"])


def test_decision_is_kept_while_another_process_holds_the_store(
    env: Env, start_server, capsys: pytest.CaptureFixture[str]
) -> None:
    # No background retries: the next flow run must pick the decision up by itself.
    server = start_server(worker_interval=3600)
    assert server.worker is not None
    item = waiting_item(env, department="marketing")
    # Let the worker's start-up pass finish so the other process can take the lock.
    assert server.worker.wait_for_pass(0, timeout=60)
    payload = block_actions(env, item, ACTION_CONFIRM, user="U0BUSY")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                # Holds the file until the test closes its stdin: no sleep that could run out.
                "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                "print('locked', flush=True); sys.stdin.read()"
            ),
            str(env.db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        passes = server.worker.passes
        resp = click(server.url, payload)
        assert resp.status_code == 200
        assert server.worker is not None
        # The click kicks the worker; its pass finds the store locked and keeps the decision.
        assert server.worker.wait_for_pass(passes, timeout=60)
        wait_for(lambda: server.worker is not None and server.worker.last.get("busy"))
        spooled = env.spool.read()
        assert [(d.item_id, d.user_id, d.action) for d in spooled] == [(item, "U0BUSY", "confirm")]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)

    summary = triage(config_path=str(env.config.path), database=str(env.db))

    assert summary["review"]["applied"] == 1
    assert len(env.spool) == 0
    from triage.cli.pipeline import print_summary as _print_summary

    _print_summary(summary)
    assert "review decisions: applied 1, superseded 0" in capsys.readouterr().out
    assert env.rows("SELECT user_id FROM review_decisions WHERE item_id = ?", [item]) == [
        ("U0BUSY",)
    ]
    # The flow then delivered the department's handoff.
    assert handoffs(env, item) == [("marketing-channel", "sent")]


def test_crash_between_recording_and_message_update_recovers_once(
    env: Env, start_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(worker_interval=None)
    item = waiting_item(env, department="marketing")
    _, ts = review_ref(env, item)
    assert click(server.url, block_actions(env, item, ACTION_CONFIRM)).status_code == 200
    assert len(env.spool) == 1

    # The process dies after the decision is committed, before the spool is trimmed and the
    # message updated.
    def crash(self: DecisionSpool, ids: set[str]) -> None:
        raise SystemExit("simulated crash")

    with monkeypatch.context() as mp:
        mp.setattr(DecisionSpool, "remove", crash)
        with pytest.raises(SystemExit):
            process_pending(env.config)
    assert env.rows("SELECT count(*) FROM review_decisions WHERE message_updated_at IS NULL") == [
        (1,)
    ]
    assert len(env.spool) == 1 and not updates_of(env, ts)

    # Restart: the spooled copy is recognised, the message is updated, nothing happens twice.
    result = process_pending(env.config)
    again = process_pending(env.config)

    assert result["applied"] == 0 and result["messages_updated"] == 1
    assert again.get("messages_updated", 0) == 0
    assert len(env.spool) == 0
    assert env.rows("SELECT count(*) FROM review_audit") == [(1,)]
    assert handoffs(env, item) == [("marketing-channel", "pending")]
    assert len(updates_of(env, ts)) == 1


def test_message_update_failing_at_slack_is_retried_later(env: Env) -> None:
    item = waiting_item(env)
    channel, ts = review_ref(env, item)
    env.spool.append(clicks_mod.parse_actions(block_actions(env, item, ACTION_CONFIRM)))
    client = make_client(env.fake.token, max_retries=0)  # fail fast; the next pass retries
    env.fake.fail_next("chat.update", status=500, times=1)

    applied = apply_mod.apply_spool(env.config, env.spool)
    first = upkeep_mod.announce(env.config, client)
    second = upkeep_mod.announce(env.config, client)

    assert applied.applied == 1
    assert (first.updated, first.failed) == (0, 1)
    assert (second.updated, second.failed) == (1, 0)
    assert "Confirmed by" in json.dumps(message(env.fake, channel, ts)["blocks"])


def test_rate_limited_message_update_waits_for_retry_after(env: Env) -> None:
    item = waiting_item(env)
    _, ts = review_ref(env, item)
    env.spool.append(clicks_mod.parse_actions(block_actions(env, item, ACTION_CONFIRM)))
    env.fake.fail_next("chat.update", status=429, retry_after=1, times=1)

    apply_mod.apply_spool(env.config, env.spool)
    started = time.monotonic()
    report = upkeep_mod.announce(env.config, make_client(env.fake.token))

    assert (report.updated, report.failed) == (1, 0)
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    statuses = [c.status for c in env.fake.calls[env.first_call :] if c.method == "chat.update"]
    assert statuses == [429, 200]
    assert len(updates_of(env, ts)) == 1


def test_a_decision_that_cannot_be_applied_is_audited_not_stuck(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    broken, fine = waiting_item(env, label="kudos"), waiting_item(env, label="sales_lead")
    env.spool.append(clicks_mod.parse_actions(block_actions(env, broken, ACTION_CONFIRM)))
    env.spool.append(clicks_mod.parse_actions(block_actions(env, fine, ACTION_CONFIRM)))
    real_release = apply_mod.release_handoffs

    def release(config: Any, released: list[tuple[str, str]]) -> Any:
        if any(item_id == broken for item_id, _ in released):
            raise duckdb.ConstraintException("simulated constraint failure")
        return real_release(config, released)

    monkeypatch.setattr(apply_mod, "release_handoffs", release)
    report = apply_mod.apply_spool(env.config, env.spool)

    assert (report.applied, report.rejected) == (1, 1)
    assert len(env.spool) == 0
    audit = dict(env.rows("SELECT item_id, outcome FROM review_audit"))
    assert audit == {broken: "failed", fine: "applied"}
    # The failed one changed nothing: its transaction was rolled back.
    assert env.rows("SELECT state FROM routes WHERE item_id = ?", [broken]) == [
        ("awaiting_review",)
    ]
    assert (
        "simulated constraint failure"
        in env.rows("SELECT after FROM review_audit WHERE item_id = ?", [broken])[0][0]
    )


def test_huge_hostile_input_stays_within_block_kit_limits(env: Env) -> None:
    hostile = ("<!channel> & <@U123> <https://evil.example|x> " * 2300)[:100_000]
    item = {
        "id": "0123456789abcdef0123",
        "source": "s" * 5000,
        "url": "https://example.com/" + "a" * 5000,
        "author_handle": "&<>" * 3000,
        "text": hostile,
        "created_at": datetime.now(UTC),
        "label": "service_issue",
        "labels": ["service_issue", "feature_request"],
        "score": 0.51,
        "scores": {"service_issue": 0.51, "feature_request": 0.49},
        "needs_review": True,
        "review_reason": "<!here>" * 1000,
        "department": "support",
    }
    decision = {
        "action": "relabel",
        "user_id": "U0ALICE",
        "user_name": "alice",
        "decided_at": datetime.now(UTC),
        "after_label": "feature_request",
        "after_department": "product",
    }
    queue = {
        "total": 1,
        "groups": [
            {"label": "kudos", "department": "marketing", "count": 1, "oldest": item["created_at"]}
        ],
        "oldest": [
            {**item, "routed_at": datetime.now(UTC) - timedelta(days=3)},
        ],
    }
    delivered = DeliveryItem.from_row(item)
    messages = [review_message(delivered), decided_message(delivered, decision)]
    home = queue_blocks(queue, now=datetime.now(UTC), overdue_after=timedelta(hours=24))

    for blocks in [m["blocks"] for m in messages] + [home]:
        texts = list(text_objects(blocks))
        assert texts and all(len(t) <= 3000 for t in texts)
        raw = json.dumps(blocks)
        assert "<!channel>" not in raw and "<!here>" not in raw and "<@U123>" not in raw
    # The fake enforces Slack's limits: the real client's calls are accepted.
    client = make_client(env.fake.token)
    posted = client.chat_postMessage(channel="#feedback-review", **messages[0])
    client.chat_update(channel=posted["channel"], ts=posted["ts"], **messages[1])
    client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": home})


def test_many_items_are_posted_as_one_thread_flagged_first(seeded: Seeded) -> None:
    with STORE_LOCK, open_store(seeded.db) as store:
        reviews = store.con.execute("SELECT count(*) FROM outbox WHERE kind = 'review'").fetchone()
    channel = seeded.fake.messages["C0REVIEW"]
    parents = [m for m in channel if (m.get("metadata") or {}).get("event_type") == "triage_batch"]
    assert len(parents) == 1
    parent = parents[0]
    replies = [m for m in channel if m.get("thread_ts") == parent["ts"]]
    assert reviews is not None and len(replies) == reviews[0] > BATCH_THRESHOLD
    assert f"*{len(replies)} new items to review*" in parent["blocks"][0]["text"]["text"]
    # Flagged items come first in the thread.
    flags = ["needs review" in json.dumps(m["blocks"]) for m in replies]
    assert flags == sorted(flags, reverse=True) and any(flags) and not all(flags)
    # The channel's history shows the parent only; the replies are in the thread.
    client = WebClient(token=seeded.fake.token, base_url=seeded.fake.url)
    history = {
        m["ts"] for m in client.conversations_history(channel="C0REVIEW", limit=999)["messages"]
    }
    assert parent["ts"] in history and not history & {m["ts"] for m in replies}
    thread = client.conversations_replies(channel="C0REVIEW", ts=parent["ts"], limit=999)
    assert len(thread["messages"]) == len(replies) + 1


def test_crashed_threaded_post_is_reconciled_in_its_thread(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triage import delivery, destinations

    # A review delivery left in `sending` (the process died after Slack accepted the reply).
    key, item = env.rows(
        "SELECT key, item_id FROM outbox WHERE kind = 'review' AND state = 'sent' LIMIT 1"
    )[0]
    with STORE_LOCK, open_store(env.db) as store:
        store.mark_sending(key)
        before = len(env.fake.posted())
        dests = destinations.build_destinations(env.config)
        report = delivery.drain(store, env.config, dests, limit=100)
    assert report.reconciled == 1 and report.sent == 0
    assert len(env.fake.posted()) == before
    assert env.rows("SELECT state FROM outbox WHERE key = ?", [key]) == [("sent",)]
    assert item


def test_a_slash_command_with_payload_in_its_fields_is_answered(env: Env, start_server) -> None:
    # Bolt reads a form body with "payload" anywhere in it as an interaction and, with no
    # payload field, as {}: a workspace or channel whose name holds the word got no queue.
    server = start_server()
    form = slash_command(env.fake.response_url())
    form.update(team_domain="payload-labs", channel_name="payloads", text="payload")
    resp = post_form(server.url, form)
    assert resp.status_code == 200 and resp.text == ""
    (body,) = wait_for(lambda: server.app.responder.wait(1) and env.responses())
    assert body["blocks"][0]["text"]["text"].startswith("Review queue: ")


def test_slash_command_and_app_home_show_the_queue(env: Env, start_server) -> None:
    server = start_server()
    waiting = env.rows("SELECT count(*) FROM routes WHERE state = 'awaiting_review'")[0][0]
    assert waiting > 0
    # The queue lists the oldest items' text: redacted as the review channel sees it.
    env.rows(
        "UPDATE items SET text = text || ' mail jane.doe@example.org' WHERE id IN "
        "(SELECT item_id FROM routes WHERE state = 'awaiting_review')"
    )

    resp = post_form(server.url, slash_command(env.fake.response_url()))
    # Acknowledged at once with an empty body; the queue follows through response_url.
    assert resp.status_code == 200 and resp.text == ""
    (body,) = wait_for(lambda: server.app.responder.wait(1) and env.responses())
    assert body["response_type"] == "ephemeral"
    assert body["blocks"][0]["text"]["text"] == f"Review queue: {waiting} waiting"
    groups = body["blocks"][1]["text"]["text"]
    assert "Kudos* → marketing" in groups
    assert "[email]" in json.dumps(body) and "jane.doe@example.org" not in json.dumps(body)

    # Slack checks the request URL once when the app is configured.
    challenge = json.dumps({"token": "legacy", "challenge": "c-123", "type": "url_verification"})
    resp = httpx.post(
        server.url,
        content=challenge,
        headers={"Content-Type": "application/json", **sign(challenge, int(time.time()))},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.json()["challenge"] == "c-123"

    event = {
        "token": "legacy",
        "team_id": "T0",
        "api_app_id": "A0TRIAGE",
        "type": "event_callback",
        "event_id": "Ev0HOME",
        "event_time": int(time.time()),
        "event": {
            "type": "app_home_opened",
            "user": "U0ALICE",
            "channel": "D0HOME",
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        },
    }
    raw = json.dumps(event)
    headers = {"Content-Type": "application/json", **sign(raw, int(time.time()))}
    resp = httpx.post(server.url, content=raw, headers=headers, timeout=10)
    assert resp.status_code == 200
    publish = wait_for(lambda: server.app.responder.wait(1) and env.calls("views.publish"))
    assert publish[0].args["user_id"] == "U0ALICE"
    view = env.fake.views["U0ALICE"]
    assert view["type"] == "home"
    assert view["blocks"][0]["text"]["text"] == f"Review queue: {waiting} waiting"


def test_items_waiting_too_long_are_resurfaced_once_per_period(env: Env) -> None:
    client = make_client(env.fake.token)
    waiting = env.rows(
        "SELECT count(*) FROM routes r JOIN outbox o ON o.item_id = r.item_id "
        "AND o.kind = 'review' AND o.state = 'sent' WHERE r.state = 'awaiting_review'"
    )[0][0]
    later = datetime.now(UTC) + timedelta(hours=25)

    assert resurface(env.config, client) == 0  # nothing has waited 24 h yet
    first = resurface(env.config, client, now=later, limit=500)
    repeat = resurface(env.config, client, now=later + timedelta(minutes=5), limit=500)
    next_day = resurface(env.config, client, now=later + timedelta(hours=24), limit=500)

    assert first == waiting > 0
    assert repeat == 0
    assert next_day == waiting
    reminders = [c for c in env.calls("chat.postMessage") if "Still waiting" in c.args["text"]]
    assert len(reminders) == 2 * waiting
    assert all(c.args.get("thread_ts") for c in reminders)


def test_serve_command_refuses_to_start_without_secrets(env: Env, monkeypatch) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    result = CliRunner().invoke(cli_app, ["slack", "serve", "--config", str(env.config.path)])
    assert result.exit_code == 2 and "SLACK_SIGNING_SECRET" in result.output
    result = CliRunner().invoke(
        cli_app, ["slack", "serve", "--socket", "--config", str(env.config.path)]
    )
    assert result.exit_code == 2 and "SLACK_APP_TOKEN" in result.output


def test_socket_mode_shares_the_handlers(env: Env) -> None:
    from slack_bolt.adapter.socket_mode.internals import run_bolt_app
    from slack_sdk.socket_mode.request import SocketModeRequest

    # Over Socket Mode nothing is signed (the WebSocket is authenticated by the app token).
    app = build_app(
        env.config, bot_token=env.fake.token, signing_secret=None, socket_mode=True
    ).bolt
    item = waiting_item(env)
    good = SocketModeRequest(
        type="interactive", envelope_id="e1", payload=block_actions(env, item, ACTION_SPAM)
    )
    bad = SocketModeRequest(
        type="interactive", envelope_id="e2", payload=block_actions(env, item, "nope")
    )

    assert run_bolt_app(app, good).status == 200
    assert run_bolt_app(app, bad).status == 400
    assert [(d.item_id, d.action) for d in env.spool.read()] == [(item, "spam")]


def test_serve_command_answers_signed_clicks(env: Env, tmp_path: Path) -> None:
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    item = waiting_item(env, department="marketing")
    _, ts = review_ref(env, item)
    payload = block_actions(env, item, ACTION_CONFIRM, user="U0CLI")
    proc = subprocess.Popen(
        [sys.executable, "-m", "triage.cli", "slack", "serve", "--port", str(port)]
        + ["--config", str(env.config.path), "--db", str(env.db), "--interval", "0.5"],
        env={**os.environ},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), timeout=30)
        resp = click(url + EVENTS_PATH, payload)
        assert resp.status_code == 200
        wait_for(lambda: updates_of(env, ts))
    finally:
        proc.terminate()
        proc.wait(15)
    assert env.rows("SELECT user_id FROM review_decisions") == [("U0CLI",)]
    assert proc.stderr is not None and SECRET not in proc.stderr.read()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_manifest_declares_what_the_app_uses() -> None:
    import yaml

    result = CliRunner().invoke(cli_app, ["slack", "manifest"])
    assert result.exit_code == 0
    manifest = yaml.safe_load(result.output)
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "channels:history", "commands"} <= scopes
    # Configured channel names are resolved with conversations.list (issue 12).
    assert {"channels:read", "groups:read", "groups:history"} <= scopes
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith(EVENTS_PATH)
    assert settings["event_subscriptions"]["request_url"].endswith(EVENTS_PATH)
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]
    assert "socket_mode_enabled" in settings
    features = manifest["features"]
    assert features["app_home"]["home_tab_enabled"] is True
    assert [c["command"] for c in features["slash_commands"]] == ["/triage"]
    assert features["slash_commands"][0]["url"].endswith(EVENTS_PATH)


def _decisions_state(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything applying decisions changes, without the wall-clock columns."""
    queries = {
        "decisions": "SELECT * EXCLUDE (applied_at, message_updated_at) FROM review_decisions",
        "audit": "SELECT * EXCLUDE (recorded_at, notified_at) FROM review_audit",
        "routes": "SELECT item_id, department, state, rule FROM routes",
        "predictions": "SELECT item_id, label, labels, needs_review, review_reason FROM predictions",
        "outbox": "SELECT key, item_id, destination, kind, state FROM outbox",
        "training": "SELECT * FROM training_examples",
    }
    with STORE_LOCK, open_store(db) as store:
        return {
            name: sorted(store.con.execute(sql).fetchall(), key=repr)
            for name, sql in queries.items()
        }


@pytest.mark.parametrize("seed", [1, 2])
def test_batched_decisions_give_the_same_result_as_one_by_one(
    seeded: Seeded, tmp_path: Path, seed: int
) -> None:
    import random

    rng = random.Random(seed)
    with STORE_LOCK, open_store(seeded.db) as store:
        waiting = [
            str(r[0])
            for r in store.con.execute(
                "SELECT item_id FROM routes WHERE state = 'awaiting_review' ORDER BY item_id"
            ).fetchall()
        ]
    targets = rng.sample(waiting, 15) + ["ffffffffffffffffffff"]  # and an unknown item
    clicks: list[clicks_mod.Decision] = []
    for n in range(60):
        item = rng.choice(targets)
        action = rng.choice(["confirm", "relabel", "reroute", "spam"])
        value = {"relabel": rng.choice(LABEL_CHOICES), "reroute": rng.choice(DEPT_CHOICES)}.get(
            action
        )
        clicks.append(
            clicks_mod.Decision(
                decision_id=f"d{seed}-{n:04d}",
                item_id=item,
                action=action,
                value=value,
                user_id=f"U0REV{n % 5}",
                user_name=None,
                decided_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC).isoformat(),
                channel="C0REVIEW",
                message_ts=f"1700000000.{n:06d}",
            )
        )
    clicks += rng.sample(clicks, 6)  # the same click spooled twice (a retried delivery)

    results = {}
    for batch in (1, 7, 1000):  # one by one, batches cutting through items, all at once
        db = tmp_path / f"batch{batch}.duckdb"
        shutil.copy(seeded.db, db)
        config = load_config(seeded.config_path, database=str(db))
        spool = DecisionSpool(config.review.spool)
        spool.append(clicks)
        report = apply_mod.apply_spool(config, spool, batch=batch)
        assert len(spool) == 0 and not report.busy
        results[batch] = (_decisions_state(db), report)

    state, report = results[1]
    assert results[7][0] == state and results[1000][0] == state
    assert results[7][1] == report and results[1000][1] == report
    # And what "right" means, independently of the code: each click audited exactly once ...
    unique = list(dict.fromkeys(c.decision_id for c in clicks))
    audit_ids = [row[0] for row in state["audit"]]
    assert sorted(audit_ids) == sorted(unique)
    # ... each known item settled by its first click in arrival order, the others superseded.
    first: dict[str, str] = {}
    for c in clicks:
        first.setdefault(c.item_id, c.decision_id)
    decided = {row[0]: row[1] for row in state["decisions"]}
    assert decided == {i: d for i, d in first.items() if i != "ffffffffffffffffffff"}
    outcomes = {row[0]: row[7] for row in state["audit"]}
    assert {d for d, o in outcomes.items() if o == "applied"} == set(decided.values())
    assert {o for d, o in outcomes.items() if d not in decided.values()} <= {
        "superseded",
        "rejected",
    }
    unknown = {c.decision_id for c in clicks if c.item_id == "ffffffffffffffffffff"}
    assert (report.applied, report.rejected) == (len(decided), len(unknown))
    assert report.superseded == len(unique) - len(decided) - len(unknown)


LABEL_CHOICES = ["kudos", "sales_lead", "feature_request", "service_issue", "other"]
DEPT_CHOICES = ["marketing", "sales", "product", "support"]
