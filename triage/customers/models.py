"""The plain records the customer engines take and return: mentions, handoff outcomes, profiles.

Everything here is a frozen dataclass with UTC-aware datetimes, so the engines are pure functions
of their inputs and the store, the flows and the tests can build them from rows, JSON or by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# What the read-back flow records about a handoff. The destinations' own states map onto these:
# helpdesk ticket new/open/pending/hold -> "open", solved/closed -> "resolved"; tracker issue open ->
# "open", closed as completed -> "resolved", closed as not planned -> "rejected"; CRM deal open ->
# "open", closed won -> "won", closed lost -> "lost". "unknown" is what a failed read-back leaves:
# it never counts as resolved, ignored or bounced, so an API outage changes no customer's stage.
OutcomeState = Literal["open", "resolved", "rejected", "won", "lost", "unknown"]
OUTCOME_STATES: tuple[str, ...] = ("open", "resolved", "rejected", "won", "lost", "unknown")


def require_utc(value: datetime | None, what: str) -> None:
    """Raise ValueError for a naive datetime: every time in these engines is compared as UTC."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")


@dataclass(frozen=True, slots=True)
class Mention:
    """One stored, classified item and the author who wrote it, as the customer engines see it.

    Attributes:
        item_id: The store's item id.
        source: Connector name (``social``, ``app-reviews``...).
        created_at: When the author wrote it (UTC-aware).
        platform: Where the handle lives (``twitter``, ``reddit``, ``app_store``...): the item's
            ``source_type`` when it has one, else the source name. Handles are only compared
            within one platform.
        handle: The author's handle on that platform, if any.
        display_name: The name shown next to the handle.
        profile_url: Link to the author's profile.
        email: The author's e-mail where the source has one (e-mail, web forms, helpdesks).
        followers: Follower count where the source knows it.
        label: Primary label (``kudos``, ``service_issue``...), None while unclassified.
        department: Where routing sent it, if anywhere.
        text: The mention's text (untrusted public text).
        url: Link to the mention itself.
    """

    item_id: str
    source: str
    created_at: datetime
    platform: str | None = None
    handle: str | None = None
    display_name: str | None = None
    profile_url: str | None = None
    email: str | None = None
    followers: int | None = None
    label: str | None = None
    department: str | None = None
    text: str = ""
    url: str | None = None

    def __post_init__(self) -> None:
        require_utc(self.created_at, f"mention {self.item_id}: created_at")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Mention:
        """Build from a store row: the ``items`` columns plus ``label``, ``department`` and,
        where the source has one, ``email`` (absent keys are None).

        ``platform`` is the row's ``source_type`` (``twitter``, ``app_store``...), else its source.
        """
        followers = row.get("author_followers")
        return cls(
            item_id=str(row["id"]),
            source=str(row["source"]),
            created_at=row["created_at"],
            platform=row.get("source_type") or None,
            handle=row.get("author_handle") or None,
            display_name=row.get("author_name") or None,
            profile_url=row.get("author_url") or None,
            email=row.get("email") or None,
            followers=int(followers) if followers is not None else None,
            label=row.get("label") or None,
            department=row.get("department") or None,
            text=str(row.get("text") or ""),
            url=row.get("url") or None,
        )


@dataclass(frozen=True, slots=True)
class HandoffOutcome:
    """What became of one handoff of one item to a department (read back from its tool).

    Attributes:
        item_id: The item that was handed off.
        department: ``support``, ``sales``, ``product``, ``marketing``...
        created_at: When the handoff was made (ticket, lead or issue created).
        first_response_at: The department's first public reply, if any.
        resolved_at: When it was solved, closed, won or lost, if it was.
        state: One of :data:`OUTCOME_STATES`.
    """

    item_id: str
    department: str
    created_at: datetime
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    state: OutcomeState = "open"

    def __post_init__(self) -> None:
        if self.state not in OUTCOME_STATES:
            raise ValueError(
                f"handoff of {self.item_id}: state {self.state!r} is not one of {OUTCOME_STATES}"
            )
        for name in ("created_at", "first_response_at", "resolved_at"):
            require_utc(getattr(self, name), f"handoff of {self.item_id}: {name}")

    @property
    def is_resolved(self) -> bool:
        """Solved with a fix (or, for a deal, closed either way): the customer got an answer."""
        return self.state in ("resolved", "won", "lost") and self.resolved_at is not None


@dataclass(frozen=True, slots=True)
class Identity:
    """One way a customer appears: a handle on a platform, an e-mail address, or a lone profile.

    Attributes:
        key: The stable identity key (``handle:twitter:ann_k``, ``email:ann@example.com``,
            ``url:app_store:https://...``, ``item:<item id>``); customer ids derive from these.
        platform: Platform of the handle, ``email`` for an address.
        handle: Normalised handle (lower case, no leading ``@`` or ``u/``), if any.
        display_name: The latest display name seen for it.
        profile_url: The latest profile link seen for it.
        email: The normalised address for an e-mail identity.
        followers: The latest follower count seen for it.
        first_seen: The time of its first mention.
    """

    key: str
    platform: str
    handle: str | None
    display_name: str | None
    profile_url: str | None
    email: str | None
    followers: int | None
    first_seen: datetime


@dataclass(frozen=True, slots=True)
class Profile:
    """One customer: every identity merged by the rules, and their mentions in time order.

    Attributes:
        id: Stable customer id (``cus_`` + 12 hex digits), see :func:`customer_id`.
        identities: Handles and e-mails, earliest first.
        mentions: All their mentions, oldest first.
        merged_by: Why identities were joined (``email``, ``manual``), each once, sorted.
    """

    id: str
    identities: tuple[Identity, ...]
    mentions: tuple[Mention, ...]
    merged_by: tuple[str, ...] = field(default=())

    @property
    def display_name(self) -> str:
        """The most recent display name, else a handle, else an e-mail, else the id."""
        for mention in reversed(self.mentions):
            if mention.display_name:
                return mention.display_name
        for ident in self.identities:
            if ident.handle:
                return ident.handle
        return self.emails[0] if self.emails else self.id

    @property
    def emails(self) -> tuple[str, ...]:
        """The customer's normalised e-mail addresses."""
        return tuple(sorted({i.email for i in self.identities if i.email}))

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms they were seen on, sorted."""
        return tuple(sorted({i.platform for i in self.identities}))

    @property
    def reach(self) -> int:
        """Followers across platforms: the latest count of each identity, summed."""
        return sum(i.followers or 0 for i in self.identities)

    @property
    def first_seen(self) -> datetime:
        """Time of the first mention."""
        return self.mentions[0].created_at

    @property
    def last_seen(self) -> datetime:
        """Time of the latest mention."""
        return self.mentions[-1].created_at
