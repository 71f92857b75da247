"""The records every stage agrees on: mentions, quarantined records and labels."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pyarrow as pa

from triage.keys import stable_key

LABELS: tuple[str, ...] = ("kudos", "sales_lead", "feature_request", "service_issue", "other")
# The owner who must act first wins the primary label (README, "Data and the classifier");
# `other` never outranks a real intent.
PRIORITY: tuple[str, ...] = ("service_issue", "sales_lead", "feature_request", "kudos", "other")
DEPARTMENTS: tuple[str, ...] = ("marketing", "sales", "product", "support")

# Longest text we keep verbatim. Longer texts are cut with a marker, never dropped.
MAX_TEXT_CHARS = 20_000
TRUNCATION_MARKER = " […truncated]"
# Raw records kept for audit (accepted and quarantined alike) are bounded: a hostile or broken
# record must not bloat the store.
MAX_RAW_CHARS = 100_000
# Feedback was written after 1970 and not in the future. A date outside these bounds is a broken
# record: it would overflow datetime or DuckDB, or drag a source's watermark years ahead and hide
# every later item. A day of tolerance absorbs clock skew and local times read as UTC.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
    # surrogatepass: a lone surrogate from a lenient JSON decoder must not crash the id (valid
    # text encodes exactly as before, so existing ids do not change).
    return stable_key(source, external_id, size=10, errors="surrogatepass")


@dataclass(slots=True)
class Author:
    """Who wrote a mention, as far as the source tells."""

    handle: str | None = None
    name: str | None = None
    url: str | None = None
    followers: int | None = None


@dataclass(slots=True)
class Mention:
    """One piece of feedback in the shape every connector yields (README, "Architecture")."""

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
        """Flatten the mention into the column layout of the ``items`` table.

        Every text is made storable (a lone surrogate from a lenient JSON decoder becomes U+FFFD)
        and ``raw`` is capped at ``MAX_RAW_CHARS``: one odd record must not fail its whole batch.
        """
        return {
            "id": self.id,
            "source": self.source,
            "external_id": storable(self.external_id),
            "url": storable(self.url),
            "author_handle": storable(self.author.handle),
            "author_name": storable(self.author.name),
            "author_url": storable(self.author.url),
            "author_followers": self.author.followers,
            "text": storable(self.text),
            "created_at": self.created_at,
            "fetched_at": self.fetched_at,
            "thread": storable(self.thread),
            "in_reply_to": storable(self.in_reply_to),
            "language": storable(self.language),
            "source_type": storable(self.source_type),
            "raw": cap_raw(raw_text(self.raw)),
        }


@dataclass(slots=True, frozen=True)
class DeliveryItem:
    """An item as the outbox delivers it: the mention, its prediction and its route.

    What every message builder and destination reads (:meth:`Store.delivery_context` builds it),
    so a field is named once and typed, and the current label's score has one definition.
    """

    id: str
    source: str
    text: str
    label: str
    # Every label's calibrated score (all of LABELS once classified).
    scores: Mapping[str, float]
    author: Author = field(default_factory=Author)
    external_id: str = ""
    url: str | None = None
    created_at: datetime | None = None
    source_type: str | None = None
    labels: tuple[str, ...] = ()
    needs_review: bool = False
    review_reason: str | None = None
    model_version: str = ""
    department: str | None = None
    route_state: str | None = None
    # The author key when the author fields were redacted for a destination (see
    # triage.privacy.policy): stable per person, and no personal data in it.
    author_ref: str | None = None

    @property
    def score(self) -> float:
        """The score of the item's current label (a reviewer's relabel included)."""
        return self.score_of(self.label)

    def score_of(self, label: str) -> float:
        """The calibrated score of ``label`` (0 for a label the model did not score)."""
        return float(self.scores.get(label, 0.0))

    @property
    def author_key(self) -> str:
        """Who wrote the item, as one stable string: the profile url, else source and handle."""
        if self.author_ref is not None:
            return self.author_ref
        if self.author.url:
            return str(self.author.url).strip().lower()
        who = self.author.handle or self.author.name or "anonymous"
        return f"{self.source}:{who}".strip().lower()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DeliveryItem:
        """Build the item from a flat row (``author_handle``, ``author_name``, ... columns)."""
        scores = row.get("scores") or {}
        if isinstance(scores, str):
            scores = json.loads(scores)
        return cls(
            id=str(row["id"]),
            source=str(row["source"]),
            text=str(row["text"]),
            label=str(row["label"]),
            scores={str(k): float(v) for k, v in scores.items()},
            author=Author(
                handle=row.get("author_handle"),
                name=row.get("author_name"),
                url=row.get("author_url"),
                followers=row.get("author_followers"),
            ),
            external_id=str(row.get("external_id") or ""),
            url=row.get("url"),
            created_at=row.get("created_at"),
            source_type=row.get("source_type"),
            labels=tuple(row.get("labels") or ()),
            needs_review=bool(row.get("needs_review")),
            review_reason=row.get("review_reason"),
            model_version=str(row.get("model_version") or ""),
            department=row.get("department"),
            route_state=row.get("route_state"),
        )


@dataclass(slots=True)
class Rejected:
    """A record a connector could not turn into a mention; it goes to quarantine, not the bin."""

    source: str
    reason: str
    raw: str
    external_id: str | None = None


class InvalidRecord(ValueError):
    """Raised by normalisers when a record cannot become a mention; the message is the reason."""


_OPTIONAL_TEXT = ("url", "thread", "in_reply_to", "language", "source_type")
_AUTHOR_TEXT = ("handle", "name", "url")
# The largest value of a BIGINT column (DuckDB and PostgreSQL), and of Arrow's int64.
MAX_BIGINT = 2**63 - 1


def check_mention(mention: Mention) -> Mention:
    """Return ``mention`` if every field has the type its column stores; else InvalidRecord.

    A follower count that is not a count (it is optional metadata) becomes unknown instead.

    Connectors copy values from API answers; a number or a boolean where the platform documents
    text (``"language": 7``) would otherwise pass the parser and fail the whole batch when it is
    stored, on every run, instead of quarantining the one record.
    """
    for name, value in (("id", mention.external_id), ("text", mention.text)):
        if not isinstance(value, str):
            raise InvalidRecord(f"{name} is {type(value).__name__}, not text")
    if not isinstance(mention.created_at, datetime):
        raise InvalidRecord(f"created_at is {type(mention.created_at).__name__}, not a time")
    fields = [(name, getattr(mention, name)) for name in _OPTIONAL_TEXT]
    fields += [(f"author {name}", getattr(mention.author, name)) for name in _AUTHOR_TEXT]
    for name, value in fields:
        if value is not None and not isinstance(value, str):
            raise InvalidRecord(f"{name} is {type(value).__name__}, not text")
    # A count that is not one (true, 2**70) is unknown, not a reason to lose the post.
    mention.author.followers = follower_count(mention.author.followers)
    return mention


def follower_count(value: Any) -> int | None:
    """A follower count when ``value`` is one, None (unknown) when it is missing or is not.

    Exports and APIs give counts as numbers or numeric text (``"17"``). A boolean, a negative
    number or one past the column's BIGINT is not a count; every source treats it the same way,
    as unknown, because the count is optional metadata and not worth losing the post over.
    """
    if value is None or isinstance(value, bool):
        return None
    if type(value) is not int:
        try:
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return value if 0 <= value <= MAX_BIGINT else None


def storable(value: str | None) -> str | None:
    """``value`` with lone surrogates replaced by U+FFFD, so that it can be encoded and stored.

    Strict decoders (orjson, UTF-8 files) never produce them; Python's ``json`` (API answers) and
    hostile payloads can.
    """
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", value)
    return value


def raw_text(raw: Any) -> str:
    """A record's audit copy as text: strings as they are, anything else as JSON."""
    if isinstance(raw, str):
        return raw
    try:
        return json.dumps(raw, ensure_ascii=False, default=str)
    except (ValueError, RecursionError) as exc:
        # Nesting too deep or an integer too long to print: say so rather than fail the batch.
        return f"<record not kept for audit: {type(exc).__name__}>"


def cap_raw(raw: str) -> str:
    """The audit copy of a record as stored: storable and at most ``MAX_RAW_CHARS`` long."""
    return storable(raw[:MAX_RAW_CHARS]) or ""


def _short(value: Any) -> str:
    # Reasons quote the offending value, bounded: a poison record must not bloat the reason too.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_timestamp(value: Any, *, now: datetime | None = None, naive_tz: tzinfo = UTC) -> datetime:
    """Parse an ISO-8601 string, epoch seconds or datetime into an aware UTC datetime.

    Naive times are read in ``naive_tz`` (UTC unless the source says otherwise). Times before 1970 or more than a day in the future (and
    non-finite numbers) are refused: they are broken records, not feedback.

    Args:
        value: The source's timestamp.
        now: The present, for the future bound (default: the clock).
        naive_tz: The time zone of times that do not say (default UTC).

    Returns:
        The timestamp in UTC.

    Raises:
        InvalidRecord: When the value is missing, not a timestamp or out of range.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidRecord(f"created_at is not a finite number: {_short(value)}")
        try:
            dt = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidRecord(f"created_at is out of range: {_short(value)}") from None
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidRecord(
                f"created_at is not an ISO-8601 timestamp: {_short(value)}"
            ) from None
    else:
        raise InvalidRecord(f"created_at is missing or not a timestamp: {_short(value)}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=naive_tz)
    try:
        dt = dt.astimezone(UTC)
    except (OverflowError, ValueError):
        # "9999-12-31T23:59:59-05:00" is past the last representable instant once in UTC.
        raise InvalidRecord(f"created_at is out of range: {_short(value)}") from None
    latest = (now or datetime.now(UTC)) + FUTURE_TOLERANCE
    if not EARLIEST <= dt <= latest:
        raise InvalidRecord(
            f"created_at is out of range (before 1970 or in the future): {_short(value)}"
        )
    return dt


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
