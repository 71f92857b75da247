"""Department handoffs: each department receives its items in its own tool, exactly once.

Importing this package registers the destination types ``zendesk``, ``webhook``, ``hubspot``,
``github`` and ``testimonials`` with the outbox, and the hook that announces dead-lettered
deliveries in Slack. Without credentials a destination writes JSON previews instead of calling out,
like the Slack destinations do, so the demo runs with no secrets.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from triage.config import Config, DestinationConfig
from triage.delivery import (
    AFTER_DRAIN,
    CONFIG_CHECKS,
    DESTINATION_TYPES,
    DeliveryError,
    Destination,
    PreviewDestination,
    SlackDestination,
)
from triage.handoffs.base import HandoffDestination
from triage.handoffs.github import GitHubDestination
from triage.handoffs.hubspot import HubSpotDestination
from triage.handoffs.testimonials import TestimonialsDestination
from triage.handoffs.webhook import WebhookDestination
from triage.handoffs.zendesk import ZendeskDestination, credentials
from triage.secrets import secret
from triage.slack.messages import inert
from triage.store import Store

log = logging.getLogger("triage.handoffs")

# Destination types that can carry a dead-letter alert (a Slack post, a signed POST, a file).
ALERT_TYPES = frozenset({"slack", "preview", "webhook", "testimonials"})


def _preview(dest: DestinationConfig, config: Config) -> Destination:
    return PreviewDestination(dest.name, config.outbox_dir, dest.settings.get("channel"))


def _zendesk(dest: DestinationConfig, config: Config) -> Destination:
    email, token = credentials(dest.settings)
    if not email or not token:
        return _preview(dest, config)
    return ZendeskDestination(dest, config, email, token)


def _webhook(dest: DestinationConfig, config: Config) -> Destination:
    if not dest.settings.get("url"):
        raise ValueError(f"destination '{dest.name}': webhook needs 'url'")
    key = secret(dest.settings, "secret_env", "TRIAGE_WEBHOOK_SECRET", "secret_block")
    if not key:
        return _preview(dest, config)
    return WebhookDestination(dest, config, key)


def _hubspot(dest: DestinationConfig, config: Config) -> Destination:
    token = secret(dest.settings, "token_env", "HUBSPOT_TOKEN", "token_secret")
    if not token:
        return _preview(dest, config)
    return HubSpotDestination(dest, config, token)


def _github(dest: DestinationConfig, config: Config) -> Destination:
    if not dest.settings.get("repo") or "/" not in str(dest.settings["repo"]):
        raise ValueError(f"destination '{dest.name}': github needs 'repo: owner/name'")
    token = secret(dest.settings, "token_env", "GITHUB_TOKEN", "token_secret")
    if not token:
        return _preview(dest, config)
    return GitHubDestination(dest, config, token)


def _testimonials(dest: DestinationConfig, config: Config) -> Destination:
    channel = str(dest.settings.get("channel") or "")
    token = secret(dest.settings, "token_env", "SLACK_BOT_TOKEN", "token_secret")
    inner: SlackDestination | PreviewDestination = (
        SlackDestination(dest.name, channel, token)
        if token and channel
        else PreviewDestination(dest.name, config.outbox_dir, channel)
    )
    return TestimonialsDestination(dest, config, inner)


DESTINATION_TYPES.update(
    {
        "zendesk": _zendesk,
        "webhook": _webhook,
        "hubspot": _hubspot,
        "github": _github,
        "testimonials": _testimonials,
    }
)


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


def _alert(dest: Destination, row: dict[str, Any], text: str) -> str:
    """Deliver one dead-letter alert to ``dest``; return its reference."""
    if isinstance(dest, TestimonialsDestination):
        dest = dest.channel  # the marketing channel it posts to
    if isinstance(dest, SlackDestination):
        resp = dest.client.chat_postMessage(
            channel=dest.channel_id,
            text=text,
            unfurl_links=False,
            unfurl_media=False,
            metadata={
                "event_type": "triage_dead_letter",
                "event_payload": {"key": row["key"], "item_id": row["item_id"]},
            },
        )
        return f"{resp['channel']}:{resp['ts']}"
    if isinstance(dest, WebhookDestination):
        return dest.post_alert(row, text)
    if isinstance(dest, PreviewDestination):
        return dest.write(f"dead-{row['key']}", {"kind": "dead_letter", "text": text, **row})
    # check_alerts() refuses such a configuration before anything is delivered.
    raise DeliveryError(f"alerts cannot go to {dest.name}", permanent=True)


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


def _after_drain(store: Store, config: Config, destinations: dict[str, Destination]) -> None:
    # Review messages and handoffs of one item drain in no particular order; notes that waited
    # for their review thread go out now that the whole batch has been sent.
    for dest in destinations.values():
        if isinstance(dest, HandoffDestination):
            dest.flush_notes()
    announce_dead_letters(store, config, destinations)


if _after_drain not in AFTER_DRAIN:
    AFTER_DRAIN.append(_after_drain)
if check_alerts not in CONFIG_CHECKS:
    CONFIG_CHECKS.append(check_alerts)
