"""One profile per person across sources, merged by explicit rules only.

Each mention's author becomes an *identity node*:

- ``handle:<platform>:<handle>`` when the mention has a handle. The same handle on the same platform
  is the same node, so every mention of ``@ann_k`` on Twitter lands in one profile. Handles are
  compared case-insensitively without a leading ``@`` or ``u/``; the same handle on another
  platform is another node (``@sam`` on Twitter and ``u/sam`` on Reddit may be two people).
- ``email:<address>`` for a mention without a handle but with an e-mail address.
- ``url:<platform>:<profile url>`` for a mention with neither, but a profile link.
- ``item:<item id>`` otherwise: an anonymous author is a customer of one mention.

Nodes are joined (union-find) by exactly three rules:

1. **email** — a mention that carries an e-mail address joins its handle node to the address's node,
   so two handles that used the same address (compared lower-case, ``Name <a@b>`` and ``mailto:``
   stripped) are one person. Different addresses never join anything.
2. **handle** — implicit in the node key above: same platform, same normalised handle.
3. **manual** — :class:`ManualMerge` pairs, as given by ``triage customers merge A B``.

Display names never join anything: "Sam" on Twitter and "Sam" on the App Store stay two customers
until an address or a manual merge says otherwise.

A customer's id is ``cus_`` + the first 12 hex digits of the SHA-256 of one of its identity keys:
the one first seen (ties: the smaller key). Rerunning on the same mentions gives the same ids, in
any input order; a merge keeps the id of the older profile. :func:`resolve_reference` maps an id
back to its key, so manual merges can be stored as keys that survive later merges.

Example:
    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 11, 1, tzinfo=UTC)
    >>> res = resolve_profiles([
    ...     Mention("1", "social", t, platform="twitter", handle="@Ann_K", email="ann@example.com"),
    ...     Mention("2", "web-form", t, platform="web_form", email="ANN@example.com"),
    ...     Mention("3", "social", t, platform="reddit", handle="u/ann_k"),
    ... ])
    >>> len(res.profiles)
    2
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr

from triage.customers.models import Identity, Mention, Profile

# Different connectors name one platform differently (a file export says "twitter", the X
# connector's source_type is "x_post"; Reddit posts and comments are one account): handles are
# compared within the canonical platform.
PLATFORM_ALIASES: Mapping[str, str] = {
    "x": "twitter",
    "x_post": "twitter",
    "tweet": "twitter",
    "twitter.com": "twitter",
    "x.com": "twitter",
    "mastodon_post": "mastodon",
    "reddit_post": "reddit",
    "reddit_comment": "reddit",
    "bluesky_post": "bluesky",
    "youtube_comment": "youtube",
    "hackernews_story": "hackernews",
    "hackernews_comment": "hackernews",
    "app_review": "app_store",
    "appstore": "app_store",
    "googleplay": "google_play",
}
# Platforms whose "handle" is an e-mail address (IMAP, web forms, helpdesks): there the address in
# the handle field is used as the e-mail, so a form message and a ticket from one address merge.
EMAIL_PLATFORMS: frozenset[str] = frozenset({"email", "web_form", "helpdesk", "zendesk"})

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID_PREFIX = "cus_"


@dataclass(frozen=True, slots=True)
class ManualMerge:
    """Two references to join, as a person decided (``triage customers merge A B``).

    Each side may be a customer id (``cus_...``), an identity key (``handle:twitter:ann_k``,
    ``email:ann@example.com``), ``platform:handle`` (``twitter:@ann_k``) or a bare e-mail address.
    Store merges as identity keys (see :func:`resolve_reference`): ids can change when profiles
    merge, keys do not.
    """

    a: str
    b: str


@dataclass(frozen=True, slots=True)
class Link:
    """Why two identities are in one profile: the edge of the union that joined them."""

    a: str
    b: str
    rule: str  # "email" or "manual"; same-handle mentions share a node and need no link


@dataclass(slots=True)
class Resolution:
    """The result of :func:`resolve_profiles`.

    Attributes:
        profiles: Every customer, oldest first (ties by id).
        links: Per customer id, the joins that made it (email and manual rules).
        unresolved_merges: Manual merges naming something no mention has; they change nothing.
    """

    profiles: list[Profile]
    links: dict[str, list[Link]] = field(default_factory=dict)
    unresolved_merges: list[ManualMerge] = field(default_factory=list)

    def by_item(self) -> dict[str, str]:
        """Item id -> customer id."""
        return {m.item_id: p.id for p in self.profiles for m in p.mentions}

    def get(self, ref: str) -> Profile | None:
        """The profile a reference names (customer id, identity key, ``platform:handle``, e-mail)."""
        keys = {i.key: p for p in self.profiles for i in p.identities}
        ids = {p.id: p for p in self.profiles}
        if ref in ids:
            return ids[ref]
        key = resolve_reference(ref, keys)
        return keys.get(key) if key else None


def normalize_platform(platform: str | None, source: str) -> str:
    """The canonical platform name: the mention's platform, else its source, lower case."""
    name = (platform or source).strip().lower()
    return PLATFORM_ALIASES.get(name, name)


def normalize_handle(handle: str | None) -> str | None:
    """Lower case, trimmed, without a leading ``@``, ``u/`` or ``/u/``; None when nothing is left.

    Example:
        >>> normalize_handle(" @Ann_K "), normalize_handle("/u/Throwaway_PKM")
        ('ann_k', 'throwaway_pkm')
    """
    if not handle:
        return None
    text = handle.strip().lower()
    for prefix in ("/u/", "u/", "@"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text or None


def normalize_email(value: str | None) -> str | None:
    """A comparable e-mail address, or None when ``value`` is not one.

    ``Ann <Ann@Example.com>``, ``mailto:ann@example.com`` and ``ANN@EXAMPLE.COM`` all give
    ``ann@example.com``. Plus-tags and dots are kept: ``ann+shop@`` may be a shared alias, and
    merging on a guess is exactly what these rules avoid.
    """
    if not value:
        return None
    text = value.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    address = parseaddr(text)[1].strip().lower()
    return address if _EMAIL.match(address) else None


def customer_id(identity_key: str) -> str:
    """The customer id derived from an identity key (``cus_`` + 12 hex digits of its SHA-256)."""
    return _ID_PREFIX + hashlib.sha256(identity_key.encode("utf-8")).hexdigest()[:12]


def _node(m: Mention) -> tuple[str, str, str | None, str | None]:
    """(node key, platform, handle, email) for a mention's author."""
    platform = normalize_platform(m.platform, m.source)
    email = normalize_email(m.email)
    handle = normalize_handle(m.handle)
    if handle and platform in EMAIL_PLATFORMS and normalize_email(handle):
        email = email or normalize_email(handle)
        handle = None
    if handle:
        return f"handle:{platform}:{handle}", platform, handle, email
    if email:
        return f"email:{email}", "email", None, email
    if m.profile_url:
        return f"url:{platform}:{m.profile_url.strip().lower()}", platform, None, None
    return f"item:{m.item_id}", platform, None, None


def resolve_reference(ref: str, keys: Iterable[str]) -> str | None:
    """The identity key a merge reference names among ``keys``, or None.

    Args:
        ref: A customer id, an identity key, ``platform:handle`` or a bare e-mail address.
        keys: The identity keys that exist.

    Returns:
        The matching key, or None when nothing matches.
    """
    known = set(keys)
    ref = ref.strip()
    if ref in known:
        return ref
    if ref.startswith(_ID_PREFIX):
        return next((k for k in sorted(known) if customer_id(k) == ref), None)
    email = normalize_email(ref)
    if email and not ref.startswith("@") and f"email:{email}" in known:
        return f"email:{email}"
    if ":" in ref:
        platform, _, handle = ref.partition(":")
        key = f"handle:{normalize_platform(platform, platform)}:{normalize_handle(handle)}"
        if key in known:
            return key
    return None


class _UnionFind:
    """Union-find over identity keys that also knows which sets hold a mention of their own."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.authored: dict[str, bool] = {}

    def add(self, x: str, authored: bool) -> None:
        self.parent.setdefault(x, x)
        root = self.find(x)
        self.authored[root] = self.authored.get(root, False) or authored

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression keeps long merge chains cheap
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> tuple[bool, bool]:
        """Join the sets of a and b: (whether they were apart, whether both had authored)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False, False
        people = self.authored[ra] and self.authored[rb]
        # The smaller key becomes the root so the structure does not depend on input order.
        lo, hi = sorted((ra, rb))
        self.parent[hi] = lo
        self.authored[lo] = self.authored[ra] or self.authored[rb]
        return True, people


def resolve_profiles(
    mentions: Iterable[Mention], merges: Sequence[ManualMerge | tuple[str, str]] = ()
) -> Resolution:
    """Group mentions into customer profiles by the email, handle and manual rules.

    Args:
        mentions: Every mention to consider (any order; the same item id twice counts once).
        merges: Manual merges, applied after the automatic rules; see :class:`ManualMerge`.

    Returns:
        The profiles with stable ids, the joins behind each, and merges that named nobody.
    """
    items = {m.item_id: m for m in mentions}
    ordered = sorted(items.values(), key=lambda x: (x.created_at, x.item_id))
    uf = _UnionFind()
    # node key -> (platform, handle, email); the mentions written as that node; and, for addresses,
    # also the mentions that carried the address (they describe it: first seen, display name).
    info: dict[str, tuple[str, str | None, str | None]] = {}
    own: dict[str, list[Mention]] = defaultdict(list)
    seen: dict[str, list[Mention]] = defaultdict(list)
    edges: list[Link] = []
    for m in ordered:
        key, platform, handle, email = _node(m)
        info.setdefault(key, (platform, handle, email if key.startswith("email:") else None))
        uf.add(key, authored=True)
        own[key].append(m)
        seen[key].append(m)
        if email and key != f"email:{email}":
            email_key = f"email:{email}"
            info.setdefault(email_key, ("email", None, email))
            uf.add(email_key, authored=False)
            seen[email_key].append(m)
            edges.append(Link(key, email_key, "email"))
    unresolved: list[ManualMerge] = []
    for pair in merges:
        merge = pair if isinstance(pair, ManualMerge) else ManualMerge(*pair)
        a, b = resolve_reference(merge.a, info), resolve_reference(merge.b, info)
        if a is None or b is None:
            unresolved.append(merge)
        else:
            edges.append(Link(a, b, "manual"))
    kept: dict[str, list[tuple[Link, bool]]] = defaultdict(list)
    for edge in edges:
        joined, people = uf.union(edge.a, edge.b)
        if joined:
            kept[edge.a].append((edge, people))

    groups: dict[str, list[str]] = defaultdict(list)
    for key in info:
        groups[uf.find(key)].append(key)
    profiles: list[Profile] = []
    links: dict[str, list[Link]] = {}
    for keys in groups.values():
        idents = sorted(
            (_identity(k, info[k], seen[k]) for k in keys), key=lambda i: (i.first_seen, i.key)
        )
        cid = customer_id(idents[0].key)
        found = sorted((m for k in keys for m in own[k]), key=lambda x: (x.created_at, x.item_id))
        joins = sorted((j for k in keys for j in kept[k]), key=lambda j: (j[0].rule, j[0].a))
        # A rule "merged" this profile only where it joined two sets that each had mentions: an
        # address seen on one handle alone explains nothing.
        rules = tuple(sorted({link.rule for link, people in joins if people}))
        profiles.append(Profile(cid, tuple(idents), tuple(found), rules))
        links[cid] = [link for link, _ in joins]
    profiles.sort(key=lambda p: (p.first_seen, p.id))
    return Resolution(profiles, links, unresolved)


def _identity(key: str, info: tuple[str, str | None, str | None], seen: list[Mention]) -> Identity:
    platform, handle, email = info
    latest = seen[::-1]
    return Identity(
        key=key,
        platform=platform,
        handle=handle,
        display_name=next((m.display_name for m in latest if m.display_name), None),
        profile_url=None
        if key.startswith("email:")
        else next((m.profile_url for m in latest if m.profile_url), None),
        email=email,
        # Followers belong to an account; an address has none (and must not count its handle twice).
        followers=None
        if key.startswith("email:")
        else next((m.followers for m in latest if m.followers is not None), None),
        first_seen=seen[0].created_at,
    )
