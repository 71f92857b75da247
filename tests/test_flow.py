"""End to end: the real triage flow over the demo feeds, a real DuckDB file, the shipped model, fake Slack."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from classifiers.model import Classifier
from flows.triage import triage
from tests.fakes.slack import FakeSlack
from triage import store as store_mod
from triage.cli import app
from triage.privacy import language

# Every valid record in the demo files: triage/demo/expected_labels.csv (233) and the recurring
# customers of expected_customer_labels.csv (158).
DEMO_VALID_ITEMS = 233 + 158
DEMO_MALFORMED = 4


def _keys_posted(fake: FakeSlack) -> Counter[str]:
    return Counter(
        (m.get("metadata") or {}).get("event_payload", {}).get("key") for m in fake.posted()
    )


def test_demo_run_stores_classifies_routes_and_posts(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    summary = triage(config_path=str(demo_config), database=str(db_path))

    assert summary["failed_sources"] == {}
    assert sum(s["stored"] for s in summary["sources"].values()) == DEMO_VALID_ITEMS
    # Languages were detected while storing, and the model was let go before classifying.
    assert language._detector.cache_info().currsize == 0 and language._MODEL is None
    assert sum(s["quarantined"] for s in summary["sources"].values()) == DEMO_MALFORMED
    assert summary["classify"]["classified"] == DEMO_VALID_ITEMS
    assert set(summary["classify"]["by_label"]) == {
        "kudos",
        "sales_lead",
        "feature_request",
        "service_issue",
        "other",
    }
    deliver = summary["deliver"]
    assert deliver["previewed"] == 0 and deliver["failed"] == 0 and deliver["dead"] == 0
    assert deliver["sent"] == summary["route"]["enqueued"] > 0

    # Every post carried the bot token and a channel, and each delivery key appears exactly once.
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == deliver["sent"]
    assert all(c.token == fake_slack.token and c.args.get("channel") for c in posts)
    keys = _keys_posted(fake_slack)
    assert max(keys.values()) == 1 and len(keys) == deliver["sent"]

    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM items").fetchone() == (DEMO_VALID_ITEMS,)
        reasons = [
            r[0] for r in con.execute("SELECT reason FROM quarantine ORDER BY reason").fetchall()
        ]
        sent = con.execute("SELECT count(*) FROM outbox WHERE state = 'sent'").fetchone()
        # `other` is kept and audited but never handed to anybody.
        other_deliveries = con.execute(
            "SELECT count(*) FROM outbox o JOIN predictions p ON p.item_id = o.item_id "
            "WHERE p.label = 'other'"
        ).fetchone()
    assert len(reasons) == DEMO_MALFORMED
    assert any("invalid JSON" in r for r in reasons)
    assert any("text is missing" in r for r in reasons)
    assert any("id is missing" in r for r in reasons)
    assert any("not-a-date" in r for r in reasons)
    assert sent == (deliver["sent"],)
    assert other_deliveries == (0,)


def test_second_run_creates_nothing_and_posts_nothing(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    first = triage(config_path=str(demo_config), database=str(db_path))
    posts_after_first = len(fake_slack.calls_to("chat.postMessage"))

    second = triage(config_path=str(demo_config), database=str(db_path))

    assert sum(s["stored"] for s in second["sources"].values()) == 0
    assert second["classify"]["classified"] == 0
    assert second["route"]["enqueued"] == 0
    assert second["deliver"]["sent"] == 0
    assert (
        len(fake_slack.calls_to("chat.postMessage"))
        == posts_after_first
        == first["deliver"]["sent"]
    )

    # Forgetting every cursor makes the connectors re-read everything: ids still absorb it.
    with duckdb.connect(str(db_path)) as con:
        con.execute("DELETE FROM connector_state")
    third = triage(config_path=str(demo_config), database=str(db_path))
    assert sum(s["fetched"] for s in third["sources"].values()) > 0
    assert sum(s["stored"] for s in third["sources"].values()) == 0
    assert len(fake_slack.calls_to("chat.postMessage")) == posts_after_first


def test_runs_look_for_pending_work_above_floors_that_follow_the_store(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    triage(config_path=str(demo_config), database=str(db_path))

    def floors() -> dict[str, int]:
        with duckdb.connect(str(db_path)) as con:
            rows = con.execute("SELECT stage, seq FROM stage_floors").fetchall()
        return {str(stage): int(seq) for stage, seq in rows}

    with duckdb.connect(str(db_path)) as con:
        bottom, top = con.execute("SELECT min(seq), max(seq) FROM items").fetchone() or (0, 0)
    # Everything was stored just now: no floor covers items that recent.
    assert all(seq < bottom for seq in floors().values())
    with duckdb.connect(str(db_path)) as con:
        con.execute("UPDATE items SET stored_at = now() - INTERVAL 2 HOURS")
    triage(config_path=str(demo_config), database=str(db_path))
    assert floors() == {"classify": top, "route": top}

    # A new mention lands above both floors and goes all the way through.
    record = {
        "id": "tw-floor-1",
        "text": "@nimbusnotes sync has been failing on my phone since this morning, help",
        "author": "@floor_tester",
        "created_at": "2026-11-02T09:00:00Z",
    }
    with (demo_config.parent / "drops" / "social-mentions.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    summary = triage(config_path=str(demo_config), database=str(db_path))
    assert summary["classify"]["classified"] == 1
    assert summary["route"]["routed"] == 1
    assert summary["deliver"]["sent"] >= 1
    with duckdb.connect(str(db_path)) as con:
        unrouted = con.execute(
            "SELECT count(*) FROM items i ANTI JOIN routes r ON r.item_id = i.id"
        ).fetchone()
    assert unrouted == (0,)


def test_rate_limited_slack_is_waited_out_without_duplicates(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1, times=2)
    fake_slack.fail_next("chat.postMessage", status=503, times=1)

    summary = triage(config_path=str(demo_config), database=str(db_path))

    statuses = Counter(c.status for c in fake_slack.calls_to("chat.postMessage", ok_only=False))
    assert statuses[429] == 2 and statuses[503] == 1
    assert summary["deliver"]["failed"] == 0
    assert max(_keys_posted(fake_slack).values()) == 1
    assert len(fake_slack.posted()) == summary["route"]["enqueued"]


def test_crash_between_send_and_record_is_reconciled_not_resent(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mark_sent = store_mod.Store.mark_sent
    calls = {"n": 0}

    def crash_on_fifth(self: store_mod.Store, key: str, ref: str | None) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            # Slack has accepted the message, the process dies before recording it.
            raise SystemExit("simulated crash")
        real_mark_sent(self, key, ref)

    monkeypatch.setattr(store_mod.Store, "mark_sent", crash_on_fifth)
    with pytest.raises(BaseException):  # noqa: B017 - the flow dies with whatever the crash raised
        triage(config_path=str(demo_config), database=str(db_path))
    assert len(fake_slack.posted()) == 5
    monkeypatch.setattr(store_mod.Store, "mark_sent", real_mark_sent)

    summary = triage(config_path=str(demo_config), database=str(db_path))

    assert summary["deliver"]["reconciled"] == 1
    keys = _keys_posted(fake_slack)
    assert max(keys.values()) == 1
    with duckdb.connect(str(db_path), read_only=True) as con:
        states = dict(con.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    assert states == {"sent": len(keys)}


def test_untrusted_text_reaches_slack_escaped_and_inert(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    hostile = (
        "<!channel> <@U123> your app crashes on login every time & I lost my notes, "
        "see <https://evil.example|click> — please fix the crash"
    )
    drop = demo_config.parent / "drops" / "hostile.jsonl"
    drop.write_text(
        json.dumps(
            {
                "id": "evil-1",
                "text": hostile,
                "created_at": "2026-11-20T10:00:00Z",
                "author": "<!here>",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    cfg = demo_config.read_text(encoding="utf-8").replace(
        "sources:\n",
        "sources:\n  - name: hostile\n    type: file\n    path: drops/hostile.jsonl\n",
        1,
    )
    demo_config.write_text(cfg, encoding="utf-8")

    triage(config_path=str(demo_config), database=str(db_path))

    mine = [
        m
        for m in fake_slack.posted()
        if (m.get("metadata") or {}).get("event_payload", {}).get("item_id")
        and "evil.example" in json.dumps(m)
    ]
    assert mine, "the hostile service issue was not delivered"
    for msg in mine:
        raw = json.dumps(msg["blocks"]) + msg["text"]
        for live in ("<!channel>", "<@U123>", "<https://evil.example|click>", "<!here>"):
            assert live not in raw
        text_blocks = [b["text"] for b in msg["blocks"] if b.get("text")]
        quoted = next(t for t in text_blocks if "lost my notes" in t["text"])
        assert "&lt;!channel&gt;" in quoted["text"]
        assert "&lt;@U123&gt;" in quoted["text"]
        assert "&lt;https://evil.example|click&gt;" in quoted["text"]
        assert "&amp; I lost" in quoted["text"]
        assert quoted["verbatim"] is True  # no auto-linking of URLs or channel names
        assert fake_slack.calls_to("chat.postMessage")[0].args["unfurl_links"] is False


def test_status_json_matches_the_store(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    triage(config_path=str(demo_config), database=str(db_path))

    result = CliRunner().invoke(
        app, ["status", "--json", "--config", str(demo_config), "--db", str(db_path)]
    )

    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    # Expected counts computed here, not with the store's queries: from the demo's inputs, the
    # classifier over the stored texts (each source's adapted to its label mix, as one run of
    # 391 items classifies them in one batch), the demo's routing rules and the fake's posts.
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute("SELECT text, source FROM items").fetchall()
    texts = [t for t, _ in rows]
    preds = Classifier.load().predict(texts, streams=[s for _, s in rows])
    rules = {"service_issue": "support", "sales_lead": "sales", "feature_request": "product"}
    rules |= {"kudos": "marketing", "other": "none"}
    security = ("hacked", "phishing", "data breach")  # the demo's first rule, before the labels
    departments = Counter(
        "support" if any(k in t.lower() for k in security) else rules[p.label]
        for t, p in zip(texts, preds, strict=True)
    )
    assert len(texts) == status["items_total"] == DEMO_VALID_ITEMS
    assert status["by_label"] == dict(Counter(p.label for p in preds))
    assert status["by_department"] == dict(departments)
    assert status["needs_review"] == sum(p.needs_review for p in preds) > 0
    assert status["quarantined"] == DEMO_MALFORMED
    # Every delivery reached the fake Slack once; no other state holds any.
    deliveries = {state: n for state, n in status["deliveries"].items() if n}
    assert deliveries == {"sent": len(fake_slack.posted())} and deliveries["sent"] > 0


def test_without_a_token_messages_become_previews(
    demo_config: Path, db_path: Path, tmp_path: Path
) -> None:
    summary = triage(config_path=str(demo_config), database=str(db_path))

    assert summary["deliver"]["sent"] == 0
    assert summary["deliver"]["previewed"] == summary["route"]["enqueued"] > 0
    previews = list((tmp_path / "outbox").rglob("*.json"))
    assert len(previews) == summary["route"]["enqueued"]
    body = json.loads(previews[0].read_text(encoding="utf-8"))
    assert body["channel"].startswith("#") and body["blocks"]


def _with_failing_source(demo_config: Path) -> None:
    # Credentials for this Reddit app are missing: the source fails after its retries.
    text = demo_config.read_text(encoding="utf-8").replace(
        "sources:\n",
        "sources:\n  - {name: reddit-brand, type: reddit, queries: [nimbus], "
        "auth_url: 'http://127.0.0.1:9', base_url: 'http://127.0.0.1:9'}\n",
        1,
    )
    demo_config.write_text(text, encoding="utf-8")


def test_a_failed_source_fails_the_run_after_the_others_are_done(
    demo_config: Path, db_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.triage import SourcesFailed, run_triage

    _with_failing_source(demo_config)

    state = triage(config_path=str(demo_config), database=str(db_path), return_state=True)

    assert state.is_failed()
    assert state.message is not None
    assert state.message.startswith("1 of 8 sources failed: reddit-brand (ConnectorError: ")
    assert "REDDIT_CLIENT_ID" in state.message
    failed = state.result(raise_on_failure=False)
    assert isinstance(failed, SourcesFailed)
    summary = failed.summary
    assert set(summary["failed_sources"]) == {"reddit-brand"}
    # Everything else ran: the other sources, classify, route and deliver.
    assert sum(s["stored"] for s in summary["sources"].values()) == DEMO_VALID_ITEMS
    assert summary["classify"]["classified"] == DEMO_VALID_ITEMS
    assert summary["deliver"]["previewed"] == summary["route"]["enqueued"] > 0
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    by_name = {r.name: r for r in runs}
    assert by_name["fetch-and-store[reddit-brand]"].state.is_failed()
    assert by_name["fetch-and-store[social]"].state.is_completed()
    assert {"classify", "route", "deliver", "apply-review-decisions"} <= set(by_name)

    # Called directly, the flow raises with the summary; run_triage hands the summary back.
    with pytest.raises(SourcesFailed, match="reddit-brand") as info:
        triage(config_path=str(demo_config), database=str(db_path))
    assert info.value.summary["failed_sources"]
    assert set(
        run_triage(config_path=str(demo_config), database=str(db_path))["failed_sources"]
    ) == {"reddit-brand"}


def test_prefect_variables_are_read_when_each_run_starts(
    demo_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.variables import Variable

    first, second, by_env = (tmp_path / f"{n}.duckdb" for n in ("first", "second", "env"))
    Variable.set("triage_config", str(demo_config), overwrite=True)
    Variable.set("triage_db", str(first), overwrite=True)
    try:
        assert triage(deliver=False)["database"] == str(first)
        Variable.set("triage_db", str(second), overwrite=True)
        assert triage(deliver=False)["database"] == str(second)
        # The environment wins over the variable, and a parameter over both.
        monkeypatch.setenv("TRIAGE_DB", str(by_env))
        assert triage(deliver=False)["database"] == str(by_env)
        assert triage(database=str(first), deliver=False)["database"] == str(first)
    finally:
        Variable.unset("triage_config")
        Variable.unset("triage_db")
    assert first.exists() and second.exists() and by_env.exists()


def test_a_store_of_a_newer_schema_stops_the_run_before_anything_is_written(
    demo_config: Path, db_path: Path
) -> None:
    from triage.store import SCHEMA_VERSION, StoreTooNew

    with duckdb.connect(str(db_path)) as con:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR)")
        con.execute("INSERT INTO schema_migrations VALUES (?, 'future')", [SCHEMA_VERSION + 1])
    before = db_path.read_bytes()

    with pytest.raises(StoreTooNew, match="newer feedback-triage"):
        triage(config_path=str(demo_config), database=str(db_path))

    assert db_path.read_bytes() == before
