"""Block Kit review messages, built with ``slack_sdk.models.blocks``, with untrusted text made inert."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    Option,
    SectionBlock,
    StaticSelectElement,
)

from triage.limits import SLACK_FALLBACK_TEXT, SLACK_TEXT, clip, fit
from triage.models import DEPARTMENTS, LABELS, DeliveryItem

# Action ids are shared by the message builder and the interactivity handlers.
ACTION_CONFIRM = "triage_confirm"
ACTION_RELABEL = "triage_relabel"
ACTION_REROUTE = "triage_reroute"
ACTION_SPAM = "triage_spam"
ACTION_OPEN = "triage_open_source"

# Every character Python's str.splitlines() breaks on: each must start a new quoted line, or a
# "\u2028"-separated text would be quoted once and shown unquoted below its first line.
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
LABEL_TITLES = {
    "kudos": "Kudos",
    "sales_lead": "Sales lead",
    "feature_request": "Feature request",
    "service_issue": "Service issue",
    "other": "Other / spam",
}


def escape(text: str) -> str:
    """Escape the three characters Slack treats as control characters in message text.

    With ``&``, ``<`` and ``>`` escaped, ``<!channel>``, ``<@U123>`` and ``<https://x|click>`` are shown
    as typed and never become mentions or links.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Characters that make no sense in one line of a message and can mislead a reader: controls
# (NUL, escape), lone surrogates, and the bidirectional overrides and isolates, which reverse how
# the rest of the line reads.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """Untrusted text as one plain line: whitespace runs, line breaks included, become one space.

    An author name or handle with line breaks wrote lines of its own into a message's context
    ("Confirmed by alice …" under an undecided item, a block quote); escaping alone cannot stop
    that, since an escaped ``>`` at the start of a line still quotes it.
    """
    return " ".join(_UNPRINTABLE.sub(" ", text).split())


def inert(text: str, limit: int) -> str:
    """Untrusted text for one line of mrkdwn: one line (:func:`one_line`), escaped, then cut."""
    return fit(one_line(text), limit, escape)


def quote(text: str, limit: int = SLACK_TEXT) -> str:
    """Escape, block-quote and bound untrusted text for a mrkdwn field.

    Every line gets the ``"> "`` prefix, and the result (prefixes and entities included) is at most
    ``limit`` characters: escaping, quoting and cutting happen in that order.
    """
    lines = _LINE_BREAKS.split(escape(text))
    return clip("\n".join("> " + line for line in lines), limit)


def _inert(text: str) -> MarkdownTextObject:
    # verbatim: Slack must not auto-link URLs or channel names inside text we did not write.
    return MarkdownTextObject(text=text, verbatim=True)


def plain_url(url: str | None, limit: int = 3000) -> str | None:
    """The URL if it is an http(s) link of at most ``limit`` characters with no spaces or
    control characters, else None.

    Slack refuses a button whose URL it cannot parse (``invalid_blocks``, which would send a
    review message to the dead letters), and a space or line break in a link is an edit made to
    mislead, not an address.
    """
    if not url or len(url) > limit or not url.lower().startswith(("https://", "http://")):
        return None
    if any(c.isspace() for c in url) or _UNPRINTABLE.search(url):
        return None
    return url


def review_message(item: DeliveryItem) -> dict[str, Any]:
    """Build the chat.postMessage arguments (text and blocks) for one routed item.

    Args:
        item: From :meth:`Store.delivery_context`.

    Returns:
        ``{"text": ..., "blocks": [...]}`` ready for ``chat_postMessage``.
    """
    label = item.label
    dept = item.department or "nobody"
    flag = ":warning: *needs review*" if item.needs_review else ":white_check_mark: confident"
    secondary = [lab for lab in item.labels if lab != label]
    title = LABEL_TITLES.get(label) or escape(str(label))
    headline = f"*{title}* {item.score:.0%} → *{escape(dept)}*   {flag}"
    if secondary:
        headline += "   also: " + ", ".join(LABEL_TITLES.get(s, s) for s in secondary)
    # Authors and sources come from the public too: bounded so the context block stays valid.
    author = inert(str(item.author.handle or item.author.name or "unknown author"), 200)
    created = item.created_at
    when = created.strftime("%Y-%m-%d %H:%M UTC") if isinstance(created, datetime) else str(created)
    context = f"{inert(item.source, 200)} · {author} · {inert(when, 40)}"
    if item.review_reason:
        context += f" · {inert(item.review_reason, 300)}"
    item_id = item.id
    elements: list[Any] = [
        ButtonElement(text="Confirm", action_id=ACTION_CONFIRM, value=item_id, style="primary"),
        StaticSelectElement(
            placeholder="Relabel",
            action_id=ACTION_RELABEL,
            options=[Option(text=LABEL_TITLES[lab], value=f"{item_id}:{lab}") for lab in LABELS],
        ),
        StaticSelectElement(
            placeholder="Reroute",
            action_id=ACTION_REROUTE,
            options=[Option(text=d.title(), value=f"{item_id}:{d}") for d in DEPARTMENTS],
        ),
        ButtonElement(text="Spam", action_id=ACTION_SPAM, value=item_id, style="danger"),
    ]
    url = plain_url(item.url)
    if url:
        elements.append(
            ButtonElement(text="Open source", action_id=ACTION_OPEN, url=url, value=item_id)
        )
    blocks = [
        SectionBlock(text=_inert(clip(headline, SLACK_TEXT))),
        SectionBlock(text=_inert(quote(item.text))),
        ContextBlock(elements=[_inert(clip(context, SLACK_TEXT))]),
        ActionsBlock(block_id=f"triage:{item_id}", elements=elements),
    ]
    fallback = f"{LABEL_TITLES.get(label, label)} → {escape(dept)}: {inert(item.text, 300)}"
    return {"text": fallback, "blocks": [b.to_dict() for b in blocks]}


def handoff_message(item: DeliveryItem, department: str) -> dict[str, Any]:
    """Build the message a department channel receives for an item handed to it."""
    msg = review_message(item)
    # A department's channel gets the context but not marketing's review controls.
    blocks = [b for b in msg["blocks"] if b.get("type") != "actions"]
    head = f"Handed to *{inert(department, 100)}* — " + blocks[0]["text"]["text"]
    blocks[0]["text"]["text"] = clip(head, SLACK_TEXT)
    text = f"Handoff to {inert(department, 100)}: " + msg["text"]
    return {"text": clip(text, SLACK_FALLBACK_TEXT), "blocks": blocks}


# ----------------------------------------------------------- review decisions
ACTION_VERBS = {
    "confirm": "Confirmed",
    "relabel": "Relabelled",
    "reroute": "Rerouted",
    "spam": "Marked as spam",
}


def user_ref(user_id: str | None, user_name: str | None = None) -> str:
    """A mention of a Slack user when the id looks like one, else the escaped name."""
    if user_id and user_id.isalnum() and user_id[:1] in "UW" and len(user_id) <= 20:
        return f"<@{user_id}>"
    return inert(str(user_name or user_id or "someone"), 80)


def decision_line(decision: dict[str, Any]) -> str:
    """One line saying who decided what and when, e.g. for the updated review message."""
    verb = ACTION_VERBS.get(str(decision["action"]), str(decision["action"]))
    when = decision.get("decided_at")
    stamp = when.strftime("%Y-%m-%d %H:%M UTC") if isinstance(when, datetime) else str(when)
    after = str(decision.get("after_label"))
    label = LABEL_TITLES.get(after) or inert(after, 100)
    target = decision.get("after_department") or "nobody"
    if decision["action"] == "spam":
        outcome = "suppressed, no handoff"
    else:
        outcome = f"*{label}* → *{inert(str(target), 100)}*"
    who = user_ref(decision.get("user_id"), decision.get("user_name"))
    return f":ballot_box_with_check: {verb} by {who} at {stamp}: {outcome}"


def decided_message(item: DeliveryItem, decision: dict[str, Any]) -> dict[str, Any]:
    """The review message after a decision: the item as before, the buttons replaced by the outcome.

    Args:
        item: From :meth:`Store.delivery_context` (after the decision was applied).
        decision: A row of the ``review_decisions`` table.

    Returns:
        ``{"text": ..., "blocks": [...]}`` ready for ``chat_update``.
    """
    msg = review_message(item)
    line = decision_line(decision)
    blocks = [b for b in msg["blocks"] if b.get("type") != "actions"]
    blocks.append(ContextBlock(elements=[_inert(line)]).to_dict())
    return {"text": clip(f"{line} — {msg['text']}", SLACK_FALLBACK_TEXT), "blocks": blocks}


def loser_notice(loser: dict[str, Any]) -> str:
    """The ephemeral note for a reviewer whose click came after someone else's decision."""
    verb = ACTION_VERBS.get(str(loser["action"]), str(loser["action"])).lower()
    who = user_ref(loser.get("winner_id"), loser.get("winner_name"))
    when = loser.get("winner_at")
    stamp = when.strftime("%H:%M UTC") if isinstance(when, datetime) else str(when)
    return f"This item was already {verb} by {who} at {stamp}; your choice was not applied."


def _duration(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours >= 48:
        return f"{hours // 24} days"
    if hours >= 1:
        return f"{hours} h"
    return f"{max(1, int(delta.total_seconds() // 60))} min"


def reminder_message(waited: timedelta) -> dict[str, Any]:
    """A reminder reply under a review message that has waited too long."""
    text = f":alarm_clock: Still waiting for review after {_duration(waited)}."
    return {"text": text, "blocks": [SectionBlock(text=_inert(text)).to_dict()]}


def batch_parent_message(summary: dict[str, Any]) -> dict[str, Any]:
    """The parent message of a threaded batch: counts per label, department and review flag.

    Args:
        summary: ``{"items": n, "needs_review": n, "by_label": {...}, "by_department": {...}}``.
    """
    labels = ", ".join(
        f"{LABEL_TITLES.get(k, escape(k))} {v}" for k, v in sorted(summary["by_label"].items())
    )
    depts = ", ".join(f"{escape(k)} {v}" for k, v in sorted(summary["by_department"].items()))
    head = (
        f"*{summary['items']} new items to review* "
        f"({summary['needs_review']} flagged :warning: first) — replies in the thread."
    )
    body = clip(f"By label: {labels or '-'}\nBy department: {depts or '-'}", SLACK_TEXT)
    return {
        "text": f"{summary['items']} new items to review ({summary['needs_review']} flagged)",
        "blocks": [
            SectionBlock(text=_inert(head)).to_dict(),
            ContextBlock(elements=[_inert(body)]).to_dict(),
        ],
    }


def queue_blocks(queue: dict[str, Any], *, now: datetime, overdue_after: timedelta) -> list[Any]:
    """Block Kit blocks showing the review queue (slash command reply and App Home).

    Args:
        queue: From :meth:`Store.review_queue`.
        now: The current time, for ages.
        overdue_after: Items older than this are marked overdue.

    Returns:
        At most 25 blocks, each text within Block Kit's limits.
    """
    blocks: list[Any] = [
        HeaderBlock(text=f"Review queue: {queue['total']} waiting"),
    ]
    if not queue["total"]:
        blocks.append(SectionBlock(text=_inert("Nothing is waiting for review. :tada:")))
        return [b.to_dict() for b in blocks]
    lines = []
    for g in queue["groups"]:
        age = now - g["oldest"]
        late = " :alarm_clock:" if age > overdue_after else ""
        label = LABEL_TITLES.get(g["label"], escape(str(g["label"])))
        lines.append(
            f"• *{label}* → {escape(str(g['department']))}: {g['count']} "
            f"(oldest {_duration(age)}){late}"
        )
    blocks.append(SectionBlock(text=_inert(clip("\n".join(lines), SLACK_TEXT))))
    blocks.append(DividerBlock())
    for row in queue["oldest"][:20]:
        age = now - row["routed_at"]
        late = ":alarm_clock: " if age > overdue_after else ""
        flag = ":warning: " if row["needs_review"] else ""
        label = LABEL_TITLES.get(row["label"], escape(str(row["label"])))
        text = (
            f"{late}{flag}*{label}* {float(row['score']):.0%} → {escape(str(row['department']))}"
            f" · {_duration(age)} · {inert(str(row['source']), 60)}\n"
            f"{inert(' '.join(str(row['text']).split()), 200)}"
        )
        blocks.append(SectionBlock(text=_inert(text)))
    return [b.to_dict() for b in blocks]
