"""Request bodies shaped like the ones Slack sends an app (from Slack's published examples).

Shared by the app's tests so each builds requests the same way; text-object helpers read the
Block Kit messages back.
"""

from __future__ import annotations

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
