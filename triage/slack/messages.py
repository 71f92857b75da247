"""Block Kit review messages, built with ``slack_sdk.models.blocks``, with untrusted text made inert."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    Option,
    SectionBlock,
    StaticSelectElement,
)

from triage.models import DEPARTMENTS, LABELS

# Action ids are shared by the message builder and the interactivity handlers.
ACTION_CONFIRM = "triage_confirm"
ACTION_RELABEL = "triage_relabel"
ACTION_REROUTE = "triage_reroute"
ACTION_SPAM = "triage_spam"
ACTION_OPEN = "triage_open_source"

# Block Kit limits: a section's text holds 3,000 characters; keep room for the quote prefix.
SECTION_LIMIT = 3000
TEXT_BUDGET = 2600
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


def truncate(text: str, limit: int = TEXT_BUDGET) -> str:
    """Cut text to ``limit`` characters with a visible marker."""
    if len(text) <= limit:
        return text
    return text[: limit - 20].rstrip() + " …[truncated]"


def quote(text: str) -> str:
    """Escape, bound and block-quote untrusted text for a mrkdwn field."""
    safe = escape(truncate(text))
    # Escaping can grow the text (``&`` -> ``&amp;``); bound it again on the escaped form.
    if len(safe) > TEXT_BUDGET:
        safe = safe[: TEXT_BUDGET - 20]
        safe = safe[: safe.rfind("&")] if safe.rfind("&") > len(safe) - 6 else safe
        safe += " …[truncated]"
    return "\n".join("> " + line for line in safe.splitlines() or [""])


def _inert(text: str) -> MarkdownTextObject:
    # verbatim: Slack must not auto-link URLs or channel names inside text we did not write.
    return MarkdownTextObject(text=text, verbatim=True)


def _safe_url(url: str | None) -> str | None:
    if not url or not url.startswith(("http://", "https://")) or len(url) > 3000:
        return None
    return url


def review_message(item: dict[str, Any]) -> dict[str, Any]:
    """Build the chat.postMessage arguments (text and blocks) for one routed item.

    Args:
        item: A row of :meth:`Store.delivery_context`.

    Returns:
        ``{"text": ..., "blocks": [...]}`` ready for ``chat_postMessage``.
    """
    label = item["label"]
    scores = item["scores"]
    score = float(scores.get(label, item.get("score", 0.0)))
    dept = item.get("department") or "nobody"
    flag = (
        ":warning: *needs review*" if item.get("needs_review") else ":white_check_mark: confident"
    )
    secondary = [lab for lab in item.get("labels") or [] if lab != label]
    headline = f"*{LABEL_TITLES.get(label, label)}* {score:.0%} → *{dept}*   {flag}"
    if secondary:
        headline += "   also: " + ", ".join(LABEL_TITLES.get(s, s) for s in secondary)
    author = escape(str(item.get("author_handle") or item.get("author_name") or "unknown author"))
    created = item.get("created_at")
    when = created.strftime("%Y-%m-%d %H:%M UTC") if isinstance(created, datetime) else str(created)
    context = f"{escape(str(item['source']))} · {author} · {when}"
    if item.get("review_reason"):
        context += f" · {escape(str(item['review_reason']))}"
    item_id = str(item["id"])
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
    url = _safe_url(item.get("url"))
    if url:
        elements.append(
            ButtonElement(text="Open source", action_id=ACTION_OPEN, url=url, value=item_id)
        )
    blocks = [
        SectionBlock(text=_inert(headline)),
        SectionBlock(text=_inert(quote(str(item["text"])))),
        ContextBlock(elements=[_inert(context)]),
        ActionsBlock(block_id=f"triage:{item_id}", elements=elements),
    ]
    fallback = (
        f"{LABEL_TITLES.get(label, label)} → {dept}: {escape(truncate(str(item['text']), 300))}"
    )
    return {"text": fallback, "blocks": [b.to_dict() for b in blocks]}


def handoff_message(item: dict[str, Any], department: str) -> dict[str, Any]:
    """Build the message a department channel receives for an item handed to it."""
    msg = review_message(item)
    # A department's channel gets the context but not marketing's review controls.
    blocks = [b for b in msg["blocks"] if b.get("type") != "actions"]
    blocks[0]["text"]["text"] = f"Handed to *{escape(department)}* — " + blocks[0]["text"]["text"]
    return {"text": f"Handoff to {department}: " + msg["text"], "blocks": blocks}
