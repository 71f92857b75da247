"""Destinations: where the outbox delivers (Slack channels, previews and department handoffs).

The registry below is the whole list of destination types: adding one is one module with a
``build(dest, config)`` factory plus one line here. Each module states its contract in its
docstring; :class:`Destination` is the contract they all keep. Without credentials a destination
writes JSON previews instead of calling out, so the demo runs with no secrets.
"""

from __future__ import annotations

from triage.config import Config
from triage.destinations import (
    github,
    hubspot,
    preview,
    slack,
    testimonials,
    webhook,
    zendesk,
)
from triage.destinations.alerts import announce_dead_letters, check_alerts
from triage.destinations.base import DeliveryError, Destination, DestinationFactory, render
from triage.destinations.handoff import HandoffDestination
from triage.store import Store

DESTINATION_TYPES: dict[str, DestinationFactory] = {
    "slack": slack.build,
    "preview": preview.build,
    "testimonials": testimonials.build,
    "zendesk": zendesk.build,
    "webhook": webhook.build,
    "hubspot": hubspot.build,
    "github": github.build,
}


def check_destinations(config: Config) -> None:
    """Refuse delivery settings that cannot work, with the key and the reason.

    Cheap and offline (no credentials, no network): a configuration loader can call it at load.

    Raises:
        ValueError: An unknown destination type, or an alerts destination that cannot carry alerts.
    """
    for name, dest in config.destinations.items():
        if dest.type not in DESTINATION_TYPES:
            known = ", ".join(sorted(DESTINATION_TYPES))
            raise ValueError(f"destination '{name}': unknown type '{dest.type}' (known: {known})")
    check_alerts(config)


def build_destinations(config: Config) -> dict[str, Destination]:
    """Instantiate every configured destination (credentials resolved now, once per run)."""
    check_destinations(config)
    return {
        name: DESTINATION_TYPES[dest.type](dest, config)
        for name, dest in config.destinations.items()
    }


def after_drain(store: Store, config: Config, destinations: dict[str, Destination]) -> int:
    """What follows a drain: thread notes that waited, then dead-letter alerts.

    Review messages and handoffs of one item drain in no particular order; notes that waited for
    their review thread go out once the whole batch has been sent.

    Returns:
        How many dead-lettered deliveries were announced.
    """
    for dest in destinations.values():
        if isinstance(dest, HandoffDestination):
            dest.flush_notes()
    return announce_dead_letters(store, config, destinations)


__all__ = [
    "DESTINATION_TYPES",
    "DeliveryError",
    "Destination",
    "DestinationFactory",
    "after_drain",
    "build_destinations",
    "check_destinations",
    "render",
]
