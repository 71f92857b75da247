"""Turn a flat feedback record (file drops, exports, webhook posts) into a mention.

This is the one definition of an acceptable flat record: the file connector (column-wise and per
record), the ``webhook`` source and the intake server's check at the door all go through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from triage.config import ConfigError
from triage.models import (
    MAX_BIGINT,
    Author,
    InvalidRecord,
    Mention,
    check_mention,
    clean_text,
    follower_count,
    parse_timestamp,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Accepted spellings per field, first match wins; exports from other tools rarely agree on names.
ALIASES: dict[str, tuple[str, ...]] = {
    "external_id": ("id", "external_id", "message_id", "review_id", "ticket_id", "guid"),
    "text": ("text", "body", "message", "content", "comment", "review", "feedback"),
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


# The names a ``fields:`` mapping may use: the documented ones (README: `id`, `channel`, ...) and,
# for configurations written before they were documented, the internal `external_id`/`source_type`.
FIELD_NAMES: dict[str, str] = {
    "id": "external_id",
    "channel": "source_type",
    **{name: name for name in ALIASES},
}
INT64 = (-MAX_BIGINT - 1, MAX_BIGINT)


def normalise_fields(value: Any, where: str) -> dict[str, str] | None:
    """Check a ``fields:`` setting and return it keyed by our internal field names.

    Args:
        value: The setting as written, e.g. ``{id: Ticket ID, text: Description}``.
        where: Names the source in error messages.

    Returns:
        ``{"external_id": "Ticket ID", "text": "Description"}``, or None without a mapping.

    Raises:
        ConfigError: For a mapping that is not one, an unknown field name or a non-text column.
    """
    if value in (None, {}):
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: 'fields' must be a mapping of field name to column name")
    out: dict[str, str] = {}
    for key, column in value.items():
        field = FIELD_NAMES.get(str(key))
        if field is None:
            known = ", ".join(k for k in FIELD_NAMES if k not in ("external_id", "source_type"))
            raise ConfigError(f"{where}: unknown field '{key}' in 'fields' (known: {known})")
        if not isinstance(column, str | int) or isinstance(column, bool) or str(column) == "":
            raise ConfigError(f"{where}: fields.{key} must name a column")
        if field in out:
            raise ConfigError(f"{where}: 'fields' maps '{field}' twice")
        out[field] = str(column)
    return out


def time_zone(value: Any, where: str) -> tzinfo:
    """The ``timezone`` setting (IANA name, default UTC) for timestamps that carry none."""
    if value in (None, ""):
        return UTC
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: timezone '{value}' is not an IANA time zone (e.g. Europe/Berlin)"
        ) from None


def check_date_format(value: Any, where: str) -> str | None:
    """The ``date_format`` setting: a ``strptime`` pattern such as ``%m/%d/%Y %I:%M %p``."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or "%" not in value:
        raise ConfigError(f"{where}: date_format must be a strptime pattern, e.g. '%m/%d/%Y %H:%M'")
    try:
        datetime.now(UTC).strftime(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: date_format {value!r} is not valid: {exc}") from None
    return value


def record_parser(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Make any error raised while reading one record an :class:`InvalidRecord`.

    A normaliser knows the errors it expects and raises InvalidRecord with a reason; anything it
    did not foresee (a number where a dict was, a value out of range) must still quarantine that
    one record instead of failing its batch and, on every later run, its source.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            result = fn(*args, **kwargs)
            if isinstance(result, Mention):
                check_mention(result)
            return result
        except InvalidRecord:
            raise
        except Exception as exc:
            raise InvalidRecord(f"unreadable record: {type(exc).__name__}: {exc}"[:300]) from exc

    return wrapper


def decode_json(data: bytes) -> Any:
    """Decode one JSON document (a JSONL line, a spool line, an intake body) the one way we do.

    orjson is strict where it matters: invalid UTF-8, lone surrogates, NaN/Infinity and nesting
    deeper than 1,024 levels are refused rather than passed on to fail later.

    Raises:
        InvalidRecord: ``invalid JSON: <why>``.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"invalid JSON: {exc}") from None


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


def _text(
    record: dict[str, Any], mapping: dict[str, str] | None, cands: dict[str, tuple[str, ...]]
) -> str:
    """The record's text, as ``_pick`` finds it, with a reason that names the field when not."""
    value = _pick(record, "text", mapping, cands)
    if mapping and "text" in mapping:
        key: str | None = mapping["text"]
    else:
        # The field _pick took; or, when every text field is empty, the first one present.
        key = next((k for k in cands["text"] if record[k] is value), None) or next(
            iter(cands["text"]), None
        )
    if value is None or value == "":
        if key is None:
            raise InvalidRecord(f"text is missing (text fields: {', '.join(ALIASES['text'])})")
        raise InvalidRecord(f"text is missing (field '{key}' is empty)")
    if not isinstance(value, str):
        raise InvalidRecord(f"text is not a string (field '{key}' is {type(value).__name__})")
    try:
        return clean_text(value)
    except InvalidRecord:
        raise InvalidRecord(f"text is empty (field '{key}' is blank)") from None


def opt_str(value: Any) -> str | None:
    """A text field: None for a missing or empty value, else the value as text."""
    return None if value in (None, "") else str(value)


def created_at(value: Any, date_format: str | None = None, tz: tzinfo = UTC) -> datetime:
    """Parse a record's ``created_at``: with ``date_format`` when the source sets one.

    Args:
        value: The field as found in the record.
        date_format: A ``strptime`` pattern for text values (numbers are still epoch seconds).
        tz: The time zone of times that carry none.

    Raises:
        InvalidRecord: When the value does not parse or is out of range.
    """
    if date_format and isinstance(value, str):
        try:
            parsed = datetime.strptime(value.strip(), date_format)
        except ValueError:
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise InvalidRecord(
                f"created_at {shown!r} does not match date_format {date_format!r}"
            ) from None
        return parse_timestamp(parsed, naive_tz=tz)
    return parse_timestamp(value, naive_tz=tz)


@record_parser
def mention_from_record(
    source: str,
    record: Any,
    *,
    fetched_at: datetime,
    raw: str | dict[str, Any] | None = None,
    mapping: dict[str, str] | None = None,
    default_source_type: str | None = None,
    date_format: str | None = None,
    tz: tzinfo = UTC,
) -> Mention:
    """Validate one flat record and build its mention.

    Args:
        source: The configured source name.
        record: The decoded record (must be a JSON object / CSV row).
        fetched_at: When the batch was fetched.
        raw: What to keep for audit; defaults to the record itself.
        mapping: Optional field-name overrides, e.g. ``{"text": "Feedback"}``.
        default_source_type: ``source_type`` when the record does not say.
        date_format: ``strptime`` pattern of text timestamps (default: ISO 8601).
        tz: Time zone of timestamps that carry none (default UTC).

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
    text = _text(record, mapping, cands)
    created = created_at(_pick(record, "created_at", mapping, cands), date_format, tz)
    followers_n = follower_count(_pick(record, "followers", mapping, cands))
    return Mention(
        source=source,
        external_id=str(ext),
        text=text,
        created_at=created,
        url=opt_str(_pick(record, "url", mapping, cands)),
        author=Author(
            handle=opt_str(_pick(record, "author", mapping, cands)),
            name=opt_str(_pick(record, "author_name", mapping, cands)),
            url=opt_str(_pick(record, "author_url", mapping, cands)),
            followers=followers_n,
        ),
        fetched_at=fetched_at,
        thread=opt_str(_pick(record, "thread", mapping, cands)),
        in_reply_to=opt_str(_pick(record, "in_reply_to", mapping, cands)),
        language=opt_str(_pick(record, "language", mapping, cands)),
        source_type=opt_str(_pick(record, "source_type", mapping, cands)) or default_source_type,
        raw=raw if raw is not None else record,
    )
