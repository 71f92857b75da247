"""Slack channels: Block Kit messages with their delivery key in the metadata, threaded batches.

Each message carries its idempotency key as message metadata, so after a crash between Slack
accepting a message and the outbox recording it, :meth:`SlackDestination.lookup` finds it instead
of posting it again.

When a run has more review messages for one channel than ``review.batch_threshold``, posting them
all at top level floods the channel (and Slack paces posting to about one message a second per
channel anyway). A parent message then summarises the batch and the items follow as threaded
replies, flagged items first (the outbox orders them so).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from triage.config import Config, DestinationConfig
from triage.destinations.base import DeliveryError, Destination, render
from triage.destinations.preview import PreviewDestination
from triage.keys import stable_key
from triage.models import DeliveryItem
from triage.secrets import secret
from triage.slack.channels import ChannelError, resolve_channel
from triage.slack.client import PERMANENT_ERRORS, find_by_key, make_client, post
from triage.slack.messages import batch_parent_message
from triage.store import Store

log = logging.getLogger("triage.delivery")

DEFAULT_TOKEN_ENV = "SLACK_BOT_TOKEN"


def slack_token(settings: dict[str, Any]) -> str | None:
    """The bot token a Slack destination's settings name: ``token_env``, then ``token_secret``."""
    return secret(settings, "token_env", DEFAULT_TOKEN_ENV, "token_secret")


class SlackDestination:
    """Posts to one Slack channel; each message carries its idempotency key as message metadata."""

    preview = False

    def __init__(
        self, name: str, channel: str, token: str, batch_threshold: int | None = None
    ) -> None:
        """Create the destination for ``channel``; review messages thread above ``batch_threshold``."""
        self.name = name
        self.channel = channel
        self.client = make_client(token)
        self.batch_threshold = batch_threshold
        self.thread_ts: str | None = None  # parent of this run's review batch, when batching
        self.threads: list[str] = []  # recent batch parents, searched when reconciling
        self._channel_id: str | None = None

    @property
    def channel_id(self) -> str:
        """The channel's conversation ID (a configured name is looked up once, then cached).

        Raises:
            DeliveryError: When the channel cannot be resolved; permanent for an unknown name.
        """
        if self._channel_id is None:
            try:
                self._channel_id = resolve_channel(self.client, self.channel, destination=self.name)
            except ChannelError as exc:
                raise DeliveryError(f"slack {exc}", permanent=exc.permanent) from exc
        return self._channel_id

    def bind(self, store: Store, destinations: dict[str, Destination]) -> None:
        """Before a drain: open a threaded batch when many review messages are due."""
        self.thread_ts = None
        self.threads = []
        if not self.batch_threshold:
            return
        try:
            self.thread_ts = open_review_thread(
                self.client, self.name, self.channel_id, store, self.batch_threshold
            )
        except (DeliveryError, SlackApiError) as exc:
            # Without knowing whether a parent exists, posting another could duplicate it: this
            # run posts at top level instead, and each send reports the channel's own error.
            log.warning("review batch for %s not opened: %s", self.name, exc)
        # Recent batch parents (this run's included): where reconciliation looks for replies.
        self.threads = store.recent_review_threads(self.name)

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Post the message; return ``channel:ts``."""
        thread_ts = self.thread_ts if kind == "review" else None
        return self.post(key, kind, item.id, render(kind, item), thread_ts=thread_ts)

    def post(
        self,
        key: str,
        kind: str,
        item_id: str,
        body: dict[str, Any],
        *,
        thread_ts: str | None = None,
    ) -> str:
        """Post ``body`` (text and blocks) carrying ``key`` in its metadata; return ``channel:ts``.

        Raises:
            DeliveryError: Permanent for errors a retry cannot fix (unknown channel, bad token,
                blocks Slack refuses).
        """
        try:
            return post(
                self.client,
                self.channel_id,
                body,
                event_type="triage_delivery",
                payload={"key": key, "item_id": item_id, "kind": kind},
                thread_ts=thread_ts,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", exc))
            detail = "; ".join(str(e) for e in exc.response.get("errors") or [])[:500]
            raise DeliveryError(
                f"slack {self.name} ({self.channel}): {error}" + (f" ({detail})" if detail else ""),
                permanent=error in PERMANENT_ERRORS,
            ) from exc

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Search recent channel history, then recent batch threads, for this key."""
        channel = self.channel_id  # history and replies take an ID, never a name
        ts = find_by_key(self.client, channel, key, threads=self.threads)
        return f"{channel}:{ts}" if ts else None


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
    # A crash between posting the parent and recording it must not produce a second parent.
    ts = find_by_key(client, channel, key)
    if ts is None:
        ref = post(
            client,
            channel,
            batch_parent_message(summary),
            event_type="triage_batch",
            payload={"key": key},
        )
        ts = ref.partition(":")[2]
    store.record_review_batch(key, destination, channel, ts, len(due))
    return ts


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``slack`` destination, or JSON previews when no token is configured."""
    channel = str(dest.settings.get("channel") or "")
    token = slack_token(dest.settings)
    if not token:
        return PreviewDestination(dest.name, config.outbox_dir, channel)
    threshold = config.review.batch_threshold if dest.name == config.review_destination else None
    return SlackDestination(dest.name, channel, token, threshold)
