"""Department handoffs (issue 6): each department receives its handoff in its own tool, exactly once.

Everything runs for real — the file connector, the shipped spaCy model, routing, the DuckDB outbox,
the handoff destinations with httpx and slack_sdk — against local fakes of Zendesk, HubSpot, GitHub,
a webhook receiver and Slack on random ports that check credentials and request shapes.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from flows import triage as flow_mod
from flows.settings import load_config
from tests.fakes.github import FakeGitHub, start_fake_github
from tests.fakes.hubspot import FakeHubSpot, start_fake_hubspot
from tests.fakes.slack_threads import FakeSlackThreads, start_fake_slack_threads
from tests.fakes.webhook import FakeWebhookReceiver, start_fake_webhook
from tests.fakes.zendesk import FakeZendesk, start_fake_zendesk
from triage import store as store_mod
from triage.cli import app
from triage.config import ConfigError
from triage.destinations.zendesk import urgency
from triage.models import item_id
from triage.routing import AUTO_HANDOFF, AWAITING_REVIEW, delivery_key, route_batch
from triage.similarity import FEATURE_THRESHOLD, jaccard, signature
from triage.store import open_store

SOURCE = "social"
# (id, author handle, text): the shipped model labels each of these confidently.
FEED: list[tuple[str, str, str]] = [
    ("c1", "@jo", "The app crashes on login every time, I cannot get to my notes"),
    ("f1", "@ann", "Please add dark mode, my eyes hurt at night"),
    ("f2", "@bob", "Would love a dark mode option in the app"),
    ("s1", "kim@bigco.example", "How much is the business plan for 40 seats? need a quote"),
    ("k1", "@fan", "Love Nimbus Notes, best note app ever, thank you team!"),
    ("c2", "@jo", "Still crashing when I try to log in, third time today"),
    ("f3", "@cy", "let us export notes to CSV please"),
    ("c3", "@max", "I was charged twice this month, need a refund"),
]
LABELS = {"c": "service_issue", "f": "feature_request", "s": "sales_lead", "k": "kudos"}


@dataclass
class World:
    """The fakes, the configuration and the database of one test."""

    slack: FakeSlackThreads
    zendesk: FakeZendesk
    hubspot: FakeHubSpot
    github: FakeGitHub
    webhook: FakeWebhookReceiver
    config: Path
    db: Path
    feed: Path

    def settings(self) -> dict[str, Any]:
        """The configuration as a mapping, to change and :meth:`write` back."""
        data: dict[str, Any] = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        return data

    def write(self, data: dict[str, Any]) -> None:
        """Replace the configuration file."""
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")

    def add(self, rows: list[tuple[str, str, str]], day: int = 20) -> None:
        """Append records to the feed file (the file connector picks up appended lines)."""
        with self.feed.open("a", encoding="utf-8") as fh:
            for i, (ext, handle, text) in enumerate(rows):
                rec = {
                    "id": ext,
                    "text": text,
                    "created_at": f"2026-11-{day:02d}T{8 + i % 10:02d}:00:00Z",
                    "author": handle,
                    "author_name": handle.strip("@").split("@")[0].title(),
                    "url": f"https://social.example/{ext}",
                }
                fh.write(json.dumps(rec) + "\n")

    def run(self) -> dict[str, Any]:
        """One pass of the pipeline's own stage functions; returns the delivery summary."""
        cfg = load_config(self.config, database=str(self.db))
        for source in cfg.sources:
            flow_mod.ingest(cfg, source)
        flow_mod.classify_pending(cfg)
        flow_mod.route_pending(cfg)
        return flow_mod.deliver_pending(cfg)

    def deliver(self) -> dict[str, Any]:
        """Only the delivery stage (drain the outbox)."""
        return flow_mod.deliver_pending(load_config(self.config, database=str(self.db)))

    def outbox(self) -> dict[str, str]:
        """Delivery key -> state."""
        with duckdb.connect(str(self.db), read_only=True) as con:
            return dict(con.execute("SELECT key, state FROM outbox").fetchall())

    def make_due(self) -> None:
        """Skip the backoff wait of failed deliveries, as if their retry time had come."""
        with duckdb.connect(str(self.db)) as con:
            con.execute("UPDATE outbox SET next_attempt_at = now() WHERE state = 'failed'")


def key(ext: str, destination: str) -> str:
    """The handoff delivery key of a feed record to a destination."""
    return delivery_key(item_id(SOURCE, ext), destination, "handoff")


def review_ts(slack: FakeSlackThreads, ext: str) -> str:
    """The ts of a feed record's review message."""
    wanted = item_id(SOURCE, ext)
    for msg in slack.messages["C0REVIEW"]:
        payload = (msg.get("metadata") or {}).get("event_payload") or {}
        if payload.get("item_id") == wanted and payload.get("kind") == "review":
            return str(msg["ts"])
    raise AssertionError(f"no review message for {ext}")


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    """All fakes running, credentials in the environment, a configuration using every handoff."""
    slack, slack_server = start_fake_slack_threads()
    zendesk, hubspot = start_fake_zendesk(), start_fake_hubspot()
    github, webhook = start_fake_github(), start_fake_webhook()
    env = {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_API_URL": slack.url,
        "ZENDESK_EMAIL": zendesk.email,
        "ZENDESK_API_TOKEN": zendesk.token,
        "HUBSPOT_TOKEN": hubspot.token,
        "GITHUB_TOKEN": github.token,
        "TRIAGE_WEBHOOK_SECRET": webhook.secret,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fast = {"timeout": 0.5, "backoff": 0.01, "retries": 3}
    config = {
        "sources": [{"name": SOURCE, "type": "file", "path": "feed.jsonl"}],
        "routing": {
            "auto_handoff": {
                "service_issue": True,
                "feature_request": True,
                "sales_lead": True,
                "kudos": True,
            }
        },
        "departments": {
            "support": {"destination": "zendesk"},
            "sales": {"destination": "hubspot", "also": ["sales-channel"]},
            "product": {"destination": "github"},
            "marketing": {"destination": "testimonials"},
        },
        "review": {"destination": "review-channel"},
        "alerts": {"destination": "alerts-channel"},
        "delivery": {"max_attempts": 2},
        "destinations": {
            "review-channel": {"type": "slack", "channel": "#feedback-review"},
            "sales-channel": {"type": "slack", "channel": "#sales-leads"},
            "alerts-channel": {"type": "slack", "channel": "#triage-alerts"},
            # The helpdesk and the CRM may see the customer's e-mail (README, "Privacy").
            "zendesk": {
                "type": "zendesk",
                "base_url": zendesk.url,
                "keep_in_clear": ["email"],
                **fast,
            },
            "hubspot": {
                "type": "hubspot",
                "base_url": hubspot.url,
                "portal_id": 42,
                "keep_in_clear": ["email"],
                **fast,
            },
            "github": {"type": "github", "base_url": github.url, "repo": github.repo, **fast},
            "testimonials": {"type": "testimonials", "channel": "#marketing-kudos"},
            "webhook": {
                "type": "webhook",
                "url": f"{webhook.url}/hooks/support",
                "status_url": f"{webhook.url}/status/{{key}}",
                **fast,
            },
        },
    }
    cfg_path = tmp_path / "triage.yaml"
    cfg_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    w = World(
        slack,
        zendesk,
        hubspot,
        github,
        webhook,
        cfg_path,
        tmp_path / "t.duckdb",
        tmp_path / "feed.jsonl",
    )
    w.feed.touch()
    try:
        yield w
    finally:
        for fake in (zendesk, hubspot, github, webhook):
            fake.stop()
        slack_server.shutdown()
        slack_server.server_close()


# ------------------------------------------------------------------------ end to end
def test_every_department_receives_its_handoff_exactly_once(world: World) -> None:
    world.add(FEED)
    first = world.run()

    assert first["failed"] == 0 and first["dead"] == 0
    assert set(world.outbox().values()) == {"sent"}

    # Support: c1 opens a ticket with the context; c2 (same author, same problem) joins it.
    zd = world.zendesk
    assert len(zd.tickets) == 2
    by_ext = {t["external_id"]: t for t in zd.tickets.values()}
    t1, t3 = by_ext[key("c1", "zendesk")], by_ext[key("c3", "zendesk")]
    assert t1["priority"] == "high" and t3["priority"] == "high"
    body = t1["description"]
    for needle in ("crashes on login", "From: Jo (@jo)", "https://social.example/c1"):
        assert needle in body
    assert "Classification: service_issue (" in body and "Urgency: high" in body
    assert "label_service_issue" in t1["tags"]
    assert len(zd.comments[t1["id"]]) == 2
    assert "third time today" in zd.comments[t1["id"]][1]["body"]
    assert zd.comments[t1["id"]][1]["public"] is False
    creates = zd.requests("POST", "/api/v2/tickets.json")
    assert all(r.headers["idempotency-key"] == r.json["ticket"]["external_id"] for r in creates)

    # ... and the review threads say where each item went.
    thread_c1 = world.slack.thread("C0REVIEW", review_ts(world.slack, "c1"))
    thread_c2 = world.slack.thread("C0REVIEW", review_ts(world.slack, "c2"))
    # The fake's URL is plain http, so the note names the ticket without linking it.
    assert [m["text"] for m in thread_c1] == [f"handed to support: #{t1['id']} (zendesk)"]
    assert thread_c2[0]["text"].startswith("joined support") and len(thread_c2) == 1

    # Product: the two dark-mode requests fold into one issue with a count; CSV is its own issue.
    gh = world.github
    assert len(gh.issues) == 2
    dark = next(i for i in gh.issues.values() if "dark mode" in i["body"].lower())
    assert "**2 mentions**" in dark["body"]
    assert dark["body"].count("<!-- triage-key:") == 2
    assert len(gh.comments[dark["number"]]) == 1
    assert "Would love a dark mode" in gh.comments[dark["number"]][0]["body"]
    other = next(i for i in gh.issues.values() if i is not dark)
    assert "**1 mention**" in other["body"] and "CSV" in other["body"]
    assert all(i["labels"] == [{"name": "feature-request"}] for i in gh.issues.values())

    # Sales: a contact (by email) with the lead as an associated note, plus the sales channel.
    hs = world.hubspot
    assert [c["email"] for c in hs.objects["contacts"].values()] == ["kim@bigco.example"]
    ((note_id, note),) = hs.objects["notes"].items()
    assert note["triage_delivery_key"] == key("s1", "hubspot")
    assert "40 seats" in note["hs_note_body"]
    assert hs.associations == [(note_id, next(iter(hs.objects["contacts"])), 202)]
    assert len(world.slack.messages["C0SALES"]) == 1

    # Marketing: the kudos is a testimonial and a post with the author's history of praise.
    (kudos_post,) = world.slack.messages["C0MARKETING"]
    assert "First praise from this author." in json.dumps(kudos_post["blocks"])

    # A second run finds nothing new and sends nothing anywhere.
    calls_before = {
        "zendesk": len(zd.requests("POST")) + len(zd.requests("PUT")),
        "github": len(gh.requests("POST")),
        "hubspot": len(hs.requests("POST", "/crm/v3/objects/notes")),
        "slack": len(world.slack.calls_to("chat.postMessage")),
    }
    second = world.run()
    assert second["sent"] == second["reconciled"] == 0
    assert calls_before == {
        "zendesk": len(zd.requests("POST")) + len(zd.requests("PUT")),
        "github": len(gh.requests("POST")),
        "hubspot": len(hs.requests("POST", "/crm/v3/objects/notes")),
        "slack": len(world.slack.calls_to("chat.postMessage")),
    }


def test_the_prefect_flow_hands_off_and_a_new_mention_joins_the_group(world: World) -> None:
    world.add(FEED[:3])
    summary = flow_mod.triage(config_path=str(world.config), database=str(world.db))
    assert summary["deliver"]["failed"] == 0
    assert len(world.github.issues) == 1

    world.add([("f9", "@dee", "Dark mode please!! the white screen is blinding")], day=21)
    world.run()

    (issue,) = world.github.issues.values()
    assert "**3 mentions**" in issue["body"]
    assert len(world.github.comments[issue["number"]]) == 2
    assert len(world.zendesk.tickets) == 1


def test_repeated_complaints_join_only_within_the_window_and_the_problem(world: World) -> None:
    world.add(
        [
            ("c1", "@jo", "The app crashes on login every time, I cannot get to my notes"),
            ("c2", "@jo", "Still crashing when I try to log in, third time today"),
            ("c4", "@jo", "I was charged twice this month, need a refund"),  # another problem
            ("c5", "@max", "The app crashes on login every time for me too"),  # another author
        ],
        day=10,
    )
    world.add([("c6", "@jo", "Crashes on login again, still broken")], day=20)  # 10 days later
    world.run()

    externals = sorted(t["external_id"] for t in world.zendesk.tickets.values())
    assert externals == sorted(key(e, "zendesk") for e in ("c1", "c4", "c5", "c6"))
    first = next(
        t for t in world.zendesk.tickets.values() if t["external_id"] == key("c1", "zendesk")
    )
    assert len(world.zendesk.comments[first["id"]]) == 2


# ------------------------------------------------------------------ failures and crashes
def test_rate_limits_server_errors_and_timeouts_create_nothing_twice(world: World) -> None:
    zd, gh, hs = world.zendesk, world.github, world.hubspot
    zd.fail_next(429, retry_after=1, path="/api/v2/tickets.json", method="POST")
    zd.fail_next(500, path="/api/v2/tickets.json", method="POST")
    # The server creates the ticket but answers after the client's 0.5 s timeout.
    zd.fail_next(0, retry_after=1.0, path="/api/v2/tickets.json", method="POST")
    gh.fail_next(503, path=f"/repos/{gh.repo}/issues", method="POST")
    gh.fail_next(0, retry_after=1.0, path=f"/repos/{gh.repo}/issues", method="POST")
    hs.fail_next(429, retry_after=1, path="/crm/v3/objects/contacts/search", method="POST")
    world.add(FEED)

    first = world.run()

    statuses = Counter(r.status for r in zd.requests("POST", "/api/v2/tickets", ok_only=False))
    assert statuses[429] == 1 and statuses[500] == 1 and statuses[599] == 1
    # The timed-out create was repeated with the same Idempotency-Key: still one ticket per key.
    assert sorted(t["external_id"] for t in zd.tickets.values()) == sorted(
        [key("c1", "zendesk"), key("c3", "zendesk")]
    )
    # GitHub has no idempotency keys: the timed-out create is not repeated blindly...
    assert first["failed"] == 1
    world.make_due()
    second = world.run()
    # ... the retry finds the issue by its marker and does not open another one.
    assert second["failed"] == 0 and set(world.outbox().values()) == {"sent"}
    assert len(gh.issues) == 2
    assert sum(len(c) for c in gh.comments.values()) == 1
    assert len(hs.objects["notes"]) == 1


def test_crash_between_send_and_record_is_reconciled_not_resent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add(FEED)
    real = {m: getattr(store_mod.Store, m) for m in ("mark_sent", "finish_handoff")}
    # One crash per integration, each after its destination accepted a handoff: before our own
    # record of it (finish_handoff) or before the outbox's (mark_sent).
    pending_crashes = [
        ("finish_handoff", "zendesk"),
        ("finish_handoff", "github"),
        ("finish_handoff", "hubspot"),
        ("mark_sent", "zendesk"),
        ("mark_sent", "testimonials"),
        ("mark_sent", "sales-channel"),
    ]
    crashed: list[tuple[str, str]] = []

    def crashing(method: str) -> Any:
        def wrapper(self: store_mod.Store, k: str, *args: Any, **kwargs: Any) -> Any:
            for point in pending_crashes:
                if point[0] == method and k in {key(ext, point[1]) for ext, _, _ in FEED}:
                    pending_crashes.remove(point)
                    crashed.append(point)
                    raise SystemExit(f"simulated crash in {method}")
            return real[method](self, k, *args, **kwargs)

        return wrapper

    for method in real:
        monkeypatch.setattr(store_mod.Store, method, crashing(method))
    with pytest.raises(SystemExit):
        world.run()
    while pending_crashes:
        with pytest.raises(SystemExit):
            world.deliver()
    assert "sending" in world.outbox().values()
    summary = world.deliver()

    assert len(crashed) == 6
    assert summary["reconciled"] == 1
    # Each crashed handoff was looked up at its destination rather than sent again.
    assert world.zendesk.requests("GET", "/api/v2/tickets.json")
    assert world.github.requests("GET", f"/repos/{world.github.repo}/issues")
    assert world.hubspot.requests("POST", "/crm/v3/objects/notes/search")
    assert world.slack.calls_to("conversations.history")
    assert summary["failed"] == 0 and set(world.outbox().values()) == {"sent"}
    # Nothing lost, nothing twice, in every system.
    assert len(world.zendesk.tickets) == 2
    assert sum(len(c) for c in world.zendesk.comments.values()) == 3
    assert len(world.github.issues) == 2
    assert sum(len(c) for c in world.github.comments.values()) == 1
    assert len(world.hubspot.objects["notes"]) == 1
    assert len(world.hubspot.objects["contacts"]) == 1
    assert len(world.slack.messages["C0MARKETING"]) == 1
    assert len(world.slack.messages["C0SALES"]) == 1
    with duckdb.connect(str(world.db), read_only=True) as con:
        testimonials = con.execute("SELECT count(*) FROM testimonials").fetchone()
    assert testimonials == (1,)
    # Every review thread got its note exactly once, crashes or not.
    notes = Counter(
        (m.get("metadata") or {}).get("event_payload", {}).get("key")
        for m in world.slack.messages["C0REVIEW"]
        if m.get("thread_ts")
    )
    assert len(notes) == 7 and max(notes.values()) == 1  # 3 tickets, 3 issues, 1 lead


def test_dead_letters_are_announced_once_and_retried_by_the_command(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZENDESK_API_TOKEN", "revoked-token")
    world.add(FEED)

    first = world.run()

    assert first["dead"] == 3  # 401 is permanent: dead at once, not retried
    assert all(r.status == 401 for r in world.zendesk.requests("POST", ok_only=False))
    alerts = world.slack.messages["C0ALERTS"]
    assert len(alerts) == 3
    assert all("dead-lettered" in a["text"] and "credentials refused" in a["text"] for a in alerts)
    assert all("triage outbox retry --destination zendesk" in a["text"] for a in alerts)
    assert "revoked-token" not in json.dumps(alerts)

    world.run()
    assert len(world.slack.messages["C0ALERTS"]) == 3  # announced once per death

    monkeypatch.setenv("ZENDESK_API_TOKEN", world.zendesk.token)
    result = CliRunner().invoke(
        app,
        [
            "outbox",
            "retry",
            "--destination",
            "zendesk",
            "--config",
            str(world.config),
            "--db",
            str(world.db),
        ],
    )
    assert result.exit_code == 0 and "requeued 3" in result.output
    world.run()
    assert len(world.zendesk.tickets) == 2 and set(world.outbox().values()) == {"sent"}


def test_server_errors_dead_letter_after_max_attempts(world: World) -> None:
    world.add([FEED[0]])
    world.zendesk.fail_next(500, times=100, path="/api/v2/tickets.json", method="POST")

    assert world.run()["failed"] == 1
    assert world.slack.messages["C0ALERTS"] == []
    world.make_due()
    assert world.run()["dead"] == 1  # delivery.max_attempts is 2

    (alert,) = world.slack.messages["C0ALERTS"]
    assert "after 2 attempt(s)" in alert["text"] and "HTTP 500" in alert["text"]
    assert world.zendesk.tickets == {}


# ------------------------------------------------------------------------ webhook
def _use_webhook(world: World, **changes: Any) -> None:
    data = world.settings()
    data["departments"]["support"]["destination"] = "webhook"
    data["destinations"]["webhook"].update(changes)
    world.write(data)


def test_webhook_is_signed_and_reconciled_through_its_status_url(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_webhook(world)
    world.add(FEED)
    ours = {key(ext, "webhook") for ext, _, _ in FEED}
    real_mark_sent = store_mod.Store.mark_sent

    def crash_once(self: store_mod.Store, k: str, ref: str | None) -> None:
        if k in ours:
            monkeypatch.setattr(store_mod.Store, "mark_sent", real_mark_sent)
            raise SystemExit("crash")
        real_mark_sent(self, k, ref)

    monkeypatch.setattr(store_mod.Store, "mark_sent", crash_once)
    with pytest.raises(SystemExit):
        world.run()
    summary = world.run()

    rx = world.webhook
    assert summary["reconciled"] == 1
    assert sorted(rx.received) == sorted(key(e, "webhook") for e in ("c1", "c2", "c3"))
    assert rx.duplicates == 0
    doc = rx.received[key("c1", "webhook")]["doc"]
    assert doc["department"] == "support" and doc["classification"]["label"] == "service_issue"
    assert doc["item"]["author"]["handle"] == "@jo" and "crashes on login" in doc["item"]["text"]
    assert all(r.headers["x-triage-signature"].startswith("sha256=") for r in rx.requests("POST"))


def test_webhook_with_a_wrong_secret_is_refused_and_dead_lettered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_webhook(world)
    monkeypatch.setenv("TRIAGE_WEBHOOK_SECRET", "not-the-shared-secret")
    world.add([FEED[0]])

    assert world.run()["dead"] == 1
    assert world.webhook.received == {}
    assert [r.status for r in world.webhook.requests("POST", ok_only=False)] == [401]


# ------------------------------------------------------------------------ marketing
def test_testimonials_keep_the_praise_history_and_export_safely(
    world: World, tmp_path: Path
) -> None:
    world.add([("k1", "@fan", "Love Nimbus Notes, best note app ever, thank you team!")], day=3)
    world.run()
    world.add(
        [("k2", "@fan", '=HYPERLINK("x") Love Nimbus Notes again, thank you team, best app!')],
        day=9,
    )
    world.run()

    posts = world.slack.messages["C0MARKETING"]
    assert len(posts) == 2
    assert "Praise #2 from this author (first 2026-11-03, latest 2026-11-09)." in json.dumps(
        posts[1]["blocks"]
    )
    out = tmp_path / "testimonials.csv"
    result = CliRunner().invoke(
        app,
        [
            "testimonials",
            "export",
            "--out",
            str(out),
            "--config",
            str(world.config),
            "--db",
            str(world.db),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 2
    assert {r["praise_count"] for r in rows} == {"2"}
    assert rows[0]["text"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never runs it
    assert rows[1]["author_handle"] == "'@fan"


# ------------------------------------------------------------------------ routing config
def _routes(config_text: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "routing.yaml"
    path.write_text(config_text, encoding="utf-8")
    cfg = load_config(path)
    batch = pa.table(
        {
            "item_id": ["si", "fr", "fr-low", "kd", "unsure"],
            "source": ["s"] * 5,
            "text": ["x"] * 5,
            "label": ["service_issue", "feature_request", "feature_request", "kudos", "sales_lead"],
            "score": [0.95, 0.97, 0.7, 0.99, 0.55],
            "needs_review": [False, False, False, False, True],
        }
    )
    routes, _ = route_batch(cfg, batch)
    cols = routes.to_pydict()
    return dict(zip(cols["item_id"], cols["state"], strict=True))


def test_auto_handoff_is_set_per_label(tmp_path: Path) -> None:
    # Default: confident service issues go straight to support; everything else waits.
    assert _routes("sources: []\n", tmp_path) == {
        "si": AUTO_HANDOFF,
        "fr": AWAITING_REVIEW,
        "fr-low": AWAITING_REVIEW,
        "kd": AWAITING_REVIEW,
        "unsure": AWAITING_REVIEW,
    }
    per_label = (
        "routing:\n  auto_handoff:\n    service_issue: false\n    feature_request: 0.9\n"
        "    sales_lead: true\n"
    )
    assert _routes(per_label, tmp_path) == {
        "si": AWAITING_REVIEW,
        "fr": AUTO_HANDOFF,
        "fr-low": AWAITING_REVIEW,
        "kd": AWAITING_REVIEW,
        "unsure": AWAITING_REVIEW,  # flagged for review always waits
    }
    with pytest.raises(ConfigError, match="auto_handoff.kudos"):
        _routes("routing:\n  auto_handoff:\n    kudos: sometimes\n", tmp_path)


def test_near_duplicate_threshold_is_documented_and_separates_requests() -> None:
    def sim(a: str, b: str) -> float:
        return jaccard(signature(a), signature(b))

    assert (
        sim("Please add dark mode", "would love a dark mode option in the app") >= FEATURE_THRESHOLD
    )
    assert (
        sim("wish it had dark mode, my eyes hurt at night", "Dark mode please!")
        >= FEATURE_THRESHOLD
    )
    assert sim("Any chance the API gets webhooks?", "webhooks in the API would be great") == 1.0
    assert sim("please let us export to CSV", "dark mode please") < FEATURE_THRESHOLD
    assert sim("export to PDF", "export to CSV") < FEATURE_THRESHOLD


def test_review_thread_note_waits_for_the_review_message(world: World) -> None:
    # The review message fails (rate limited beyond the client's retries) and goes out later.
    world.slack.fail_next("chat.postMessage", status=429, retry_after=0, times=4)
    world.add([FEED[0]])
    world.run()
    assert len(world.zendesk.tickets) == 1
    world.make_due()
    world.run()

    ts = review_ts(world.slack, "c1")
    (note,) = world.slack.thread("C0REVIEW", ts)
    assert note["text"].startswith("handed to support:")
    with open_store(world.db) as store:
        assert store.handoff_ref(key("c1", "zendesk"))["note_state"] == "posted"


def test_ticket_priority_comes_from_words_and_reach() -> None:
    assert urgency("Total outage since 9am, nothing loads")[0] == "urgent"
    assert urgency("It keeps crashing when I open a notebook")[0] == "high"
    assert urgency("cannot download my export")[0] == "normal"  # not "down"
    assert urgency("sync is slow", 50_000)[0] == "high"


def test_sales_leads_without_an_email_share_one_contact_by_handle(world: World) -> None:
    world.add(
        [
            ("s2", "@lee", "How much is the business plan for 40 seats? need a quote"),
            (
                "s3",
                "@lee",
                "Do you offer a discount on the annual plan for 40 seats? pricing please",
            ),
        ]
    )
    world.run()

    hs = world.hubspot
    ((contact_id, contact),) = hs.objects["contacts"].items()
    assert contact["triage_handle"] == "social:@lee" and "email" not in contact
    assert len(hs.objects["notes"]) == 2
    assert {c for _, c, _ in hs.associations} == {contact_id}
    assert len(world.slack.messages["C0SALES"]) == 2


# ------------------------------------------------------------------ documented size limits
def queue_handoff(
    world: World,
    ext: str,
    text: str,
    label: str,
    destination: str,
    *,
    author: str = "@big",
    author_name: str | None = "Big Text",
    source: str = SOURCE,
    source_type: str | None = None,
) -> str:
    """Store one classified, released item with ``text`` as it is (no connector's length cap)
    and queue its handoff to ``destination``; return the delivery key."""
    from datetime import UTC, datetime

    from triage.models import ITEM_SCHEMA
    from triage.models import LABELS as ALL_LABELS
    from triage.routing import OUTBOX_SCHEMA, ROUTE_SCHEMA

    iid = item_id(source, ext)
    dkey = delivery_key(iid, destination, "handoff")
    now = datetime.now(UTC)
    department = {"service_issue": "support", "sales_lead": "sales", "feature_request": "product"}
    with open_store(world.db) as store:
        store.insert_item_table(
            pa.Table.from_pylist(
                [
                    {
                        "id": iid,
                        "source": source,
                        "external_id": ext,
                        "url": f"https://social.example/{ext}",
                        "author_handle": author,
                        "author_name": author_name,
                        "text": text,
                        "created_at": now,
                        "fetched_at": now,
                        "source_type": source_type,
                    }
                ],
                schema=ITEM_SCHEMA,
            )
        )
        scores = {f"score_{lab}": [0.96 if lab == label else 0.01] for lab in ALL_LABELS}
        store.insert_predictions(
            pa.table(
                {
                    "item_id": [iid],
                    "label": [label],
                    "labels": [[label]],
                    "score": [0.96],
                    **scores,
                    "needs_review": [False],
                    "review_reason": [None],
                    "model_version": ["test"],
                }
            )
        )
        routes = pa.Table.from_pylist(
            [
                {
                    "item_id": iid,
                    "department": department[label],
                    "rule": "test",
                    "state": "released",
                    "routed_at": now,
                }
            ],
            schema=ROUTE_SCHEMA,
        )
        row = {
            "key": dkey,
            "item_id": iid,
            "destination": destination,
            "kind": "handoff",
            "created_at": now,
        }
        store.insert_routes(routes, pa.Table.from_pylist([row], schema=OUTBOX_SCHEMA))
    return dkey


def test_hubspot_note_fits_65536_after_html_escaping(world: World) -> None:
    # 20,000 characters (the connectors' cap) of markup: five times longer once escaped.
    text = "Quote for 40 seats please " + "&<>" * 6660
    k = queue_handoff(world, "s-big", text, "sales_lead", "hubspot")

    summary = world.deliver()

    assert summary["dead"] == summary["failed"] == 0 and world.outbox()[k] == "sent"
    ((_, note),) = world.hubspot.objects["notes"].items()
    body = note["hs_note_body"]
    assert len(body) <= 65_536 and note["triage_delivery_key"] == k
    assert body.startswith("<p>Quote for 40 seats please &amp;&lt;&gt;")
    assert "…[truncated]</p><p>From: Big Text (@big)</p>" in body  # the context survives
    assert "<>" not in body and not re.search(r"&(?!amp;|lt;|gt;|quot;|#x27;)", body)


def test_zendesk_comment_fits_64kb_in_utf8(world: World) -> None:
    text = "The app crashes on login " + "🔥" * 20_000  # 80 KB of UTF-8
    k = queue_handoff(world, "c-big", text, "service_issue", "zendesk")

    summary = world.deliver()

    assert summary["dead"] == summary["failed"] == 0 and world.outbox()[k] == "sent"
    (ticket,) = world.zendesk.tickets.values()
    body = ticket["description"]
    assert len(body.encode("utf-8")) <= 64_000
    assert f"triage-key: {k}" in body and "…[truncated]" in body


def test_github_issue_and_comment_fit_65536(world: World) -> None:
    base = "please add dark mode to the app "
    first = queue_handoff(
        world, "f-big1", base + "`" * 40 + " x" * 50_000, "feature_request", "github"
    )
    world.deliver()
    second = queue_handoff(world, "f-big2", base + "y " * 50_000, "feature_request", "github")

    world.deliver()

    assert world.outbox()[first] == world.outbox()[second] == "sent"
    (issue,) = world.github.issues.values()
    assert len(issue["body"]) <= 65_536 and "**2 mentions**" in issue["body"]
    assert "`" * 41 + "text" in issue["body"]  # the fence still outlasts the text's backticks
    (comment,) = world.github.comments[issue["number"]]
    assert len(comment["body"]) <= 65_536 and f"<!-- triage-key:{second} -->" in comment["body"]


def test_webhook_has_no_documented_limit_and_gets_the_whole_text(world: World) -> None:
    _use_webhook(world)
    text = "crashes on login " + "&<>" * 30_000
    k = queue_handoff(world, "w-big", text, "service_issue", "webhook")

    world.deliver()

    assert world.webhook.received[k]["doc"]["item"]["text"] == text


def test_destination_fakes_refuse_what_the_apis_refuse(world: World) -> None:
    import httpx

    hs = httpx.post(
        f"{world.hubspot.url}/crm/v3/objects/notes",
        headers={"Authorization": f"Bearer {world.hubspot.token}"},
        json={"properties": {"hs_timestamp": "2026-01-01T00:00:00Z", "hs_note_body": "x" * 65_537}},
    )
    gh = httpx.post(
        f"{world.github.url}/repos/{world.github.repo}/issues",
        headers={"Authorization": f"Bearer {world.github.token}"},
        json={"title": "t", "body": "x" * 65_537},
    )
    zd = httpx.post(
        f"{world.zendesk.url}/api/v2/tickets.json",
        auth=(f"{world.zendesk.email}/token", world.zendesk.token),
        json={"ticket": {"comment": {"body": "é" * 40_000}}},
    )
    assert (hs.status_code, gh.status_code, zd.status_code) == (400, 422, 422)
    assert "65536" in gh.text and "hs_note_body" in hs.text


# ------------------------------------------------------------------ crash windows and edges
def test_review_thread_note_crash_between_posting_and_recording(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add([FEED[0]])
    real = store_mod.Store.set_note_state
    crashes: list[str] = []

    def crash_once(self: store_mod.Store, k: str, state: str, ref: str | None = None) -> None:
        if state == "posted" and not crashes:
            crashes.append(k)  # Slack has the note; the process dies before recording it
            raise SystemExit("simulated crash after posting the note")
        real(self, k, state, ref)

    monkeypatch.setattr(store_mod.Store, "set_note_state", crash_once)
    with pytest.raises(SystemExit):
        world.run()
    with open_store(world.db) as store:
        assert store.handoff_ref(key("c1", "zendesk"))["note_state"] == "sending"

    world.deliver()

    (note,) = world.slack.thread("C0REVIEW", review_ts(world.slack, "c1"))
    assert note["text"].startswith("handed to support:")
    with open_store(world.db) as store:
        ref = store.handoff_ref(key("c1", "zendesk"))
    assert ref["note_state"] == "posted" and ref["note_ref"] == f"C0REVIEW:{note['ts']}"
    assert crashes == [key("c1", "zendesk")]


def test_a_delivery_to_an_unknown_destination_is_dead_lettered_and_announced(
    world: World,
) -> None:
    world.add([FEED[0]])
    world.run()
    # The destination is removed from the configuration while a delivery to it is queued.
    k = queue_handoff(world, "c-gone", "crashes on login", "service_issue", "old-helpdesk")

    summary = world.deliver()

    assert summary["dead"] == 1 and world.outbox()[k] == "dead"
    with duckdb.connect(str(world.db), read_only=True) as con:
        (error,) = con.execute("SELECT last_error FROM outbox WHERE key = ?", [k]).fetchone()
    assert "'old-helpdesk' is not configured" in error
    assert "triage outbox retry --destination old-helpdesk" in error
    (alert,) = world.slack.messages["C0ALERTS"]
    assert "old-helpdesk" in alert["text"] and k in alert["text"]


def test_dead_letters_are_announced_to_a_webhook_alerts_destination(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = world.settings()
    data["alerts"]["destination"] = "webhook"
    world.write(data)
    monkeypatch.setenv("ZENDESK_API_TOKEN", "revoked-token")
    world.add([FEED[0], FEED[7]])

    assert world.run()["dead"] == 2
    world.run()

    alerts = {k: r["doc"] for k, r in world.webhook.received.items() if ":dead:" in k}
    assert len(alerts) == 2  # once per death, not again on the second run
    doc = next(iter(alerts.values()))
    assert doc["kind"] == "dead_letter" and "credentials refused" in doc["text"]
    assert doc["delivery"]["destination"] == "zendesk" and doc["delivery"]["attempts"] == 1
    assert "revoked-token" not in json.dumps(alerts)
    posts = [r for r in world.webhook.requests("POST") if ":dead:" in r.headers["idempotency-key"]]
    assert all(r.headers["x-triage-signature"].startswith("sha256=") for r in posts)
    assert world.slack.messages["C0ALERTS"] == []


def test_alerts_to_a_destination_that_cannot_carry_them_are_a_clear_error(
    world: World,
) -> None:
    from triage.destinations import check_destinations

    data = world.settings()
    data["alerts"]["destination"] = "zendesk"
    world.write(data)
    with pytest.raises(ValueError, match="'zendesk' is a zendesk destination"):
        check_destinations(load_config(world.config))
    data["alerts"]["destination"] = "nowhere"
    world.write(data)
    with pytest.raises(ValueError, match="'nowhere' is not a configured destination"):
        check_destinations(load_config(world.config))


# ------------------------------------------------------------------ Zendesk joins and requesters
CRASH = "The app crashes on login every time, I cannot get to my notes"
CRASH_AGAIN = "Still crashing on login every time, I cannot get to my notes at all"


def _ticket_of(world: World, delivery: str) -> int:
    """The id of the ticket a handoff created."""
    return next(t for t, v in world.zendesk.tickets.items() if v["external_id"] == delivery)


@pytest.mark.parametrize("status", ["solved", "pending", "hold"])
def test_a_repeat_complaint_reopens_the_ticket_it_joins(world: World, status: str) -> None:
    zd = world.zendesk
    ria_key = queue_handoff(world, "r1", CRASH, "service_issue", "zendesk")
    world.deliver()
    ned_key = queue_handoff(world, "n1", CRASH, "service_issue", "zendesk", author="@ned")
    world.deliver()
    ria, ned = _ticket_of(world, ria_key), _ticket_of(world, ned_key)
    zd.tickets[ria]["status"] = status  # an agent solved it, or waits on someone

    joined = queue_handoff(world, "r2", CRASH_AGAIN, "service_issue", "zendesk")
    ned_joined = queue_handoff(world, "n2", CRASH_AGAIN, "service_issue", "zendesk", author="@ned")
    summary = world.deliver()

    assert summary["failed"] == summary["dead"] == 0 and len(zd.tickets) == 2
    assert zd.tickets[ria]["status"] == "open"
    comment = zd.comments[ria][-1]
    assert f"triage-key: {joined}" in comment["body"] and comment["public"] is False
    assert "Still crashing" in comment["body"]
    # A ticket nobody has looked at yet keeps its "new" (it could never be set back).
    assert zd.tickets[ned]["status"] == "new"
    assert f"triage-key: {ned_joined}" in zd.comments[ned][-1]["body"]
    updates = {r.path: r.json["ticket"] for r in zd.requests("PUT")}
    assert updates[f"/api/v2/tickets/{ria}.json"]["status"] == "open"
    assert "status" not in updates[f"/api/v2/tickets/{ned}.json"]


def test_a_ticket_solved_between_our_read_and_our_join_is_reopened_not_left_solved(
    world: World,
) -> None:
    # The join reads the status, then updates: an agent who solved the ticket in between left
    # the new complaint as a note on a solved ticket that nobody would look at again.
    zd = world.zendesk
    created = queue_handoff(world, "r1", CRASH, "service_issue", "zendesk")
    world.deliver()
    first = _ticket_of(world, created)
    solved: list[int] = []

    def agent_solves_once(tid: int) -> None:
        if not solved:
            solved.append(tid)
            zd.solve(tid, datetime.now(UTC))

    zd.after_read = agent_solves_once
    joined = queue_handoff(world, "r2", CRASH_AGAIN, "service_issue", "zendesk")
    summary = world.deliver()

    assert summary["failed"] == summary["dead"] == 0 and solved == [first]
    assert zd.tickets[first]["status"] == "open" and len(zd.tickets) == 1
    assert sum(c["body"].count(f"triage-key: {joined}") for c in zd.comments[first]) == 1
    puts = zd.requests("PUT", ok_only=False)
    # The first update was refused whole (the ticket had changed), the second made on a new read.
    assert [r.status for r in puts] == [409, 200]
    assert [r.json["ticket"].get("status") for r in puts] == [None, "open"]
    assert all(r.json["ticket"]["safe_update"] is True for r in puts)


def test_zendesk_fake_keeps_the_status_an_update_does_not_set(world: World) -> None:
    import httpx

    zd = world.zendesk
    auth = (f"{zd.email}/token", zd.token)
    created = httpx.post(
        f"{zd.url}/api/v2/tickets.json", auth=auth, json={"ticket": {"comment": {"body": "x"}}}
    )
    tid = created.json()["ticket"]["id"]
    url = f"{zd.url}/api/v2/tickets/{tid}.json"
    zd.tickets[tid]["status"] = "solved"

    note = httpx.put(url, auth=auth, json={"ticket": {"comment": {"body": "y", "public": False}}})
    assert note.status_code == 200 and note.json()["ticket"]["status"] == "solved"
    reopened = httpx.put(url, auth=auth, json={"ticket": {"status": "open"}})
    assert reopened.json()["ticket"]["status"] == "open"
    back_to_new = httpx.put(url, auth=auth, json={"ticket": {"status": "new"}})
    assert back_to_new.status_code == 422 and zd.tickets[tid]["status"] == "open"
    zd.tickets[tid]["status"] = "closed"
    closed = httpx.put(url, auth=auth, json={"ticket": {"comment": {"body": "z"}}})
    assert closed.status_code == 422 and closed.json()["error"] == "RecordInvalid"
    assert len(zd.comments[tid]) == 2


def _long_ticket_with_a_timed_out_join(world: World) -> tuple[int, str]:
    """A ticket with 150 agent comments, then a join whose answer came after the timeout."""
    from datetime import UTC, datetime

    zd = world.zendesk
    first = queue_handoff(world, "r1", CRASH, "service_issue", "zendesk")
    world.deliver()
    tid = _ticket_of(world, first)
    for n in range(150):
        zd.agent_reply(tid, datetime.now(UTC), body=f"agent note {n}")
    # Zendesk adds the comment; its answer comes after the client's timeout.
    zd.fail_next(0, retry_after=1.0, path=f"/api/v2/tickets/{tid}.json", method="PUT")
    joined = queue_handoff(world, "r2", CRASH_AGAIN, "service_issue", "zendesk")
    assert world.deliver()["failed"] == 1
    assert sum(f"triage-key: {joined}" in c["body"] for c in zd.comments[tid]) == 1
    world.make_due()
    return tid, joined


def test_a_timed_out_join_is_found_on_the_last_page_of_a_long_ticket(world: World) -> None:
    zd = world.zendesk
    tid, joined = _long_ticket_with_a_timed_out_join(world)

    summary = world.deliver()

    assert summary["failed"] == 0 and world.outbox()[joined] == "sent"
    # Found on the second (last) page of 100: not posted again.
    assert len(zd.comments[tid]) == 152
    assert sum(f"triage-key: {joined}" in c["body"] for c in zd.comments[tid]) == 1
    assert len(zd.requests("PUT", f"/api/v2/tickets/{tid}.json", ok_only=False)) == 1
    pages = zd.requests("GET", f"/api/v2/tickets/{tid}/comments.json")
    assert [r.params.get("page[size]") for r in pages] == ["100", "100"]
    assert "page[after]" not in pages[0].params and pages[1].params["page[after]"]


def test_the_comment_lookup_is_bounded_and_says_where_it_stopped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triage.destinations import zendesk as zendesk_mod

    monkeypatch.setattr(zendesk_mod, "MAX_COMMENT_PAGES", 1)
    zd = world.zendesk
    tid, joined = _long_ticket_with_a_timed_out_join(world)

    summary = world.deliver()

    # Not found within the bound: the delivery fails with the reason (here its last attempt, so
    # it is dead-lettered and announced with it), and nothing is posted twice.
    assert summary["dead"] == 1 and world.outbox()[joined] == "dead"
    with duckdb.connect(str(world.db), read_only=True) as con:
        error = con.execute("SELECT last_error FROM outbox WHERE key = ?", [joined]).fetchone()
    assert error is not None and "stopped looking" in str(error[0])
    assert len(zd.requests("PUT", f"/api/v2/tickets/{tid}.json", ok_only=False)) == 1
    assert len(zd.comments[tid]) == 152


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        ("lawyer@boyer.net (Lawyer Boyer)", ("lawyer@boyer.net", "Lawyer Boyer")),  # RSS 2.0
        ("Jane Doe <jane@x.com>", ("jane@x.com", "Jane Doe")),  # CSV
        ('"Doe, Jane" <jane@x.com>', ("jane@x.com", "Doe, Jane")),
        ("mailto:kim@bigco.example", ("kim@bigco.example", None)),
        ("  kim@bigco.example ", ("kim@bigco.example", None)),
        ("@jo", None),
        ("jo@localhost", None),
        ("two@at@x.com", None),
        ("jane doe@x.com", None),
        ("@yusuf_writes@writing.example", None),  # a fediverse handle with its leading @
        ("Jane <jane@x.com> and <j@y.com>", None),
        ("jane@x.c0m", None),
        ("a" * 65 + "@x.com", None),
        ("x@" + ".".join(c * 63 for c in "abcd") + ".com", None),  # over 254 characters
        ("", None),
        (None, None),
    ],
)
def test_an_author_is_an_email_address_only_when_it_holds_one(
    handle: str | None, expected: tuple[str, str | None] | None
) -> None:
    from triage.destinations.requester import email_address

    found = email_address(handle)
    assert (None if found is None else (found.email, found.name)) == expected


def test_fediverse_handles_are_never_taken_for_email_addresses() -> None:
    from dataclasses import replace

    from triage.destinations.requester import author_email
    from triage.models import Author, DeliveryItem

    toot = DeliveryItem(
        id="i1",
        source="fedi",
        text="t",
        label="service_issue",
        scores={},
        author=Author(handle="alice@fosstodon.org"),
        source_type="mastodon_post",
    )
    assert author_email(toot) is None
    assert author_email(replace(toot, source_type="mastodon")) is None
    # A mastodon source configured with another source_type: the connector type decides.
    assert author_email(replace(toot, source_type="social_post"), "mastodon") is None
    plain = replace(toot, source_type="web_form")
    assert author_email(plain, "webhook") is not None


def _queue_authors(world: World, label: str, destination: str, text: str) -> dict[str, str]:
    """One handoff per kind of author string that reaches the destinations: name -> key."""
    data = world.settings()
    # A Mastodon source whose items carry another source_type: its connector type still counts.
    data["sources"].append(
        {
            "name": "fedi",
            "type": "mastodon",
            "base_url": "https://fosstodon.org",
            "hashtags": ["nimbus"],
            "source_type": "social_post",
        }
    )
    world.write(data)
    rss = "lawyer@boyer.net (Lawyer Boyer)"  # feedparser's author, stored as handle and name
    return {
        "rss": queue_handoff(
            world,
            "a-rss",
            text,
            label,
            destination,
            author=rss,
            author_name=rss,
            source_type="blog_comment",
        ),
        "csv": queue_handoff(
            world,
            "a-csv",
            text,
            label,
            destination,
            author="Jane Doe <jane@x.com>",
            author_name=None,
        ),
        "toot": queue_handoff(
            world,
            "a-toot",
            text,
            label,
            destination,
            author="alice@fosstodon.org",
            author_name="Alice",
            source_type="mastodon_post",
        ),
        "fedi": queue_handoff(
            world,
            "a-fedi",
            text,
            label,
            destination,
            author="bob@hachyderm.io",
            author_name="Bob",
            source="fedi",
            source_type="social_post",
        ),
    }


def test_zendesk_requester_is_the_address_in_the_author_or_none(world: World) -> None:
    keys = _queue_authors(world, "service_issue", "zendesk", CRASH)

    summary = world.deliver()

    assert summary["failed"] == summary["dead"] == 0
    assert set(world.outbox().values()) == {"sent"}
    tickets = {t["external_id"]: t for t in world.zendesk.tickets.values()}
    assert tickets[keys["rss"]]["requester"] == {
        "name": "Lawyer Boyer",
        "email": "lawyer@boyer.net",
    }
    assert tickets[keys["csv"]]["requester"] == {"name": "Jane Doe", "email": "jane@x.com"}
    assert tickets[keys["toot"]]["requester"] is None
    assert tickets[keys["fedi"]]["requester"] is None


def test_hubspot_contact_email_is_the_address_in_the_author_or_none(world: World) -> None:
    keys = _queue_authors(world, "sales_lead", "hubspot", "How much is the business plan?")

    summary = world.deliver()

    assert summary["failed"] == summary["dead"] == 0
    assert set(world.outbox().values()) == {"sent"}
    contacts = {c["triage_handle"]: c for c in world.hubspot.objects["contacts"].values()}
    rss = contacts["social:lawyer@boyer.net (lawyer boyer)"]
    assert (rss["email"], rss["firstname"], rss["lastname"]) == (
        "lawyer@boyer.net",
        "Lawyer",
        "Boyer",
    )
    csv = contacts["social:jane doe <jane@x.com>"]
    assert (csv["email"], csv["firstname"], csv["lastname"]) == ("jane@x.com", "Jane", "Doe")
    assert "email" not in contacts["social:alice@fosstodon.org"]
    assert "email" not in contacts["fedi:bob@hachyderm.io"]
    assert len(world.hubspot.objects["notes"]) == len(keys)


def test_fakes_refuse_malformed_requester_and_contact_emails(world: World) -> None:
    import httpx

    zd, hs = world.zendesk, world.hubspot

    def ticket(email: str) -> httpx.Response:
        return httpx.post(
            f"{zd.url}/api/v2/tickets.json",
            auth=(f"{zd.email}/token", zd.token),
            json={"ticket": {"comment": {"body": "x"}, "requester": {"name": "N", "email": email}}},
        )

    def contact(email: str) -> httpx.Response:
        return httpx.post(
            f"{hs.url}/crm/v3/objects/contacts",
            headers={"Authorization": f"Bearer {hs.token}"},
            json={"properties": {"email": email}},
        )

    for bad in ("lawyer@boyer.net (Lawyer Boyer)", "Jane Doe <jane@x.com>", "@a@b.org", "a@b"):
        refused = ticket(bad)
        assert refused.status_code == 422, bad
        body = refused.json()
        assert body["error"] == "RecordInvalid" and body["details"]["requester"][0]["description"]
        crm = contact(bad)
        assert crm.status_code == 400 and crm.json()["category"] == "VALIDATION_ERROR", bad
        assert '"error": "INVALID_EMAIL"' in crm.json()["message"]
    # An API cannot tell a fediverse handle from an address: that is our code's job.
    assert ticket("alice@fosstodon.org").status_code == 201
    assert contact("alice@fosstodon.org").status_code == 201
    assert len(zd.tickets) == len(hs.objects["contacts"]) == 1
