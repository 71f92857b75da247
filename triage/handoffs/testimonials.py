"""Marketing handoffs: kudos become testimonials (DuckDB) and a post in the marketing channel.

Each kudos item is kept in the ``testimonials`` table (one row per item, so a retry never counts
praise twice) and posted to the channel with its author's history of praise: how many times, first
and last. ``triage testimonials export --out FILE.csv`` writes the list for the marketing team.
The Slack post carries the delivery key in its metadata, so ``lookup`` finds it after a crash the
same way the Slack destination does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triage.config import Config, DestinationConfig
from triage.delivery import PreviewDestination, SlackDestination
from triage.handoffs.base import HandoffDestination, author_key
from triage.slack.messages import escape, handoff_message


def _day(value: Any) -> str:
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else str(value)


def history_line(history: dict[str, Any]) -> str:
    """One sentence about an author's praise so far (this item included)."""
    count = int(history["count"])
    if count <= 1:
        return "First praise from this author."
    return (
        f"Praise #{count} from this author (first {_day(history['first'])}, "
        f"latest {_day(history['last'])})."
    )


class TestimonialsDestination(HandoffDestination):
    """Stores a testimonial and posts it to the marketing channel with the author's history."""

    system = "testimonials"

    def __init__(
        self,
        dest: DestinationConfig,
        config: Config,
        channel: SlackDestination | PreviewDestination,
    ) -> None:
        """Wrap the channel destination (Slack, or JSON previews without a token)."""
        super().__init__(dest, config)
        self.channel = channel
        self.preview = channel.preview
        # The channel post is the handoff; a note in the review thread would only repeat it.
        self.thread_note = False

    def _record(self, key: str, item: dict[str, Any]) -> dict[str, Any]:
        label = str(item["label"])
        who = author_key(item)
        self.store.add_testimonial(
            {
                "item_id": item["id"],
                "key": key,
                "author_key": who,
                "author_handle": item.get("author_handle"),
                "author_name": item.get("author_name"),
                "author_url": item.get("author_url"),
                "source": item["source"],
                "url": item.get("url"),
                "text": item["text"],
                "score": float((item.get("scores") or {}).get(label, item.get("score") or 0.0)),
                "said_at": item["created_at"],
            }
        )
        return self.store.praise_history(who)

    def message(self, item: dict[str, Any], history: dict[str, Any]) -> dict[str, Any]:
        """The channel message: the usual handoff blocks plus the praise history."""
        body = handoff_message(item, "marketing")
        body["blocks"].append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": escape(history_line(history)), "verbatim": True}
                ],
            }
        )
        return body

    def send(self, key: str, kind: str, item: dict[str, Any]) -> str:
        """Keep the testimonial (idempotent by item) and post it with the history."""
        history = self._record(key, item)
        body = self.message(item, history)
        if isinstance(self.channel, PreviewDestination):
            return self.channel.write(key, {"kind": kind, "item_id": item["id"], **body})
        return self.channel.post(key, kind, str(item["id"]), body)

    def lookup(self, key: str, item: dict[str, Any]) -> str | None:
        """The channel post with this key, if there is one (the testimonial is then ensured)."""
        ref = self.channel.lookup(key, item)
        if ref is not None:
            self._record(key, item)
        return ref
