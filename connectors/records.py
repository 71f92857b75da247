"""Turn a flat feedback record (file drops, exports, webhook posts) into a mention."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

# Accepted spellings per field, first match wins; exports from other tools rarely agree on names.
ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": ("id", "external_id", "message_id", "review_id", "ticket_id", "guid"),
    "text": ("text", "body", "message", "content", "comment", "review"),
    "created_at": ("created_at", "date", "timestamp", "time", "published", "submitted_at"),
    "url": ("url", "link", "permalink"),
    "author": ("author", "handle", "username", "user", "email"),
    "author_name": ("author_name", "name", "display_name"),
    "author_url": ("author_url", "profile_url"),
    "followers": ("followers", "follower_count", "followers_count"),
    "source_type": ("channel", "source_type", "platform"),
    "thread": ("thread", "thread_id", "conversation_id"),
    "in_reply_to": ("in_reply_to", "parent_id", "reply_to"),
    "language": ("language", "lang"),
}


@lru_cache(maxsize=256)
def _candidates(keys: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """For one record layout, the keys present per field in alias order.

    Records of one export share a layout, so this is computed once per file, not once per record.
    """
    present = set(keys)
    return {field: tuple(k for k in aliases if k in present) for field, aliases in ALIASES.items()}


def _pick(
    record: dict[str, Any],
    field: str,
    mapping: dict[str, str] | None,
    cands: dict[str, tuple[str, ...]],
) -> Any:
    if mapping and field in mapping:
        return record.get(mapping[field])
    for key in cands[field]:
        value = record[key]
        if value is not None and value != "":
            return value
    return None


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def mention_from_record(
    source: str,
    record: Any,
    *,
    fetched_at: datetime,
    raw: str | dict[str, Any] | None = None,
    mapping: dict[str, str] | None = None,
    default_source_type: str | None = None,
) -> Mention:
    """Validate one flat record and build its mention.

    Args:
        source: The configured source name.
        record: The decoded record (must be a JSON object / CSV row).
        fetched_at: When the batch was fetched.
        raw: What to keep for audit; defaults to the record itself.
        mapping: Optional field-name overrides, e.g. ``{"text": "Feedback"}``.
        default_source_type: ``source_type`` when the record does not say.

    Returns:
        The mention.

    Raises:
        InvalidRecord: With the reason, when a required field is missing or malformed.
    """
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is a {type(record).__name__}, not an object")
    cands = _candidates(tuple(record))
    ext = _pick(record, "external_id", mapping, cands)
    if ext in (None, ""):
        raise InvalidRecord("id is missing")
    text = clean_text(_pick(record, "text", mapping, cands))
    created = parse_timestamp(_pick(record, "created_at", mapping, cands))
    followers = _pick(record, "followers", mapping, cands)
    try:
        followers_n = int(followers) if followers not in (None, "") else None
    except (TypeError, ValueError):
        followers_n = None
    return Mention(
        source=source,
        external_id=str(ext),
        text=text,
        created_at=created,
        url=_opt_str(_pick(record, "url", mapping, cands)),
        author=Author(
            handle=_opt_str(_pick(record, "author", mapping, cands)),
            name=_opt_str(_pick(record, "author_name", mapping, cands)),
            url=_opt_str(_pick(record, "author_url", mapping, cands)),
            followers=followers_n,
        ),
        fetched_at=fetched_at,
        thread=_opt_str(_pick(record, "thread", mapping, cands)),
        in_reply_to=_opt_str(_pick(record, "in_reply_to", mapping, cands)),
        language=_opt_str(_pick(record, "language", mapping, cands)),
        source_type=_opt_str(_pick(record, "source_type", mapping, cands)) or default_source_type,
        raw=raw if raw is not None else record,
    )
