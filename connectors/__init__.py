"""Source connectors: one module per source, listed in ``CONNECTORS``."""

from __future__ import annotations

from typing import Any, cast

from connectors import (
    appstore,
    bluesky,
    discourse,
    file,
    hackernews,
    imap,
    mastodon,
    reddit,
    rss,
    slack_community,
    webhook,
    x,
    youtube,
)
from connectors.base import Connector, ConnectorError, FetchBatch, SourceContext
from triage.config import ConfigError

# An explicit registry: adding a source is one module plus one line here.
CONNECTORS: dict[str, Connector] = {
    "file": cast(Connector, file),
    "rss": cast(Connector, rss),
    "hackernews": cast(Connector, hackernews),
    "reddit": cast(Connector, reddit),
    "x": cast(Connector, x),
    "mastodon": cast(Connector, mastodon),
    "bluesky": cast(Connector, bluesky),
    "youtube": cast(Connector, youtube),
    "discourse": cast(Connector, discourse),
    "slack_community": cast(Connector, slack_community),
    "email": cast(Connector, imap),
    "webhook": cast(Connector, webhook),
    "appstore": cast(Connector, appstore),
}


def get_connector(kind: str) -> Connector:
    """Return the connector module for a source type or fail with the list of known types."""
    try:
        return CONNECTORS[kind]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise ConnectorError(f"unknown source type '{kind}' (known: {known})") from None


def validate_source(kind: str, name: str, settings: dict[str, Any]) -> None:
    """Check a configured source against its connector's own description of its settings.

    Every key must be one the connector lists in ``SETTINGS`` (a misspelt key is an error, not a
    silently ignored setting); a connector with a ``validate(name, settings)`` also checks values.

    Args:
        kind: The source's ``type``.
        name: The source's ``name`` (for messages).
        settings: The source's settings (its keys other than name, type and enabled).

    Raises:
        ConfigError: Naming the source and the offending key.
    """
    connector = CONNECTORS.get(kind)
    if connector is None:
        known = ", ".join(sorted(CONNECTORS))
        raise ConfigError(f"source '{name}': unknown type '{kind}' (known: {known})")
    for key in settings:
        if key not in connector.SETTINGS:
            known = ", ".join(connector.SETTINGS)
            raise ConfigError(
                f"source '{name}' (type {kind}): unknown setting '{key}' (known: {known})"
            )
    check = getattr(connector, "validate", None)
    if check is not None:
        check(name, settings)


__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorError",
    "FetchBatch",
    "SourceContext",
    "get_connector",
    "validate_source",
]
