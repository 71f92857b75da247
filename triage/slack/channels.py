"""Configured channel names resolved to conversation IDs: once per workspace and process.

Only ``chat.postMessage`` accepts a channel name; ``conversations.history``,
``conversations.replies`` and ``chat.update`` take a conversation ID and answer
``channel_not_found`` for a name. Reconciling after a crash and threading review batches need
those methods, so a configured ``#name`` is looked up with ``conversations.list`` (public and
private channels, followed page by page through ``next_cursor``; scopes ``channels:read`` and
``groups:read``). A configured ID (``C0123ABCD``) is used as it is, without any lookup.
"""

from __future__ import annotations

import hashlib
import re
import threading

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from triage.slack.client import CREDENTIAL_ERRORS

# Conversation IDs: C (channels), G (older private channels), D (direct messages); upper case.
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
# A workspace with more channels than this should configure IDs rather than names.
MAX_PAGES = 100
LIST_TYPES = "public_channel,private_channel"

# (API base URL, token digest) -> {channel name: ID}; the token itself is never kept as a key.
_CACHE: dict[tuple[str, str], dict[str, str]] = {}
_LOCK = threading.Lock()


class ChannelError(LookupError):
    """A configured channel cannot be turned into a conversation ID."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        """``permanent`` when retrying cannot help (unknown name, missing scope)."""
        super().__init__(message)
        self.permanent = permanent


def is_channel_id(value: str) -> bool:
    """Whether ``value`` already is a conversation ID (``C…``, ``G…``, ``D…``)."""
    return bool(_CHANNEL_ID.match(value))


def _workspace(client: WebClient) -> tuple[str, str]:
    digest = hashlib.sha256(str(client.token or "").encode()).hexdigest()[:16]
    return str(client.base_url), digest


def _list_channels(client: WebClient) -> dict[str, str]:
    names: dict[str, str] = {}
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        resp = client.conversations_list(
            types=LIST_TYPES, exclude_archived=True, limit=1000, cursor=cursor
        )
        for conv in resp.get("channels") or []:
            names[str(conv.get("name"))] = str(conv.get("id"))
        # Slack may return fewer than `limit` before the end: only an empty cursor ends the list.
        cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            break
    return names


def resolve_channel(client: WebClient, channel: str, *, destination: str = "") -> str:
    """Return the conversation ID of a configured channel (an ID or a ``#name``).

    Args:
        client: The bot's Web API client (its workspace is the cache key).
        channel: As configured: ``C0123ABCD`` or ``#feedback-review``.
        destination: The destination's name, for error messages.

    Returns:
        The conversation ID.

    Raises:
        ChannelError: For an unknown name (permanent), a token without the listing scopes
            (permanent), or a Slack error a later retry may fix.
    """
    where = f"destination '{destination}': " if destination else ""
    value = channel.strip()
    if not value:
        raise ChannelError(f"{where}no channel configured", permanent=True)
    if is_channel_id(value):
        return value
    name = value.removeprefix("#")
    key = _workspace(client)
    with _LOCK:
        known = _CACHE.get(key)
        if known is None or name not in known:
            # Listed once per process, and again only for a name not seen yet (a new channel).
            try:
                known = _list_channels(client)
            except SlackApiError as exc:
                error = str(exc.response.get("error", exc))
                if error == "missing_scope":
                    needed = exc.response.get("needed") or "channels:read,groups:read"
                    raise ChannelError(
                        f"{where}cannot look up channel '{value}': the bot token lacks the "
                        f"{needed} scope. Add channels:read and groups:read (see `triage slack "
                        "manifest`) and reinstall the app, or configure the channel ID (C…).",
                        permanent=True,
                    ) from exc
                permanent = error in CREDENTIAL_ERRORS
                raise ChannelError(
                    f"{where}cannot look up channel '{value}': {error}", permanent=permanent
                ) from exc
            _CACHE[key] = known
    found = known.get(name)
    if found is None:
        raise ChannelError(
            f"{where}channel '{value}' not found: create it and invite the bot (/invite), "
            "or configure its ID (C…); archived channels are not used.",
            permanent=True,
        )
    return found


def forget_channels() -> None:
    """Drop the cache (a test, or a long-lived process after channels were renamed)."""
    with _LOCK:
        _CACHE.clear()
