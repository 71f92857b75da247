"""Channel names and conversation IDs (issue 12): against a fake Slack that takes IDs where Slack does.

Slack's ``chat.postMessage`` accepts a channel name; ``conversations.history``,
``conversations.replies`` and ``chat.update`` take a conversation ID and answer
``channel_not_found`` for a name. The demo configuration names its channels, so the pipeline must
resolve them (``conversations.list``, paged) before it threads review batches or reconciles a
delivery a crash left in ``sending``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from flows import triage as flow_mod
from flows.settings import load_config
from tests.fakes.slack import FakeSlack
from triage import store as store_mod
from triage.slack.channels import forget_channels

BATCH_THRESHOLD = 20


@pytest.fixture(autouse=True)
def _fresh_channel_cache() -> None:
    forget_channels()


def run_stages(config_path: Path, db: Path) -> dict[str, Any]:
    """One pass of the pipeline's own stage functions (no Prefect): the delivery summary."""
    cfg = load_config(config_path, database=str(db))
    for source in cfg.sources:
        flow_mod.ingest(cfg, source)
    flow_mod.classify_pending(cfg)
    flow_mod.route_pending(cfg)
    return flow_mod.deliver_pending(cfg)


def with_batches(config_path: Path) -> None:
    text = config_path.read_text(encoding="utf-8")
    text = text.replace("review:\n", f"review:\n  batch_threshold: {BATCH_THRESHOLD}\n", 1)
    config_path.write_text(text, encoding="utf-8")


def set_channel(config_path: Path, destination: str, channel: str) -> None:
    lines = config_path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        if line.strip().startswith(f"{destination}:") and "channel:" in line:
            start = line.index('channel: "') + len('channel: "')
            end = line.index('"', start)
            line = line[:start] + channel + line[end:]
        out.append(line)
    config_path.write_text("\n".join(out) + "\n", encoding="utf-8")


def outbox(db: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(db), read_only=True) as con:
        cur = con.execute("SELECT key, destination, kind, state, last_error FROM outbox")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def keys_posted(fake: FakeSlack) -> Counter[str]:
    return Counter(
        (m.get("metadata") or {}).get("event_payload", {}).get("key") for m in fake.posted()
    )


# ---------------------------------------------------------------------- the fake is as strict
def test_the_fake_takes_names_only_where_slack_does(fake_slack: FakeSlack) -> None:
    client = WebClient(token=fake_slack.token, base_url=fake_slack.url)
    posted = client.chat_postMessage(channel="#feedback-review", text="hello")
    assert posted["channel"] == "C0REVIEW"  # Slack answers with the ID

    for call in (
        lambda: client.conversations_history(channel="#feedback-review"),
        lambda: client.conversations_history(channel="feedback-review"),
        lambda: client.conversations_replies(channel="#feedback-review", ts=posted["ts"]),
        lambda: client.chat_update(channel="#feedback-review", ts=posted["ts"], text="x"),
    ):
        with pytest.raises(SlackApiError) as err:
            call()
        assert err.value.response["error"] == "channel_not_found"
    assert client.conversations_history(channel="C0REVIEW")["messages"]


def test_the_fake_pages_conversations_list_like_slack(fake_slack: FakeSlack) -> None:
    client = WebClient(token=fake_slack.token, base_url=fake_slack.url)
    fake_slack.list_page_cap = 2
    fake_slack.add_channel("#private-review", "G0PRIVATE", private=True)

    with pytest.raises(SlackApiError) as err:
        client.conversations_list(limit=1001)
    assert err.value.response["error"] == "invalid_limit"
    with pytest.raises(SlackApiError) as err:
        client.conversations_list(cursor="not-a-cursor")
    assert err.value.response["error"] == "invalid_cursor"
    public = client.conversations_list(limit=1000)  # default types: public channels only
    assert len(public["channels"]) == 2 and public["response_metadata"]["next_cursor"]
    fake_slack.scopes.discard("groups:read")
    with pytest.raises(SlackApiError) as err:
        client.conversations_list(types="public_channel,private_channel")
    assert err.value.response["error"] == "missing_scope"
    assert err.value.response["needed"] == "groups:read"


# ---------------------------------------------------------------------- the pipeline
def test_names_are_resolved_once_through_every_page(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    fake_slack.list_page_cap = 2  # fewer than asked for, before the end: follow the cursor
    for i in range(7):
        fake_slack.add_channel(f"#other-{i}", f"C0OTHER{i}")
    channels = len(set(fake_slack.channels.values()))

    summary = run_stages(demo_config, db_path)

    assert summary["failed"] == summary["dead"] == 0 and summary["sent"] > 0
    lists = fake_slack.calls_to("conversations.list")
    # One listing for all five destinations, every page of it, private channels included.
    assert len(lists) == math.ceil(channels / 2)
    assert all(c.args["types"] == "public_channel,private_channel" for c in lists)
    # Every call that takes an ID got one.
    for method in ("conversations.history", "conversations.replies", "chat.update"):
        assert all(c.args["channel"].startswith("C0") for c in fake_slack.calls_to(method))


def test_batched_review_crashed_in_sending_is_reconciled_against_ids(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_batches(demo_config)
    real_mark_sent = store_mod.Store.mark_sent
    calls = {"n": 0}

    def crash_on_30th(self: store_mod.Store, key: str, ref: str | None) -> None:
        calls["n"] += 1
        if calls["n"] == 30:
            raise SystemExit("simulated crash after Slack accepted the reply")
        real_mark_sent(self, key, ref)

    monkeypatch.setattr(store_mod.Store, "mark_sent", crash_on_30th)
    with pytest.raises(SystemExit):
        run_stages(demo_config, db_path)
    monkeypatch.setattr(store_mod.Store, "mark_sent", real_mark_sent)
    assert [r["state"] for r in outbox(db_path)].count("sending") == 1

    summary = run_stages(demo_config, db_path)

    assert summary["reconciled"] == 1 and summary["failed"] == summary["dead"] == 0
    assert {r["state"] for r in outbox(db_path)} == {"sent"}
    assert max(keys_posted(fake_slack).values()) == 1  # nothing posted twice
    review = fake_slack.messages["C0REVIEW"]
    parents = [m for m in review if (m.get("metadata") or {}).get("event_type") == "triage_batch"]
    assert len(parents) == 1  # the resumed run threads under the same parent
    replies = [m for m in review if m.get("thread_ts") == parents[0]["ts"]]
    assert len(replies) == sum(1 for r in outbox(db_path) if r["kind"] == "review")
    # The reconciliation read the thread by ID (a name would have been channel_not_found).
    assert fake_slack.calls_to("conversations.replies")
    assert not [
        c
        for c in fake_slack.calls
        if c.method.startswith("conversations.")
        and c.status == 200
        and str(c.args.get("channel", "C")).startswith("#")
    ]


def test_an_unknown_channel_is_dead_lettered_with_a_reason(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    set_channel(demo_config, "support-channel", "#no-such-channel")

    summary = run_stages(demo_config, db_path)

    rows = [r for r in outbox(db_path) if r["destination"] == "support-channel"]
    assert rows and {r["state"] for r in rows} == {"dead"}  # permanent: not retried 5 times
    assert summary["dead"] == len(rows)
    error = rows[0]["last_error"]
    assert "'#no-such-channel' not found" in error and "/invite" in error
    # The other destinations were not affected.
    assert {r["state"] for r in outbox(db_path) if r["destination"] != "support-channel"} == {"sent"}


def test_a_token_without_read_scopes_says_which_scope(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    fake_slack.scopes.discard("groups:read")

    run_stages(demo_config, db_path)

    errors = {r["last_error"] for r in outbox(db_path)}
    assert {r["state"] for r in outbox(db_path)} == {"dead"}
    assert all("groups:read" in e and "triage slack manifest" in e for e in errors)
    assert fake_slack.posted() == []


def test_configured_ids_are_used_without_a_lookup(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    for dest, channel_id in (
        ("review-channel", "C0REVIEW"),
        ("support-channel", "C0SUPPORT"),
        ("sales-channel", "C0SALES"),
        ("product-channel", "C0PRODUCT"),
        ("marketing-channel", "C0MARKETING"),
    ):
        set_channel(demo_config, dest, channel_id)
    fake_slack.scopes -= {"channels:read", "groups:read"}

    summary = run_stages(demo_config, db_path)

    assert summary["sent"] > 0 and summary["dead"] == 0
    assert fake_slack.calls_to("conversations.list", ok_only=False) == []


def test_a_private_review_channel_is_found_with_groups_read(
    fake_slack: FakeSlack, demo_config: Path, db_path: Path
) -> None:
    fake_slack.add_channel("#private-review", "G0PRIVATE", private=True)
    set_channel(demo_config, "review-channel", "#private-review")
    with_batches(demo_config)

    summary = run_stages(demo_config, db_path)

    assert summary["dead"] == 0
    assert fake_slack.messages["G0PRIVATE"]
    posted = json.dumps(fake_slack.messages["G0PRIVATE"][0]["blocks"])
    assert "new items to review" in posted
