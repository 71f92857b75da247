"""The records every stage agrees on: mentions, quarantined records and labels."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

LABELS: tuple[str, ...] = ("kudos", "sales_lead", "feature_request", "service_issue", "other")
# The owner who must act first wins the primary label (DESIGN.md); `other` never outranks a real intent.
PRIORITY: tuple[str, ...] = ("service_issue", "sales_lead", "feature_request", "kudos", "other")
DEPARTMENTS: tuple[str, ...] = ("marketing", "sales", "product", "support")

# Longest text we keep verbatim. Longer texts are cut with a marker, never dropped.
MAX_TEXT_CHARS = 20_000
TRUNCATION_MARKER = " […truncated]"


# The column layout of the ``items`` table as an Arrow schema: what :meth:`Mention.to_row` gives,
# and what columnar connectors hand to the store directly.
ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("external_id", pa.string()),
        ("url", pa.string()),
        ("author_handle", pa.string()),
        ("author_name", pa.string()),
        ("author_url", pa.string()),
        ("author_followers", pa.int64()),
        ("text", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("thread", pa.string()),
        ("in_reply_to", pa.string()),
        ("language", pa.string()),
        ("source_type", pa.string()),
        ("raw", pa.string()),
    ]
)


def item_id(source: str, external_id: str) -> str:
    """Return the stable item id for a source's own id.

    Args:
        source: Connector (source) name from the configuration.
        external_id: The source's own identifier of the item.

    Returns:
        A 20-character hex id; the same inputs always give the same id, so a re-fetch never
        creates a second item.
    """
    digest = hashlib.blake2b(f"{source}\x1f{external_id}".encode(), digest_size=10)
    return digest.hexdigest()


@dataclass(slots=True)
class Author:
    """Who wrote a mention, as far as the source tells."""

    handle: str | None = None
    name: str | None = None
    url: str | None = None
    followers: int | None = None


@dataclass(slots=True)
class Mention:
    """One piece of feedback in the shape every connector yields (DESIGN.md, the mention record)."""

    source: str
    external_id: str
    text: str
    created_at: datetime
    url: str | None = None
    author: Author = field(default_factory=Author)
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    thread: str | None = None
    in_reply_to: str | None = None
    language: str | None = None
    source_type: str | None = None
    # The source's own record for audit: a dict, or the original JSON text when we have it.
    raw: dict[str, Any] | str = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The stable item id derived from ``(source, external_id)``."""
        return item_id(self.source, self.external_id)

    def to_row(self) -> dict[str, Any]:
        """Flatten the mention into the column layout of the ``items`` table."""
        return {
            "id": self.id,
            "source": self.source,
            "external_id": self.external_id,
            "url": self.url,
            "author_handle": self.author.handle,
            "author_name": self.author.name,
            "author_url": self.author.url,
            "author_followers": self.author.followers,
            "text": self.text,
            "created_at": self.created_at,
            "fetched_at": self.fetched_at,
            "thread": self.thread,
            "in_reply_to": self.in_reply_to,
            "language": self.language,
            "source_type": self.source_type,
            "raw": self.raw
            if isinstance(self.raw, str)
            else json.dumps(self.raw, ensure_ascii=False, default=str),
        }


@dataclass(slots=True)
class Rejected:
    """A record a connector could not turn into a mention; it goes to quarantine, not the bin."""

    source: str
    reason: str
    raw: str
    external_id: str | None = None


class InvalidRecord(ValueError):
    """Raised by normalisers when a record cannot become a mention; the message is the reason."""


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO-8601 string, epoch seconds or datetime into an aware UTC datetime.

    Args:
        value: The source's timestamp.

    Returns:
        The timestamp in UTC.

    Raises:
        InvalidRecord: When the value is missing or not a timestamp.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        dt = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidRecord(f"created_at is not an ISO-8601 timestamp: {value!r}") from exc
    else:
        raise InvalidRecord(f"created_at is missing or not a timestamp: {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def clean_text(value: Any) -> str:
    """Validate and bound a mention's text.

    Args:
        value: The text field as the source gave it.

    Returns:
        The text with NUL bytes removed, cut to ``MAX_TEXT_CHARS`` with a marker when longer.

    Raises:
        InvalidRecord: When the text is missing, not a string or blank.
    """
    if not isinstance(value, str):
        raise InvalidRecord("text is missing or not a string")
    text = value.replace("\x00", "")
    if not text.strip():
        raise InvalidRecord("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        text = text[: MAX_TEXT_CHARS - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return text


def primary_label(labels: list[str]) -> str:
    """Pick the primary label from all labels that apply, by the owner-acts-first order."""
    for label in PRIORITY:
        if label in labels:
            return label
    raise ValueError(f"no known label in {labels!r}")
