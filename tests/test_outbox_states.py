"""The outbox state machine, driven by the real drain against a local webhook receiver.

From the contract (README, "How it works" and "Department handoffs"; triage/store/outbox.py's
docstring names the states): a delivery is ``pending``, goes ``sending`` (committed before the
call out), then ``sent`` (or ``previewed`` for a JSON preview); a failure makes it ``failed``, due
again after a backoff, and ``dead`` after ``delivery.max_attempts`` failures, or at once for
refused credentials or a destination no longer configured. A row left ``sending`` by a crash is
looked up at the destination before anything is sent again; while that lookup fails it stays
``sending``. ``triage outbox retry`` puts dead deliveries back in the queue.

Each test seeds a real DuckDB store with items and their predictions, queues deliveries, and
drains with the real ``webhook`` destination against the local receiver (tests/fakes/webhook.py,
which verifies signatures and de-duplicates by ``Idempotency-Key``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml

from flows.settings import load_config
from tests.fakes.webhook import FakeWebhookReceiver, start_fake_webhook
from triage.config import Config
from triage.delivery import DeliveryReport, drain
from triage.destinations import build_destinations
from triage.models import LABELS, Mention
from triage.routing import delivery_key, outbox_table
from triage.store import Store, open_store

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MAX_ATTEMPTS = 3


@dataclass
class Desk:
    """The receiver, the configuration and the open store of one test."""

    hook: FakeWebhookReceiver
    config: Config
    store: Store

    def drain(self, limit: int = 10_000) -> DeliveryReport:
        return drain(self.store, self.config, build_destinations(self.config), limit=limit)

    def row(self, key: str) -> dict[str, Any]:
        rows = self.store._rows(
            "SELECT state, attempts, last_error, next_attempt_at, external_ref, sent_at "
            "FROM outbox WHERE key = ?",
            [key],
        )
        assert len(rows) == 1
        return rows[0]

    def make_due(self) -> None:
        """As if every backoff had run out."""
        self.store._execute(
            "UPDATE outbox SET next_attempt_at = now() - INTERVAL 1 SECOND "
            "WHERE next_attempt_at IS NOT NULL"
        )

    def queue(self, item: str, destination: str = "hook", kind: str = "handoff") -> str:
        self.store.enqueue(outbox_table([item], [destination], [kind], datetime.now(UTC)))
        return delivery_key(item, destination, kind)


def seed(store: Store, items: list[tuple[str, bool]]) -> None:
    """Items with a prediction each: ``(external id, needs_review)``."""
    mentions = [
        Mention(source="forms", external_id=ext, text=f"the app crashes ({ext})", created_at=T0)
        for ext, _ in items
    ]
    store.insert_items(mentions)
    n = len(items)
    table = {
        "item_id": [m.id for m in mentions],
        "label": ["service_issue"] * n,
        "labels": [["service_issue"]] * n,
        "score": [0.9] * n,
        "needs_review": [flag for _, flag in items],
        "review_reason": [None] * n,
        "model_version": ["test"] * n,
    }
    for lab in LABELS:
        table[f"score_{lab}"] = [0.9 if lab == "service_issue" else 0.01] * n
    store.insert_predictions(pa.table(table))


def item(ext: str) -> str:
    return Mention(source="forms", external_id=ext, text="x", created_at=T0).id


@pytest.fixture
def desk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Desk]:
    hook = start_fake_webhook()
    monkeypatch.setenv("TRIAGE_WEBHOOK_SECRET", hook.secret)
    settings = {
        "sources": [],
        "departments": {"support": {"destination": "hook"}},
        "delivery": {"max_attempts": MAX_ATTEMPTS},
        "destinations": {
            "hook": {
                "type": "webhook",
                "url": f"{hook.url}/hooks/support",
                "status_url": f"{hook.url}/status/{{key}}",
                "timeout": 2,
                "retries": 0,
                "backoff": 0.01,
            },
            "files": {"type": "preview"},
        },
        "outbox_dir": str(tmp_path / "previews"),
    }
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    config = load_config(path, database=str(tmp_path / "t.duckdb"))
    try:
        with open_store(config.database) as store:
            seed(store, [("a", False), ("b", False), ("c", True)])
            yield Desk(hook, config, store)
    finally:
        hook.stop()


def test_a_delivery_is_sent_once_and_recorded(desk: Desk) -> None:
    key = desk.queue(item("a"))
    assert desk.row(key)["state"] == "pending"
    before = datetime.now(UTC)
    report = desk.drain()
    assert report.as_dict() == {"sent": 1, "previewed": 0, "reconciled": 0, "failed": 0, "dead": 0}
    row = desk.row(key)
    assert row["state"] == "sent" and row["attempts"] == 1 and row["last_error"] is None
    assert row["sent_at"] >= before and row["external_ref"]
    assert list(desk.hook.received) == [key]
    doc = desk.hook.received[key]["doc"]
    assert (doc["idempotency_key"], doc["kind"], doc["item"]["id"]) == (key, "handoff", item("a"))
    # Nothing is due any more: a second drain sends nothing.
    assert desk.drain().as_dict()["sent"] == 0
    assert len(desk.hook.requests("POST")) == 1


def test_a_preview_is_counted_apart_from_sends(desk: Desk) -> None:
    key = desk.queue(item("a"), "files")
    report = desk.drain()
    assert (report.sent, report.previewed, report.previewed_by) == (0, 1, {"files"})
    row = desk.row(key)
    assert row["state"] == "previewed" and Path(row["external_ref"]).is_file()
    assert desk.hook.received == {}


def test_failures_back_off_then_dead_letter_after_max_attempts(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.hook.fail_next(500, times=MAX_ATTEMPTS, path="/hooks")
    before = datetime.now(UTC)
    report = desk.drain()
    assert (report.failed, report.dead, report.sent) == (1, 0, 0)
    row = desk.row(key)
    assert row["state"] == "failed" and row["attempts"] == 1 and "500" in row["last_error"]
    # Backoff: due again later, not now.
    assert row["next_attempt_at"] > before + timedelta(seconds=1)
    assert desk.store.due_deliveries(10) == []
    assert desk.drain().as_dict()["failed"] == 0
    for attempt in range(2, MAX_ATTEMPTS + 1):
        desk.make_due()
        report = desk.drain()
        dead = attempt == MAX_ATTEMPTS
        assert (report.failed, report.dead) == (0 if dead else 1, 1 if dead else 0)
        assert desk.row(key)["attempts"] == attempt
        assert desk.row(key)["state"] == ("dead" if dead else "failed")
    # Dead letters are not retried by the drain...
    desk.make_due()
    assert desk.drain().as_dict() == {k: 0 for k in DeliveryReport().as_dict()}
    # ...until `triage outbox retry` puts them back (only the named destination's).
    assert desk.store.retry_dead("files") == 0
    assert desk.row(key)["state"] == "dead"
    assert desk.store.retry_dead("hook") == 1
    row = desk.row(key)
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, None)
    assert desk.drain().sent == 1
    assert list(desk.hook.received) == [key]


def test_retry_without_a_destination_requeues_every_dead_letter(desk: Desk) -> None:
    keys = [desk.queue(item("a")), desk.queue(item("b"), "gone")]
    desk.hook.fail_next(401, times=1, path="/hooks")
    assert desk.drain().dead == 2
    assert [desk.row(k)["state"] for k in keys] == ["dead", "dead"]
    assert desk.store.retry_dead() == 2
    assert [desk.row(k)["state"] for k in keys] == ["pending", "pending"]


def test_refused_credentials_dead_letter_at_once(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.hook.fail_next(401, times=1, path="/hooks")
    report = desk.drain()
    assert (report.dead, report.failed) == (1, 0)
    row = desk.row(key)
    assert row["state"] == "dead" and row["attempts"] == 1 and "401" in row["last_error"]


def test_a_destination_no_longer_configured_is_dead_at_once_with_the_fix(desk: Desk) -> None:
    key = desk.queue(item("a"), "renamed-hook")
    report = desk.drain()
    assert (report.dead, report.sent) == (1, 0)
    row = desk.row(key)
    assert row["state"] == "dead" and row["next_attempt_at"] <= datetime.now(UTC)
    assert "renamed-hook" in row["last_error"]
    assert "triage outbox retry --destination renamed-hook" in row["last_error"]


def test_a_delivery_whose_item_is_gone_is_dead_at_once(desk: Desk) -> None:
    key = desk.queue("no-such-item")
    report = desk.drain()
    assert (report.dead, report.sent) == (1, 0)
    row = desk.row(key)
    assert row["state"] == "dead" and row["last_error"] == "item not found"
    assert desk.hook.received == {}


def test_a_delivery_left_sending_is_looked_up_not_sent_again(desk: Desk) -> None:
    key = desk.queue(item("a"))
    assert desk.drain().sent == 1
    # The crash: the receiver has it, but the store still says `sending`.
    desk.store.mark_sending(key)
    report = desk.drain()
    assert (report.reconciled, report.sent) == (1, 0)
    assert desk.row(key)["state"] == "sent"
    assert len(desk.hook.requests("POST")) == 1 and desk.hook.duplicates == 0


def test_a_delivery_left_sending_that_never_arrived_is_sent(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.store.mark_sending(key)  # crashed before the call reached the receiver
    report = desk.drain()
    assert (report.reconciled, report.sent) == (0, 1)
    assert desk.row(key)["state"] == "sent" and list(desk.hook.received) == [key]


def test_a_failed_lookup_stays_sending_until_max_attempts(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.store.mark_sending(key)
    desk.hook.fail_next(500, times=10, path="/status")
    before = datetime.now(UTC)
    report = desk.drain()
    assert (report.failed, report.dead, report.sent) == (1, 0, 0)
    row = desk.row(key)
    assert row["state"] == "sending" and row["attempts"] == 2
    assert row["last_error"].startswith("lookup: DeliveryError: ") and "500" in row["last_error"]
    assert row["next_attempt_at"] > before + timedelta(seconds=1)
    assert desk.store.due_deliveries(10) == []
    desk.make_due()
    report = desk.drain()
    assert (report.failed, report.dead) == (0, 1)
    assert desk.row(key)["state"] == "dead"
    assert desk.hook.requests("POST", ok_only=False) == []


def test_a_refused_lookup_dead_letters_at_once(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.store.mark_sending(key)
    desk.hook.fail_next(401, times=1, path="/status")
    report = desk.drain()
    assert (report.dead, report.failed) == (1, 0)
    assert desk.row(key)["state"] == "dead"


def test_due_deliveries_come_oldest_first_flagged_first_within_a_batch(desk: Desk) -> None:
    later = datetime.now(UTC)
    earlier = later - timedelta(minutes=1)
    ids = [item("a"), item("b"), item("c")]  # c needs review
    desk.store.enqueue(outbox_table(ids, ["hook"] * 3, ["handoff"] * 3, later))
    desk.store.enqueue(outbox_table([ids[0]], ["files"], ["review"], earlier))
    due = desk.store.due_deliveries(10)
    assert [r["item_id"] for r in due[:2]] == [ids[0], ids[2]]
    assert due[0]["destination"] == "files"
    tail = [r["key"] for r in due[2:]]
    assert tail == sorted(tail) and len(due) == 4
    assert {r["state"] for r in due} == {"pending"} and {r["attempts"] for r in due} == {0}
    assert len(desk.store.due_deliveries(2)) == 2
    only = desk.store.due_deliveries(10, destinations=["files"])
    assert [r["destination"] for r in only] == ["files"]
    assert desk.store.due_deliveries(10, destinations=[]) == []


def test_a_drain_sends_no_more_than_its_limit(desk: Desk) -> None:
    keys = [desk.queue(item(x)) for x in ("a", "b", "c")]
    assert desk.drain(limit=2).sent == 2
    assert sorted(desk.row(k)["state"] for k in keys) == ["pending", "sent", "sent"]
    assert desk.drain().sent == 1


def test_each_death_is_announced_once(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.hook.fail_next(401, times=2, path="/hooks")
    desk.drain()
    (dead,) = desk.store.unannounced_dead()
    assert (dead["key"], dead["destination"], dead["attempts"]) == (key, "hook", 1)
    assert "401" in dead["last_error"]
    desk.store.mark_dead_announced(key, dead["died_at"], "alert-1")
    assert desk.store.unannounced_dead() == []
    # Requeued, dead again: a new death, announced again.
    desk.store.retry_dead()
    desk.drain()
    (again,) = desk.store.unannounced_dead()
    assert again["key"] == key and again["died_at"] != dead["died_at"]
    assert desk.store.unannounced_dead(limit=0) == []


def test_a_delivery_missing_from_the_outbox_is_reported_dead(desk: Desk) -> None:
    """Marking a key the outbox does not hold creates nothing and reports it dead (never "failed",
    which would promise a retry that cannot happen)."""
    assert desk.store.mark_failed("no-such-key", "boom", 60, MAX_ATTEMPTS) == "dead"
    assert desk.store.mark_lookup_failed("no-such-key", "boom", 60, MAX_ATTEMPTS) == "dead"
    assert desk.store._rows("SELECT key FROM outbox", []) == []


def test_long_errors_are_stored_cut_to_2000_characters(desk: Desk) -> None:
    key = desk.queue(item("a"))
    error = "x" * 1999 + "yz" + "!" * 3000
    assert desk.store.mark_failed(key, error, 60, MAX_ATTEMPTS) == "failed"
    assert desk.row(key)["last_error"] == error[:2000]
    desk.store.mark_sending(key)
    assert desk.store.mark_lookup_failed(key, error, 60, MAX_ATTEMPTS) == "sending"
    assert desk.row(key)["last_error"] == error[:2000]


def test_a_small_page_reaches_past_failures_and_the_limit_holds(desk: Desk) -> None:
    seed(desk.store, [("d", False), ("e", False)])
    keys = sorted(desk.queue(item(x)) for x in ("a", "b", "c", "d", "e"))
    desk.hook.fail_next(500, times=2, path="/hooks")
    report = drain(desk.store, desk.config, build_destinations(desk.config), limit=3, batch=2)
    # Two failed and stay out of the way; one more was sent; the rest wait for the next drain.
    assert (report.failed, report.sent) == (2, 1)
    assert sorted(desk.row(k)["state"] for k in keys) == [
        "failed",
        "failed",
        "pending",
        "pending",
        "sent",
    ]
    report = drain(desk.store, desk.config, build_destinations(desk.config), limit=10, batch=1)
    assert (report.sent, report.failed) == (2, 0)


def test_every_outcome_is_counted_per_delivery(desk: Desk) -> None:
    previews = [desk.queue(item(x), "files") for x in ("a", "b")]
    assert desk.drain().previewed == 2
    hooks = [desk.queue(item(x)) for x in ("a", "b", "c")]
    assert desk.drain().sent == 3
    for k in hooks[:2]:
        desk.store.mark_sending(k)  # two crashes after the receiver had them
    report = desk.drain()
    assert (report.reconciled, report.sent) == (2, 0)
    # Reconciled deliveries keep a reference to what the receiver holds.
    assert all(desk.row(k)["external_ref"] for k in hooks)
    fresh = [desk.queue(item(x), kind="note") for x in ("a", "b", "c")]
    for k in fresh:
        desk.store.mark_sending(k)  # crashed mid-send, and the receiver cannot be asked now
    desk.hook.fail_next(500, times=3, path="/status")
    report = desk.drain()
    assert (report.failed, report.dead) == (3, 0)
    assert {desk.row(k)["state"] for k in fresh} == {"sending"}
    assert {desk.row(k)["state"] for k in previews} == {"previewed"}


# ------------------------------------------------------------------ backoff, counts, error text
# From drain's and backoff_seconds's docstrings: after the n-th failed attempt (a send, or a lookup
# of a delivery left `sending`) the delivery is due again after 30 s * 2 ** (n - 1), capped at an
# hour, times a random factor in [0.5, 1). The factor is pinned to its lower bound here, so each
# delay is exactly half the schedule's: 15 s after the first failure, 30 s after the second.


def due_in(desk: Desk, key: str, before: datetime) -> float:
    """Seconds from ``before`` (taken just before the drain) to the row's next attempt."""
    return (desk.row(key)["next_attempt_at"] - before).total_seconds()


def test_each_failed_send_backs_off_twice_as_long_as_the_one_before(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("triage.delivery.JITTER.random", lambda: 0.0)
    key = desk.queue(item("a"))
    desk.hook.fail_next(500, times=2, path="/hooks")
    for attempt, delay in ((1, 15.0), (2, 30.0)):
        before = datetime.now(UTC)
        assert desk.drain().failed == 1
        assert desk.row(key)["attempts"] == attempt
        # A few seconds of slack for a loaded machine; the neighbouring delays are 2x away.
        assert delay <= due_in(desk, key, before) < delay + 5
        desk.make_due()


def test_a_failed_lookup_backs_off_as_the_attempt_it_counts_as(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("triage.delivery.JITTER.random", lambda: 0.0)
    key = desk.queue(item("a"))
    desk.store.mark_sending(key)  # attempt 1 crashed mid-send
    desk.hook.fail_next(500, times=1, path="/status")
    before = datetime.now(UTC)
    assert desk.drain().failed == 1
    # The lookup was attempt 2: 30 s * 2 ** 1 at the lowest jitter.
    assert desk.row(key)["attempts"] == 2
    assert 30.0 <= due_in(desk, key, before) < 35.0


def test_two_deliveries_dying_in_one_drain_count_two(desk: Desk) -> None:
    keys = [desk.queue(item("a")), desk.queue(item("b"))]
    desk.hook.fail_next(401, times=2, path="/hooks")
    report = desk.drain()
    assert (report.dead, report.failed, report.sent) == (2, 0, 0)
    assert [desk.row(k)["state"] for k in keys] == ["dead", "dead"]


def test_two_lookups_refused_in_one_drain_count_two_deaths(desk: Desk) -> None:
    keys = [desk.queue(item("a")), desk.queue(item("b"))]
    for k in keys:
        desk.store.mark_sending(k)
    desk.hook.fail_next(401, times=2, path="/status")
    report = desk.drain()
    assert (report.dead, report.failed, report.reconciled) == (2, 0, 0)
    assert [desk.row(k)["state"] for k in keys] == ["dead", "dead"]


def test_a_destination_error_is_stored_as_the_destination_wrote_it(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.hook.fail_next(500, times=1, path="/hooks")
    desk.drain()
    error = desk.row(key)["last_error"]
    # The webhook's own message names the destination and the status; no exception type in front.
    assert "500" in error and "hook" in error
    assert not error.startswith("DeliveryError")


def test_any_other_exception_is_stored_with_its_type_name(desk: Desk, tmp_path: Path) -> None:
    # The preview destination writes into `outbox_dir`; a plain file there makes it raise OSError.
    blocker = Path(desk.config.outbox_dir)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder", encoding="utf-8")
    key = desk.queue(item("a"), "files")
    report = desk.drain()
    assert (report.failed, report.previewed) == (1, 0)
    row = desk.row(key)
    assert row["state"] == "failed"
    name, _, message = row["last_error"].partition(": ")
    assert name in {"FileExistsError", "NotADirectoryError"}, row["last_error"]
    assert str(blocker) in message


def test_a_delivery_reconciled_after_a_crash_keeps_the_receivers_id(desk: Desk) -> None:
    key = desk.queue(item("a"))
    desk.store.mark_sending(key)
    # The crashed run's POST reached the receiver (signed as the README documents), and the
    # process died before recording the receiver's answer.
    body = json.dumps({"idempotency_key": key, "kind": "handoff"}).encode()
    ts = str(int(time.time()))
    mac = hmac.new(desk.hook.secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
    answer = httpx.post(
        f"{desk.hook.url}/hooks/support",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Triage-Timestamp": ts,
            "X-Triage-Signature": "sha256=" + mac.hexdigest(),
        },
    )
    assert answer.status_code == 202
    receiver_id = answer.json()["id"]
    report = desk.drain()
    assert (report.reconciled, report.sent) == (1, 0)
    row = desk.row(key)
    assert row["state"] == "sent" and row["external_ref"] == f"webhook:{receiver_id}"
    assert receiver_id != key and desk.hook.duplicates == 0


def test_each_destination_gets_the_item_as_its_privacy_settings_allow(
    desk: Desk, tmp_path: Path
) -> None:
    # README, "Privacy": a destination sees in clear only the kinds it lists in `keep_in_clear`.
    seed(desk.store, [("ann@example.com", False), ("bob@example.com", False)])
    redacted = desk.queue(item("bob@example.com"))
    desk.drain()
    assert "bob@example.com" not in json.dumps(desk.hook.received[redacted]["doc"])
    path = tmp_path / "triage.yaml"
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    settings["destinations"]["hook"]["keep_in_clear"] = ["email"]
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    config = load_config(path, database=str(tmp_path / "t.duckdb"))
    kept = desk.queue(item("ann@example.com"))
    drain(desk.store, config, build_destinations(config), limit=10)
    assert "ann@example.com" in desk.hook.received[kept]["doc"]["item"]["text"]
