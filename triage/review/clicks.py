"""A reviewer's click as a decision: parsed from Slack's ``block_actions`` payload.

The payload's shape was checked already (:mod:`triage.slack.payloads`); this turns each action
into a :class:`Decision` with a deterministic id, so a click Slack delivers twice is one decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from triage.keys import stable_key
from triage.models import DEPARTMENTS, LABELS
from triage.slack.messages import ACTION_CONFIRM, ACTION_RELABEL, ACTION_REROUTE, ACTION_SPAM

ACTIONS: dict[str, str] = {
    ACTION_CONFIRM: "confirm",
    ACTION_RELABEL: "relabel",
    ACTION_REROUTE: "reroute",
    ACTION_SPAM: "spam",
}
_ITEM_ID = re.compile(r"^[0-9a-f]{20}$")


class InvalidAction(ValueError):
    """A click we cannot turn into a decision: unknown action id or a malformed value."""


@dataclass(slots=True, frozen=True)
class Decision:
    """One reviewer's click, as spooled and as applied."""

    decision_id: str
    item_id: str
    action: str
    value: str | None
    user_id: str
    user_name: str | None
    decided_at: str  # ISO-8601 UTC: the spool is JSON
    channel: str | None = None
    message_ts: str | None = None
    response_url: str | None = None

    @property
    def when(self) -> datetime:
        """``decided_at`` as an aware datetime."""
        return datetime.fromisoformat(self.decided_at)


def parse_actions(body: dict[str, Any], now: datetime | None = None) -> list[Decision]:
    """Turn a ``block_actions`` payload into decisions.

    Args:
        body: The decoded interactivity payload.
        now: Fallback time when the action carries no ``action_ts``.

    Returns:
        One decision per action in the payload; none for a cleared select menu (Slack sends
        ``selected_option: null`` when a reviewer clears one), which is not an error.

    Raises:
        InvalidAction: For an unknown action id or a value that is not ``item`` / ``item:choice``
            with a known label or department.
    """
    user = body.get("user") or {}
    user_id = str(user.get("id") or "")
    if not user_id:
        raise InvalidAction("the payload names no user")
    user_name = user.get("username") or user.get("name")
    container = body.get("container") or {}
    # Bolt and the payload check take ``channel`` as an object or as a bare id.
    named = body.get("channel")
    channel = container.get("channel_id") or (
        named.get("id") if isinstance(named, dict) else named
    )
    message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
    response_url = body.get("response_url")
    out: list[Decision] = []
    for action in body.get("actions") or []:
        action_id = str(action.get("action_id", ""))
        kind = ACTIONS.get(action_id)
        if kind is None:
            raise InvalidAction(f"unknown action {action_id[:80]!r}")
        if kind in ("relabel", "reroute"):
            option = action.get("selected_option")
            if option is None:
                continue  # the menu was cleared: nothing was decided
            raw = str(option.get("value") or "")
            item_id, _, value = raw.partition(":")
            allowed = LABELS if kind == "relabel" else DEPARTMENTS
            if value not in allowed:
                raise InvalidAction(f"{kind}: {value[:40]!r} is not one of {', '.join(allowed)}")
        else:
            item_id, value = str(action.get("value") or ""), ""
        if not _ITEM_ID.match(item_id):
            raise InvalidAction(f"{kind}: {item_id[:40]!r} is not an item id")
        ts = str(action.get("action_ts") or "")
        try:
            when = datetime.fromtimestamp(float(ts), UTC) if ts else (now or datetime.now(UTC))
        except (ValueError, OverflowError, OSError) as exc:
            raise InvalidAction(f"{kind}: action_ts {ts[:40]!r} is not a timestamp") from exc
        out.append(
            Decision(
                # Deterministic, so a retried delivery of the same click is one decision.
                decision_id=stable_key(item_id, user_id, kind, value, ts or when.isoformat()),
                item_id=item_id,
                action=kind,
                value=value or None,
                user_id=user_id,
                user_name=str(user_name) if user_name else None,
                decided_at=when.isoformat(),
                channel=str(channel) if channel else None,
                message_ts=str(message_ts) if message_ts else None,
                response_url=str(response_url) if response_url else None,
            )
        )
    if not body.get("actions"):
        raise InvalidAction("the payload carries no action")
    return out
