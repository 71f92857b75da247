"""The author's e-mail address, for the destinations that file one (Zendesk, HubSpot).

Connectors hand the author over as the source wrote it: an RSS 2.0 ``<author>`` is
``addr (Name)`` (feedparser returns the whole string), a CSV or form export may say
``Name <addr>``, and the ``acct`` of a remote Mastodon account is ``user@instance``: a fediverse
handle shaped like an address, which nobody reads mail at. Zendesk refuses a malformed requester
e-mail (422 ``RecordInvalid``: the ticket is never created) and HubSpot a malformed contact e-mail
(``INVALID_EMAIL``), while a handle taken for an address files the customer under someone else's
(or nobody's) mailbox. So an author is an address only when :func:`email_address` finds exactly
one plausible addr-spec in the handle and the item does not come from a platform whose handles
only look like addresses (:func:`social`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from triage.config import Config
from triage.models import DeliveryItem

# Platforms whose authors are handles, never mailboxes, by connector type or by ``source_type``
# (each connector's default, and the names exports and webhooks use for the same platforms). The
# fediverse ones matter most: ``alice@fosstodon.org`` passes any address check.
SOCIAL_PLATFORMS = frozenset(
    {
        "mastodon",
        "fediverse",
        "pleroma",
        "akkoma",
        "misskey",
        "gotosocial",
        "friendica",
        "pixelfed",
        "peertube",
        "lemmy",
        "threads",
        "bluesky",
        "x",
        "twitter",
        "tweet",
        "reddit",
        "youtube",
        "hackernews",
        "discourse",
        "forum",
        "slack",
        "community_chat",
    }
)

# RFC 5321 limits: 64 octets of local part, 254 for the whole path an SMTP server accepts.
MAX_LOCAL = 64
MAX_ADDRESS = 254
# A dot-atom local part (no quoted strings: HubSpot refuses them, nobody needs them here) and a
# host name of at least two labels ending in a letters-only (or punycode) top-level domain.
# ASCII only: an internationalised address is left out rather than risk a refused request.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(
    rf"(?:{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+(?:[A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})"
)
# The two ways a display name travels with an address.
_NAME_ANGLE = re.compile(r"(?P<name>[^<>]*)<(?P<addr>[^<>]*)>")  # Jane Doe <jane@x.com>
_ADDR_PAREN = re.compile(r"(?P<addr>[^\s()<>]+)\s*\((?P<name>[^()]*)\)")  # jane@x.com (Jane)


class Address(NamedTuple):
    """An e-mail address found in an author field, with the name written next to it."""

    email: str
    # The display name of ``Name <addr>`` / ``addr (Name)``; None for a bare address.
    name: str | None = None


def email_address(value: str | None) -> Address | None:
    """The single e-mail address ``value`` holds, if it holds exactly one plausible address.

    Accepts a bare address, ``mailto:addr``, ``Name <addr>`` and ``addr (Name)``; anything
    else (spaces inside the address, two ``@``, a host without a dot, over-long parts) is None.

    Args:
        value: An author handle as a connector stored it.

    Returns:
        The address (as written, trimmed) and its display name, or None.
    """
    text = (value or "").strip()
    if not text:
        return None
    name: str | None = None
    match = _NAME_ANGLE.fullmatch(text) or _ADDR_PAREN.fullmatch(text)
    if match:
        text = match.group("addr").strip()
        name = match.group("name").strip().strip('"').strip() or None
    if text[:7].lower() == "mailto:":
        text = text[7:]
    if len(text) > MAX_ADDRESS or not _ADDR_SPEC.fullmatch(text):
        return None
    if len(text.rpartition("@")[0]) > MAX_LOCAL:
        return None
    return Address(text, name)


def social(item: DeliveryItem, connector: str | None = None) -> bool:
    """Whether the item comes from a platform whose author handles are not mailboxes.

    Both the connector type and ``source_type`` count: a ``mastodon`` source may be configured
    with another ``source_type``, and a file export or webhook may carry ``mastodon`` as its
    ``source_type``. A ``source_type`` such as ``mastodon_post`` counts by its first word.

    Args:
        item: The delivered item.
        connector: The connector type of the item's source (``config.sources``), if known.

    Returns:
        True when either names a platform in :data:`SOCIAL_PLATFORMS`.
    """
    for value in (connector, item.source_type):
        kind = (value or "").strip().lower()
        if kind and (kind in SOCIAL_PLATFORMS or kind.split("_", 1)[0] in SOCIAL_PLATFORMS):
            return True
    return False


def source_connector(config: Config, source: str) -> str | None:
    """The connector type of the configured source named ``source`` (None if not configured)."""
    return next((s.type for s in config.sources if s.name == source), None)


def author_email(item: DeliveryItem, connector: str | None = None) -> Address | None:
    """The author's e-mail address, when the handle is one and the source's handles can be.

    Args:
        item: The delivered item (already redacted for the destination: an address the
            destination may not see is a placeholder by now, and gives None).
        connector: The connector type of the item's source, if known.

    Returns:
        The address and the display name written with it, or None.
    """
    if social(item, connector):
        return None
    return email_address(item.author.handle)


def author_name(item: DeliveryItem, found: Address) -> str:
    """A person's name for the record: the author's name unless it is just the handle again.

    An RSS author string is stored as both handle and name, so ``lawyer@x.net (Lawyer)`` is
    named "Lawyer", and an author known only by an address is named by the address.
    """
    name = (item.author.name or "").strip()
    if name and name != (item.author.handle or "").strip():
        return name
    return found.name or found.email
