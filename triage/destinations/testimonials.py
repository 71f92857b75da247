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
from triage.destinations.base import Destination
from triage.destinations.handoff import HandoffDestination
from triage.destinations.preview import PreviewDestination
from triage.destinations.slack import SlackDestination, slack_token
from triage.models import DeliveryItem
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

    def _record(self, key: str, item: DeliveryItem) -> dict[str, Any]:
        who = item.author_key
        self.store.add_testimonial(
            {
                "item_id": item.id,
                "key": key,
                "author_key": who,
                "author_handle": item.author.handle,
                "author_name": item.author.name,
                "author_url": item.author.url,
                "source": item.source,
                "url": item.url,
                "text": item.text,
                "score": item.score,
                "said_at": item.created_at,
            }
        )
        return self.store.praise_history(who)

    def message(self, item: DeliveryItem, history: dict[str, Any]) -> dict[str, Any]:
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

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Keep the testimonial (idempotent by item) and post it with the history."""
        history = self._record(key, item)
        body = self.message(item, history)
        if isinstance(self.channel, PreviewDestination):
            return self.channel.write(key, {"kind": kind, "item_id": item.id, **body})
        return self.channel.post(key, kind, item.id, body)

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """The channel post with this key, if there is one (the testimonial is then ensured)."""
        ref = self.channel.lookup(key, item)
        if ref is not None:
            self._record(key, item)
        return ref


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``testimonials`` destination posting to its channel (JSON previews without a token)."""
    channel = str(dest.settings.get("channel") or "")
    token = slack_token(dest.settings)
    inner: SlackDestination | PreviewDestination = (
        SlackDestination(dest.name, channel, token)
        if token and channel
        else PreviewDestination(dest.name, config.outbox_dir, channel)
    )
    return TestimonialsDestination(dest, config, inner)
