"""Dead-letter alerts: each dead-lettered delivery is announced once at ``alerts.destination``."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from triage.config import Config
from triage.destinations.base import DeliveryError, Destination
from triage.destinations.preview import PreviewDestination
from triage.destinations.slack import SlackDestination
from triage.destinations.testimonials import TestimonialsDestination
from triage.destinations.webhook import WebhookDestination
from triage.slack.client import post
from triage.slack.messages import inert
from triage.store import Store

log = logging.getLogger("triage.delivery")

# Destination types that can carry a dead-letter alert (a Slack post, a signed POST, a file).
ALERT_TYPES = frozenset({"slack", "preview", "webhook", "testimonials"})


def alert_text(row: dict[str, Any]) -> str:
    """The announcement of one dead-lettered delivery (the error may quote a server: escaped)."""
    error = inert(str(row.get("last_error") or "unknown error"), 1000)
    dest = inert(str(row["destination"]), 100)
    return (
        f":rotating_light: A {row['kind']} to *{dest}* was "
        f"dead-lettered after {row['attempts']} attempt(s): {error}\n"
        f"item `{row['item_id']}`, key `{row['key']}`. Fix the cause, then "
        f"`triage outbox retry --destination {dest}` requeues it."
    )


def notify(
    dest: Destination,
    kind: str,
    key: str,
    body: dict[str, Any],
    payload: dict[str, Any] | None = None,
) -> str | None:
    """Post an announcement (``text``, optional ``blocks``) to a Slack or preview destination.

    Args:
        dest: The destination (a testimonials destination posts to its Slack channel).
        kind: What is announced (``dead_letter``, ``retrain``, ``drift``): the message metadata's
            event type is ``triage_<kind>``, the preview file's name starts with it.
        key: The announcement's key (in the metadata and the preview's name).
        body: ``text`` (already escaped for Slack) and optionally ``blocks``.
        payload: More metadata (JSON values), kept with the message or preview.

    Returns:
        ``channel:ts`` or the preview file; None when ``dest`` carries no announcements.
    """
    if isinstance(dest, TestimonialsDestination):
        dest = dest.channel  # the marketing channel it posts to
    if isinstance(dest, SlackDestination):
        return post(
            dest.client,
            dest.channel_id,
            body,
            event_type=f"triage_{kind}",
            payload={"key": key, **(payload or {})},
        )
    if isinstance(dest, PreviewDestination):
        return dest.write(f"{kind}-{key}", {"kind": kind, **body, **(payload or {})})
    return None


def _alert(dest: Destination, row: dict[str, Any], text: str) -> str:
    """Deliver one dead-letter alert to ``dest``; return its reference."""
    if isinstance(dest, WebhookDestination):
        return dest.post_alert(row, text)
    if isinstance(dest, PreviewDestination):
        return dest.write(f"dead-{row['key']}", {"kind": "dead_letter", "text": text, **row})
    ref = notify(dest, "dead_letter", row["key"], {"text": text}, {"item_id": row["item_id"]})
    if ref is None:
        # check_alerts() refuses such a configuration before anything is delivered.
        raise DeliveryError(f"alerts cannot go to {dest.name}", permanent=True)
    return ref


def check_alerts(config: Config) -> None:
    """Refuse an ``alerts.destination`` that is missing or cannot carry an alert.

    Raises:
        ValueError: With the key and what is wrong, before anything is delivered.
    """
    alerts = config.alerts_destination
    if not alerts:
        return
    dest = config.destinations.get(str(alerts))
    if dest is None:
        known = ", ".join(sorted(config.destinations)) or "none"
        raise ValueError(
            f"alerts.destination: '{alerts}' is not a configured destination ({known})"
        )
    if dest.type not in ALERT_TYPES:
        raise ValueError(
            f"alerts.destination: '{alerts}' is a {dest.type} destination; dead-letter alerts go "
            f"to a {', '.join(sorted(ALERT_TYPES))} destination"
        )


def announce_dead_letters(
    store: Store, config: Config, destinations: dict[str, Destination]
) -> int:
    """Announce every newly dead-lettered delivery at ``alerts.destination``.

    Each death is announced once: the announcement is recorded with the moment the delivery died,
    so a delivery that is retried and dies again is announced again. A failed announcement is
    retried at the end of the next drain.

    Returns:
        How many announcements were made.
    """
    alerts = config.alerts_destination
    if not alerts:
        return 0
    dest = destinations.get(str(alerts))
    if dest is None:
        log.warning("alerts destination '%s' is not configured", alerts)
        return 0
    done = 0
    for row in store.unannounced_dead():
        try:
            ref = _alert(dest, row, alert_text(row))
        except (SlackApiError, DeliveryError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            log.warning("dead-letter alert not delivered to %s: %s", alerts, error)
            return done
        store.mark_dead_announced(row["key"], row["died_at"], ref)
        done += 1
    return done
