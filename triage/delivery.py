"""The durable outbox: deliver each queued message once, reconcile after crashes, back off on errors."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError

from triage.config import Config, DestinationConfig
from triage.secrets import get_secret
from triage.slack.batching import find_in_threads, open_review_thread
from triage.slack.client import make_client
from triage.slack.messages import handoff_message, review_message
from triage.store import Store


class DeliveryError(RuntimeError):
    """A delivery failed; ``permanent`` ones are dead-lettered at once instead of retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        """Create the error; permanent errors (bad channel, revoked token) are not retried."""
        super().__init__(message)
        self.permanent = permanent


class Destination(Protocol):
    """Something the outbox can deliver to."""

    name: str
    preview: bool

    def send(self, key: str, kind: str, item: dict[str, Any]) -> str:
        """Deliver one message and return the destination's reference for it."""
        ...

    def lookup(self, key: str, item: dict[str, Any]) -> str | None:
        """Return the reference of an earlier delivery with this key, if the destination has it."""
        ...


def render(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """Build the message body of a delivery kind."""
    if kind == "review":
        return review_message(item)
    return handoff_message(item, str(item.get("department") or "unknown"))


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

    def bind(self, store: Store, destinations: dict[str, Any]) -> None:
        """Before a drain: open a threaded batch when many review messages are due (issue 5)."""
        self.thread_ts = open_review_thread(
            self.client, self.name, self.channel, store, self.batch_threshold
        )
        self.threads = store.recent_review_threads(self.name) if self.batch_threshold else []

    def send(self, key: str, kind: str, item: dict[str, Any]) -> str:
        """Post the message; return ``channel:ts``."""
        body = render(kind, item)
        try:
            resp = self.client.chat_postMessage(
                channel=self.channel,
                text=body["text"],
                blocks=body["blocks"],
                unfurl_links=False,
                unfurl_media=False,
                thread_ts=self.thread_ts if kind == "review" else None,
                metadata={
                    "event_type": "triage_delivery",
                    "event_payload": {"key": key, "item_id": str(item["id"]), "kind": kind},
                },
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", exc))
            permanent = error in {
                "channel_not_found",
                "not_in_channel",
                "invalid_auth",
                "account_inactive",
                "token_revoked",
                "is_archived",
                "missing_scope",
                "invalid_blocks",
            }
            raise DeliveryError(f"slack {self.channel}: {error}", permanent=permanent) from exc
        return f"{resp['channel']}:{resp['ts']}"

    def lookup(self, key: str, item: dict[str, Any]) -> str | None:
        """Search recent channel history for a message carrying this key in its metadata."""
        cursor: str | None = None
        for _ in range(10):  # bounded: ten pages of 200 recent messages
            resp = self.client.conversations_history(
                channel=self.channel, limit=200, include_all_metadata=True, cursor=cursor
            )
            messages: list[dict[str, Any]] = resp.get("messages", [])
            for msg in messages:
                payload = (msg.get("metadata") or {}).get("event_payload") or {}
                if payload.get("key") == key:
                    return f"{resp.get('channel', self.channel)}:{msg['ts']}"
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        # Threaded replies are not in the channel's history; look in recent batch threads too.
        ts = find_in_threads(self.client, self.channel, self.threads, key)
        return f"{self.channel}:{ts}" if ts else None


class PreviewDestination:
    """Writes what would be sent as JSON files, for running without credentials."""

    preview = True

    def __init__(self, name: str, folder: Path, channel: str | None = None) -> None:
        """Create a preview destination writing under ``folder/name``."""
        self.name = name
        self.folder = folder / name
        self.channel = channel

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def send(self, key: str, kind: str, item: dict[str, Any]) -> str:
        """Write the message atomically; the file name is the idempotency key."""
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {"channel": self.channel, "kind": kind, "item_id": item["id"], **render(kind, item)}
        tmp = self._path(key).with_suffix(".tmp")
        tmp.write_text(
            json.dumps(body, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
        )
        os.replace(tmp, self._path(key))
        return str(self._path(key))

    def lookup(self, key: str, item: dict[str, Any]) -> str | None:
        """A preview exists when its file does."""
        return str(self._path(key)) if self._path(key).exists() else None


DestinationFactory = Callable[[DestinationConfig, Config], Destination]


def _slack(dest: DestinationConfig, config: Config) -> Destination:
    channel = str(dest.settings.get("channel") or "")
    token = get_secret(
        str(dest.settings.get("token_env", "SLACK_BOT_TOKEN")), dest.settings.get("token_secret")
    )
    if not token:
        return PreviewDestination(dest.name, config.outbox_dir, channel)
    threshold = config.review.batch_threshold if dest.name == config.review_destination else None
    return SlackDestination(dest.name, channel, token, threshold)


def _preview(dest: DestinationConfig, config: Config) -> Destination:
    return PreviewDestination(dest.name, config.outbox_dir, dest.settings.get("channel"))


# Destination types by name; the handoff integrations register theirs here.
DESTINATION_TYPES: dict[str, DestinationFactory] = {"slack": _slack, "preview": _preview}
# Called after every drain with (store, config, destinations); the handoffs announce dead letters.
AFTER_DRAIN: list[Callable[[Store, Config, dict[str, Destination]], None]] = []


def build_destinations(config: Config) -> dict[str, Destination]:
    """Instantiate every configured destination (credentials resolved now, once per run)."""
    # Imported here, not at the top: the handoff package imports this module to register its types.
    import triage.handoffs  # noqa: F401

    out: dict[str, Destination] = {}
    for name, dest in config.destinations.items():
        factory = DESTINATION_TYPES.get(dest.type)
        if factory is None:
            known = ", ".join(sorted(DESTINATION_TYPES))
            raise ValueError(f"destination '{name}': unknown type '{dest.type}' (known: {known})")
        out[name] = factory(dest, config)
    return out


@dataclass(slots=True)
class DeliveryReport:
    """What one drain of the outbox did."""

    sent: int = 0
    previewed: int = 0
    reconciled: int = 0
    failed: int = 0
    dead: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain dict for summaries and JSON."""
        return {
            "sent": self.sent,
            "previewed": self.previewed,
            "reconciled": self.reconciled,
            "failed": self.failed,
            "dead": self.dead,
        }


def backoff_seconds(attempts: int, base: float = 30.0, cap: float = 3600.0) -> float:
    """Exponential backoff with jitter for the next attempt of a failed delivery."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * (0.5 + random.random() / 2)


def drain(
    store: Store,
    config: Config,
    destinations: dict[str, Destination],
    *,
    limit: int = 10_000,
    batch: int = 200,
) -> DeliveryReport:
    """Send due outbox rows, oldest first, each at most once.

    The state goes to ``sending`` (committed) before the call out; a crash after the destination
    accepted a message therefore leaves ``sending`` behind, and the next drain asks the destination
    (``lookup``) whether it already has the key instead of sending again.

    Args:
        store: The open store.
        config: Configuration (max attempts).
        destinations: From :func:`build_destinations`.
        limit: Upper bound of deliveries this call.
        batch: Rows fetched from the outbox at a time.

    Returns:
        Counts of what happened.
    """
    report = DeliveryReport()
    done = 0
    skip: set[str] = set()
    # Handoff destinations keep their own records (tickets, groups, testimonials) in the store.
    for destination in destinations.values():
        bind = getattr(destination, "bind", None)
        if bind is not None:
            bind(store, destinations)
    while done < limit:
        rows = [r for r in store.due_deliveries(batch + len(skip)) if r["key"] not in skip]
        if not rows:
            break
        context = store.delivery_context([r["item_id"] for r in rows])
        for row in rows[: limit - done]:
            done += 1
            key, kind = row["key"], row["kind"]
            dest = destinations.get(row["destination"])
            item = context.get(row["item_id"])
            if dest is None or item is None:
                reason = "unknown destination" if dest is None else "item not found"
                store.mark_failed(key, reason, 0, 0)
                report.dead += 1
                continue
            try:
                if row["state"] == "sending":
                    ref = dest.lookup(key, item)
                    if ref is not None:
                        store.mark_sent(key, ref)
                        report.reconciled += 1
                        continue
                store.mark_sending(key)
                ref = dest.send(key, kind, item)
            except DeliveryError as exc:
                attempts = int(row["attempts"]) + 1
                max_attempts = 0 if exc.permanent else config.max_attempts
                state = store.mark_failed(key, str(exc), backoff_seconds(attempts), max_attempts)
                skip.add(key)
                if state == "dead":
                    report.dead += 1
                else:
                    report.failed += 1
                continue
            except Exception as exc:  # noqa: BLE001 - network trouble the client's retries could not absorb
                attempts = int(row["attempts"]) + 1
                state = store.mark_failed(
                    key,
                    f"{type(exc).__name__}: {exc}",
                    backoff_seconds(attempts),
                    config.max_attempts,
                )
                skip.add(key)
                report.dead += state == "dead"
                report.failed += state != "dead"
                continue
            store.mark_sent(key, ref)
            if dest.preview:
                report.previewed += 1
            else:
                report.sent += 1
    for hook in AFTER_DRAIN:
        hook(store, config, destinations)
    return report
