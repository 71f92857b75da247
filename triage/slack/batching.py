"""Threaded review batches: one parent message per run, every item a reply in its thread.

When a run has more review messages for one channel than ``review.batch_threshold``, posting them
all at top level floods the channel (and Slack paces posting to about one message a second per
channel anyway). A parent message summarises the batch and the items follow as threaded replies,
flagged items first (the outbox orders them so).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from slack_sdk import WebClient

from triage.keys import stable_key
from triage.slack.messages import batch_parent_message
from triage.store import Store

log = logging.getLogger("triage.slack")


def batch_key(destination: str, due: list[dict[str, Any]]) -> str:
    """Key of the batch the due items belong to.

    Items routed in one pass share their outbox ``created_at``, so a run that crashed half way and
    is resumed finds the same key and keeps threading under the same parent.
    """
    first = min(str(r["created_at"]) for r in due)
    return stable_key(destination, first)


def open_review_thread(
    client: WebClient, destination: str, channel: str, store: Store, threshold: int | None
) -> str | None:
    """Post (or find) the parent message for this run's review items when there are many.

    Args:
        client: The bot's Web API client.
        destination: The destination's name in the configuration.
        channel: Its channel.
        store: The open store.
        threshold: Batch when more than this many review messages are due; None never batches.

    Returns:
        The parent's ``ts`` to thread replies under, or None to post at top level.
    """
    if threshold is None:
        return None
    due = store.due_review_items(destination)
    if len(due) <= threshold:
        return None
    key = batch_key(destination, due)
    known = store.review_batch(key)
    if known is not None:
        return str(known["ts"])
    summary = {
        "items": len(due),
        "needs_review": sum(1 for r in due if r["needs_review"]),
        "by_label": dict(Counter(str(r["label"]) for r in due)),
        "by_department": dict(Counter(str(r["department"]) for r in due)),
    }
    body = batch_parent_message(summary)
    ts = _find_parent(client, channel, key)
    if ts is None:
        resp = client.chat_postMessage(
            channel=channel,
            text=body["text"],
            blocks=body["blocks"],
            unfurl_links=False,
            unfurl_media=False,
            metadata={"event_type": "triage_batch", "event_payload": {"key": key}},
        )
        ts = str(resp["ts"])
    store.record_review_batch(key, destination, channel, ts, len(due))
    return ts


def _find_parent(client: WebClient, channel: str, key: str) -> str | None:
    # A crash between posting the parent and recording it must not produce a second parent.
    resp = client.conversations_history(channel=channel, limit=200, include_all_metadata=True)
    messages: list[dict[str, Any]] = resp.get("messages", [])
    for msg in messages:
        if ((msg.get("metadata") or {}).get("event_payload") or {}).get("key") == key:
            return str(msg["ts"])
    return None


def find_in_threads(client: WebClient, channel: str, threads: list[str], key: str) -> str | None:
    """Look for a reply carrying delivery ``key`` in the given threads; return its ``ts``."""
    for thread_ts in threads:
        cursor: str | None = None
        for _ in range(10):  # bounded: a batch thread holds a few thousand replies at most
            resp = client.conversations_replies(
                channel=channel, ts=thread_ts, limit=200, include_all_metadata=True, cursor=cursor
            )
            replies: list[dict[str, Any]] = resp.get("messages", [])
            for msg in replies:
                if ((msg.get("metadata") or {}).get("event_payload") or {}).get("key") == key:
                    return str(msg["ts"])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
    return None


def thread_root(client: WebClient, channel: str, ts: str) -> str:
    """The ``ts`` to reply under for a message: its thread's parent when it is itself a reply.

    A review message posted in a batch thread is a reply; Slack asks for the parent's ``ts`` in
    ``thread_ts`` (replies to a reply belong to the parent's thread).
    """
    resp = client.conversations_replies(channel=channel, ts=ts, limit=1)
    messages: list[dict[str, Any]] = resp.get("messages") or []
    if messages:
        return str(messages[0].get("thread_ts") or messages[0].get("ts") or ts)
    return ts
