"""The Slack Web API client and the few calls every Slack path shares.

One client factory (token from the caller, retries on 429, 5xx and connection errors), one way to
post (:func:`post`: unfurling off, the delivery key in the message metadata), one way to find a
message again by that key after a crash (:func:`find_by_key`), and one list of the errors a retry
of the same request cannot fix (:data:`PERMANENT_ERRORS`).
"""

from __future__ import annotations

import os
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

DEFAULT_API_URL = "https://slack.com/api/"

# The token is refused or lacks a scope: nothing works until someone fixes the credentials.
CREDENTIAL_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "missing_scope"}
)
# Errors a retry of the same request cannot fix: a delivery is dead-lettered at once, and a
# message that cannot be updated is given up (unless the credentials are at fault: fixed, they work).
PERMANENT_ERRORS = CREDENTIAL_ERRORS | frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "message_not_found",
        "cant_update_message",
    }
)
# Pages of 200 messages searched for a key: recent history only (README, "Limits").
HISTORY_PAGES = 10


def api_url() -> str:
    """The Web API base URL: ``SLACK_API_URL`` (tests point it at a local fake) or Slack's."""
    url = os.environ.get("SLACK_API_URL") or DEFAULT_API_URL
    return url if url.endswith("/") else url + "/"


def make_client(token: str, *, timeout: int = 15, max_retries: int = 3) -> WebClient:
    """Create a ``WebClient`` that waits out rate limits and retries server errors.

    Args:
        token: Bot token (``xoxb-...``).
        timeout: Per-request timeout in seconds.
        max_retries: Retries per request for 429, 5xx and connection errors.

    Returns:
        The configured client.
    """
    client = WebClient(token=token, base_url=api_url(), timeout=timeout)
    client.retry_handlers.extend(
        [
            # Honours Retry-After, which is how Slack paces each method's tier.
            RateLimitErrorRetryHandler(max_retry_count=max_retries),
            ServerErrorRetryHandler(max_retry_count=max_retries),
        ]
    )
    if not any(isinstance(h, ConnectionErrorRetryHandler) for h in client.retry_handlers):
        client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=max_retries))
    return client


def post(
    client: WebClient,
    channel: str,
    body: dict[str, Any],
    *,
    event_type: str | None = None,
    payload: dict[str, Any] | None = None,
    thread_ts: str | None = None,
) -> str:
    """Post ``body`` (``text`` and optionally ``blocks``); return ``channel:ts``.

    Unfurling is off: links in public text never expand. ``event_type`` and ``payload`` become
    the message metadata, which is how :func:`find_by_key` recognises the message later.

    Raises:
        slack_sdk.errors.SlackApiError: What Slack answered, after the client's own retries.
    """
    args: dict[str, Any] = {
        "channel": channel,
        "text": body["text"],
        "unfurl_links": False,
        "unfurl_media": False,
    }
    if body.get("blocks") is not None:
        args["blocks"] = body["blocks"]
    if thread_ts is not None:
        args["thread_ts"] = thread_ts
    if event_type is not None:
        args["metadata"] = {"event_type": event_type, "event_payload": payload or {}}
    resp = client.chat_postMessage(**args)
    return f"{resp['channel']}:{resp['ts']}"


def _has_key(message: dict[str, Any], key: str) -> bool:
    return bool(((message.get("metadata") or {}).get("event_payload") or {}).get("key") == key)


def find_by_key(
    client: WebClient,
    channel: str,
    key: str,
    *,
    threads: list[str] | tuple[str, ...] = (),
    history: bool = True,
) -> str | None:
    """The ``ts`` of a message carrying ``key`` in its metadata, or None.

    Looks through the channel's recent history (at most :data:`HISTORY_PAGES` pages) and then the
    replies of the given threads: threaded replies are not part of a channel's history.

    Args:
        client: The bot's Web API client.
        channel: A conversation ID (history and replies take no names).
        key: The key the message was posted with.
        threads: Thread parents whose replies are searched too.
        history: False searches the threads only.
    """
    searches: list[tuple[Any, dict[str, Any]]] = []
    if history:
        searches.append((client.conversations_history, {}))
    searches += [(client.conversations_replies, {"ts": ts}) for ts in threads]
    for method, extra in searches:
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            resp = method(
                channel=channel, limit=200, include_all_metadata=True, cursor=cursor, **extra
            )
            messages: list[dict[str, Any]] = resp.get("messages", [])
            for msg in messages:
                if _has_key(msg, key):
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
