"""Request bodies shaped like the ones Slack sends an app (from Slack's published examples).

Shared by the app's tests so each builds requests the same way; text-object helpers read the
Block Kit messages back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


def slash_command(response_url: str, command: str = "/triage") -> dict[str, str]:
    """The form fields of a slash command invocation."""
    return {
        "token": "legacy",
        "team_id": "T0",
        "team_domain": "fake",
        "channel_id": "C0REVIEW",
        "channel_name": "feedback-review",
        "user_id": "U0ALICE",
        "user_name": "alice",
        "command": command,
        "text": "",
        "api_app_id": "A0TRIAGE",
        "response_url": response_url,
        "trigger_id": "1.2.abc",
    }


def block_actions(
    item_id: str,
    action_id: str,
    channel: str,
    ts: str,
    response_url: str,
    *,
    user: str = "U0ALICE",
    choice: str | None = None,
) -> dict[str, Any]:
    """A ``block_actions`` payload for a click on an item's review message (``channel``, ``ts``):
    a button, or a static select when ``choice`` is given."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": f"triage:{item_id}",
        "action_ts": f"{time.time():.6f}",
    }
    if choice is None:
        action.update({"type": "button", "value": item_id, "text": {"type": "plain_text"}})
    else:
        action.update(
            {
                "type": "static_select",
                "selected_option": {
                    "text": {"type": "plain_text", "text": choice},
                    "value": f"{item_id}:{choice}",
                },
            }
        )
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0"},
        "api_app_id": "A0TRIAGE",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": "1.2.abc",
        "team": {"id": "T0", "domain": "fake"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "feedback-review"},
        "message": {"type": "message", "ts": ts, "text": "..."},
        "response_url": response_url,
        "actions": [action],
    }


def text_objects(blocks: list[dict[str, Any]]) -> Iterator[str]:
    """Every text of a message's blocks: sections, headers, context elements, buttons, options."""
    for block in blocks:
        if isinstance(block.get("text"), dict):
            yield block["text"]["text"]
        for el in block.get("elements") or []:
            if el.get("type") in ("mrkdwn", "plain_text"):
                yield el["text"]
            if isinstance(el.get("text"), dict):
                yield el["text"]["text"]
            for opt in el.get("options") or []:
                yield opt["text"]["text"]
