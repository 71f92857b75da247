"""The durable outbox: deliver each queued message once, reconcile after crashes, back off on errors."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError

from triage.config import Config, DestinationConfig
from triage.secrets import get_secret
from triage.slack.batching import find_in_threads, open_review_thread
from triage.slack.channels import ChannelError, resolve_channel
from triage.slack.client import make_client
from triage.slack.messages import handoff_message, review_message
from triage.store import Store

log = logging.getLogger("triage.delivery")


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


# Slack errors a retry of the same request cannot fix: the delivery is dead-lettered at once.
SLACK_PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "is_archived",
        "missing_scope",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
    }
)


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

    def bind(self, store: Store, destinations: dict[str, Any]) -> None:
        """Before a drain: open a threaded batch when many review messages are due (issue 5)."""
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

    def send(self, key: str, kind: str, item: dict[str, Any]) -> str:
        """Post the message; return ``channel:ts``."""
        thread_ts = self.thread_ts if kind == "review" else None
        return self.post(key, kind, str(item["id"]), render(kind, item), thread_ts=thread_ts)

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
        channel = self.channel_id
        try:
            resp = self.client.chat_postMessage(
                channel=channel,
                text=body["text"],
                blocks=body["blocks"],
                unfurl_links=False,
                unfurl_media=False,
                thread_ts=thread_ts,
                metadata={
                    "event_type": "triage_delivery",
                    "event_payload": {"key": key, "item_id": item_id, "kind": kind},
                },
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", exc))
            detail = "; ".join(str(e) for e in exc.response.get("errors") or [])[:500]
            raise DeliveryError(
                f"slack {self.name} ({self.channel}): {error}" + (f" ({detail})" if detail else ""),
                permanent=error in SLACK_PERMANENT,
            ) from exc
        return f"{resp['channel']}:{resp['ts']}"

    def lookup(self, key: str, item: dict[str, Any]) -> str | None:
        """Search recent channel history for a message carrying this key in its metadata."""
        channel = self.channel_id  # history and replies take an ID, never a name
        cursor: str | None = None
        for _ in range(10):  # bounded: ten pages of 200 recent messages
            resp = self.client.conversations_history(
                channel=channel, limit=200, include_all_metadata=True, cursor=cursor
            )
            messages: list[dict[str, Any]] = resp.get("messages", [])
            for msg in messages:
                payload = (msg.get("metadata") or {}).get("event_payload") or {}
                if payload.get("key") == key:
                    return f"{channel}:{msg['ts']}"
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        # Threaded replies are not in the channel's history; look in recent batch threads too.
        ts = find_in_threads(self.client, channel, self.threads, key)
        return f"{channel}:{ts}" if ts else None


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
        return self.write(key, {"kind": kind, "item_id": item["id"], **render(kind, item)})

    def write(self, key: str, doc: dict[str, Any]) -> str:
        """Write one preview document (with the channel) atomically; return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {"channel": self.channel, **doc}
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
# Checks of the delivery settings (raise ValueError); the handoffs add the alerts check.
CONFIG_CHECKS: list[Callable[[Config], None]] = []


def check_destinations(config: Config) -> None:
    """Refuse delivery settings that cannot work, with the key and the reason.

    Cheap and offline (no credentials, no network): a configuration loader can call it at load.

    Raises:
        ValueError: An unknown destination type, or a check of a handoff integration failed.
    """
    # Imported here, not at the top: the handoff package imports this module to register its types.
    import triage.handoffs  # noqa: F401

    for name, dest in config.destinations.items():
        if dest.type not in DESTINATION_TYPES:
            known = ", ".join(sorted(DESTINATION_TYPES))
            raise ValueError(f"destination '{name}': unknown type '{dest.type}' (known: {known})")
    for check in CONFIG_CHECKS:
        check(config)


def build_destinations(config: Config) -> dict[str, Destination]:
    """Instantiate every configured destination (credentials resolved now, once per run)."""
    check_destinations(config)
    return {
        name: DESTINATION_TYPES[dest.type](dest, config)
        for name, dest in config.destinations.items()
    }


@dataclass(slots=True)
class DeliveryReport:
    """What one drain of the outbox did."""

    sent: int = 0
    previewed: int = 0
    reconciled: int = 0
    failed: int = 0
    dead: int = 0
    # Destinations that wrote previews in this drain (the run summary names only these).
    previewed_by: set[str] = field(default_factory=set)

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


def _mark_done(store: Store, dest: Destination, key: str, ref: str) -> None:
    if dest.preview:
        store.mark_previewed(key, ref)
    else:
        store.mark_sent(key, ref)


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
                # Dead at once, with a reason an operator can act on; announced like any death.
                reason = (
                    f"destination '{row['destination']}' is not configured (removed or renamed?); "
                    f"restore it, then `triage outbox retry --destination {row['destination']}`"
                    if dest is None
                    else "item not found"
                )
                store.mark_failed(key, reason, 0, 0)
                report.dead += 1
                continue
            if row["state"] == "sending":
                try:
                    ref = dest.lookup(key, item)
                except Exception as exc:  # noqa: BLE001 - reported per delivery, never a crash
                    # Unknown whether the crashed attempt got through: stay `sending`, so the next
                    # attempt looks again instead of sending what may already be there.
                    permanent = isinstance(exc, DeliveryError) and exc.permanent
                    state = store.mark_lookup_failed(
                        key,
                        f"lookup: {type(exc).__name__}: {exc}",
                        backoff_seconds(int(row["attempts"]) + 1),
                        0 if permanent else config.max_attempts,
                    )
                    skip.add(key)
                    report.dead += state == "dead"
                    report.failed += state != "dead"
                    continue
                if ref is not None:
                    _mark_done(store, dest, key, ref)
                    report.reconciled += 1
                    continue
            try:
                store.mark_sending(key)
                ref = dest.send(key, kind, item)
            except Exception as exc:  # noqa: BLE001 - network trouble the client's retries could not absorb
                attempts = int(row["attempts"]) + 1
                permanent = isinstance(exc, DeliveryError) and exc.permanent
                error = (
                    str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                )
                state = store.mark_failed(
                    key, error, backoff_seconds(attempts), 0 if permanent else config.max_attempts
                )
                skip.add(key)
                report.dead += state == "dead"
                report.failed += state != "dead"
                continue
            _mark_done(store, dest, key, ref)
            if dest.preview:
                report.previewed += 1
                report.previewed_by.add(dest.name)
            else:
                report.sent += 1
    for hook in AFTER_DRAIN:
        hook(store, config, destinations)
    return report
