"""Source connectors: one module per source, listed in ``CONNECTORS``."""

from __future__ import annotations

from typing import cast

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


__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorError",
    "FetchBatch",
    "SourceContext",
    "get_connector",
]
