"""Slack's Block Kit limits (issue 12): every text fits after escaping and quoting, and the fake
refuses what Slack refuses, with ``invalid_blocks``.

The messages are posted with the real ``slack_sdk`` client to the local fake, which validates
them against the limits in Slack's Block Kit reference (not against what our code sends).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import text_objects
from triage.destinations.alerts import alert_text
from triage.models import DeliveryItem
from triage.slack.messages import (
    batch_parent_message,
    decided_message,
    handoff_message,
    queue_blocks,
    quote,
    review_message,
)

LONG_TEXTS = {
    "love-it-lines": "love it\n" * 400,
    "1400-short-lines": "\n".join(["ok"] * 1400),
    "u2028-separators": "\u2028".join(["hey"] * 1000),
    "mixed-separators": "a\r\nb\rc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\u2029j " * 300,
    "all-ampersands": "&" * 3000,
    "mentions": "<!channel> <@U123> <https://evil.example|x> & " * 300,
    "emoji": "🔥 great app 👍\n" * 500,
    "blank-lines": "\n" * 5000,
}
_BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def item_row(text: str, **extra: Any) -> dict[str, Any]:
    base = {
        "id": "0123456789abcdef0123",
        "source": "social",
        "url": "https://social.example/1",
        "author_handle": "@fan",
        "text": text,
        "created_at": datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
        "label": "kudos",
        "labels": ["kudos"],
        "score": 0.9,
        "scores": {"kudos": 0.9},
        "needs_review": False,
        "department": "marketing",
    }
    return {**base, **extra}



@pytest.fixture
def client(fake_slack: FakeSlack) -> WebClient:
    return WebClient(token=fake_slack.token, base_url=fake_slack.url)


@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_quoted_text_fits_3000_after_escaping(name: str) -> None:
    quoted = quote(LONG_TEXTS[name])

    assert 0 < len(quoted) <= 3000
    assert quoted.endswith("…[truncated]")
    # Every line is quoted: no separator left that Slack could show as an unquoted line.
    assert all(line.startswith(">") for line in quoted.split("\n"))
    assert not re.search("[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]", quoted)
    assert not _BROKEN_ENTITY.search(quoted) and "<" not in quoted


def test_quote_at_the_limit_is_not_cut() -> None:
    exact = quote("x" * 2998)  # "> " + 2,998 characters = 3,000
    assert exact == "> " + "x" * 2998
    over = quote("x" * 2999)
    assert len(over) <= 3000 and over.endswith("…[truncated]")
    # Escaping counts: 600 ampersands are 3,000 characters once escaped.
    assert len(quote("&" * 599)) == 2 + 5 * 599 and "truncated" not in quote("&" * 599)
    assert "truncated" in quote("&" * 600)


@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_every_message_with_long_text_is_accepted_by_slack(client: WebClient, name: str) -> None:
    hostile_row = item_row(
        LONG_TEXTS[name],
        source="&" * 5000,
        author_handle="&<>" * 3000,
        review_reason="<!here>" * 1000,
        needs_review=True,
        labels=["kudos", "feature_request"],
    )
    hostile = DeliveryItem.from_row(hostile_row)
    decision = {
        "action": "relabel",
        "user_id": "U0ALICE",
        "user_name": "&" * 500,
        "decided_at": datetime.now(UTC),
        "after_label": "feature_request",
        "after_department": "&" * 500,
    }
    messages = [
        review_message(hostile),
        handoff_message(hostile, "<" * 400),
        decided_message(hostile, decision),
        batch_parent_message(
            {
                "items": 3,
                "needs_review": 1,
                "by_label": {"&" * 2000: 1},
                "by_department": {"<" * 2000: 1},
            }
        ),
    ]
    for msg in messages:
        texts = list(text_objects(msg["blocks"]))
        assert texts and all(0 < len(t) <= 3000 for t in texts)
        assert len(msg["text"]) <= 3000
        client.chat_postMessage(channel="C0REVIEW", text=msg["text"], blocks=msg["blocks"])
    row = {**hostile_row, "routed_at": datetime.now(UTC) - timedelta(days=2)}
    queue = {
        "total": 25,
        "groups": [
            {"label": "kudos", "department": "<" * 3000, "count": 25, "oldest": row["routed_at"]}
        ]
        * 40,
        "oldest": [row] * 25,
    }
    home = queue_blocks(queue, now=datetime.now(UTC), overdue_after=timedelta(hours=24))
    client.views_publish(user_id="U0ALICE", view={"type": "home", "blocks": home})


def test_a_dead_letter_alert_with_a_huge_error_stays_plain_and_bounded(client: WebClient) -> None:
    text = alert_text(
        {
            "kind": "handoff",
            "destination": "<!channel>",
            "attempts": 5,
            "last_error": "<!here> " * 10_000,
            "item_id": "0123456789abcdef0123",
            "key": "k" * 24,
        }
    )
    assert len(text) < 2000 and "<!" not in text
    client.chat_postMessage(channel="C0REVIEW", text=text)


# --------------------------------------------------------------------- the fake is as strict
def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(**kw: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": "a", **kw}


def _select(options: int, text: str = "opt", value: str = "v") -> dict[str, Any]:
    return {
        "type": "static_select",
        "action_id": "s",
        "placeholder": {"type": "plain_text", "text": "Pick"},
        "options": [
            {"text": {"type": "plain_text", "text": text}, "value": f"{value}{i}"}
            for i in range(options)
        ],
    }


BAD_BLOCKS: dict[str, list[dict[str, Any]]] = {
    "section-3001": [_section("x" * 3001)],
    "section-empty": [_section("")],
    "header-151": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}],
    "header-mrkdwn": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}],
    "context-3001": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x" * 3001}]}],
    "context-11-elements": [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * 11}
    ],
    "51-blocks": [_section("x")] * 51,
    "fields-11": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}],
    "field-2001": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}],
    "button-text-76": [
        {"type": "actions", "elements": [_button(text={"type": "plain_text", "text": "x" * 76})]}
    ],
    "button-value-2001": [{"type": "actions", "elements": [_button(value="x" * 2001)]}],
    "button-url-3001": [{"type": "actions", "elements": [_button(url="https://" + "x" * 3000)]}],
    "button-style": [{"type": "actions", "elements": [_button(style="loud")]}],
    "action-id-256": [{"type": "actions", "elements": [_button(action_id="a" * 256)]}],
    "duplicate-action-id": [{"type": "actions", "elements": [_button(), _button()]}],
    "26-elements": [
        {"type": "actions", "elements": [_button(action_id=f"a{i}") for i in range(26)]}
    ],
    "101-options": [{"type": "actions", "elements": [_select(101)]}],
    "option-text-76": [{"type": "actions", "elements": [_select(1, text="x" * 76)]}],
    "option-value-151": [{"type": "actions", "elements": [_select(1, value="x" * 151)]}],
    "block-id-256": [{**_section("x"), "block_id": "b" * 256}],
    "duplicate-block-id": [{**_section("x"), "block_id": "b"}, {**_section("y"), "block_id": "b"}],
    "unknown-block": [{"type": "carousel"}],
}


@pytest.mark.parametrize("case", sorted(BAD_BLOCKS))
def test_the_fake_refuses_blocks_that_break_block_kit_limits(client: WebClient, case: str) -> None:
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0REVIEW", text="fallback", blocks=BAD_BLOCKS[case])
    assert err.value.response["error"] == "invalid_blocks"
    assert err.value.response["errors"]


def test_the_fake_accepts_blocks_right_at_the_limits(client: WebClient) -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        _section("x" * 3000),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c" * 3000}] * 10},
        {"type": "actions", "elements": [_select(100, text="o" * 70)]},
    ] + [_section("s")] * 46
    assert len(blocks) == 50
    client.chat_postMessage(channel="C0REVIEW", text="t" * 40_000, blocks=blocks)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0REVIEW", text="t" * 40_001)
    assert err.value.response["error"] == "msg_too_long"


def test_an_author_cannot_write_lines_of_its_own_into_a_review_message(client: WebClient) -> None:
    # Escaping stops mentions and links but not line breaks: a handle with newlines forged a
    # "Confirmed by alice" line under an undecided item, and a block quote (an escaped '>' at the
    # start of a line still quotes). Bidi overrides reversed the rest of the line; NUL and lone
    # surrogates went to Slack as they were.
    forged = ":ballot_box_with_check: Confirmed by alice at 2026-11-20 10:05 UTC: *Other / spam*"
    handle = f"fan\n{forged}\r\n> Reviewer note: no action needed\u2028\u202egnp.exe\x00\ud800"
    item = DeliveryItem.from_row(item_row("Love it", author_handle=handle, source="web\nform"))
    msg = review_message(item)
    (context,) = [b for b in msg["blocks"] if b["type"] == "context"]
    line = context["elements"][0]["text"]
    assert "\n" not in line and "\u2028" not in line and "\u202e" not in line
    assert "\x00" not in line and "\ud800" not in line
    assert line.startswith("web form · fan :ballot_box_with_check: Confirmed by alice")
    client.chat_postMessage(channel="C0REVIEW", text=msg["text"], blocks=msg["blocks"])


@pytest.mark.parametrize(
    "url",
    ["https://evil.example/a b", "https://evil.example/\nnext", "https://x.example/\x7f"],
)
def test_a_source_url_slack_would_refuse_gets_no_button_not_a_dead_letter(
    client: WebClient, url: str
) -> None:
    # Slack refuses a button whose URL it cannot read (invalid_blocks, a permanent error): the
    # review message went to the dead letters and the item was never reviewed.
    msg = review_message(DeliveryItem.from_row(item_row("Love it", url=url)))
    buttons = [e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [e.get("url") for e in buttons if "url" in e] == []
    client.chat_postMessage(channel="C0REVIEW", text=msg["text"], blocks=msg["blocks"])
    ok = review_message(DeliveryItem.from_row(item_row("Love it")))
    client.chat_postMessage(channel="C0REVIEW", text=ok["text"], blocks=ok["blocks"])
    bad = {**ok, "blocks": json_replace(ok["blocks"], "https://social.example/1", url)}
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        client.chat_postMessage(channel="C0REVIEW", text=bad["text"], blocks=bad["blocks"])


def json_replace(blocks: list[dict[str, Any]], old: str, new: str) -> list[dict[str, Any]]:
    """The blocks with one string replaced wherever it is a whole value."""
    replaced: list[dict[str, Any]] = json.loads(
        json.dumps(blocks).replace(json.dumps(old), json.dumps(new))
    )
    return replaced
