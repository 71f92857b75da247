"""The destination contract: what the outbox needs from anything it delivers to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from triage.config import Config, DestinationConfig
from triage.models import DeliveryItem
from triage.slack.messages import handoff_message, review_message
from triage.store import Store


class DeliveryError(RuntimeError):
    """A delivery failed; ``permanent`` ones are dead-lettered at once instead of retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        """Create the error; permanent errors (bad channel, revoked token) are not retried."""
        super().__init__(message)
        self.permanent = permanent


class Destination(Protocol):
    """Something the outbox can deliver to (README, "Destinations" and "Department handoffs")."""

    name: str
    # True when "sending" only writes a JSON preview (no credentials): counted apart from sends.
    preview: bool

    def bind(self, store: Store, destinations: dict[str, Destination]) -> None:
        """Before a drain: keep what the destination needs from the store and its peers."""
        ...

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Deliver one message and return the destination's reference for it."""
        ...

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Return the reference of an earlier delivery with this key, if the destination has it."""
        ...


# Builds a destination from its configuration (credentials are resolved here, once per run).
DestinationFactory = Callable[[DestinationConfig, Config], Destination]


def render(kind: str, item: DeliveryItem) -> dict[str, Any]:
    """Build the message body (``text`` and ``blocks``) of a delivery kind."""
    if kind == "review":
        return review_message(item)
    return handoff_message(item, item.department or "unknown")
