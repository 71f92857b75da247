"""Turn a flat feedback record (file drops, exports, webhook posts) into a mention.

This is the one definition of an acceptable flat record: the file connector (column-wise and per
record), the ``webhook`` source and the intake server's check at the door all go through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import pyarrow as pa

from triage.config import ConfigError
from triage.models import (
    ITEM_SCHEMA,
    MAX_TEXT_CHARS,
    Author,
    InvalidRecord,
    Mention,
    cap_raw,
    clean_text,
    item_id,
    parse_timestamp,
    raw_text,
    storable,
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
_INT64 = (-(2**63), 2**63 - 1)


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
            return fn(*args, **kwargs)
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


def _opt_str(value: Any) -> str | None:
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


def _followers(value: Any) -> int | None:
    # A count when it is one (and fits the column), None when missing or unreadable.
    try:
        n = int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n is None or _INT64[0] <= n <= _INT64[1] else None


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
    followers_n = _followers(_pick(record, "followers", mapping, cands))
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


def _first_present(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[Any]:
    """Per record, the first of ``keys`` with a value other than None or "" (as ``_pick`` does)."""
    if not keys:
        return [None] * len(records)
    if len(keys) == 1:
        key = keys[0]
        # A missing key, None and "" all mean "not given"; None stands for all three here.
        return [None if (v := r.get(key)) == "" else v for r in records]
    out: list[Any] = []
    for r in records:
        value = None
        for key in keys:
            v = r.get(key)
            if v is not None and v != "":
                value = v
                break
        out.append(value)
    return out


def item_rows(
    source: str,
    records: Sequence[Any],
    *,
    fetched_at: datetime,
    raws: Sequence[str | None] | None = None,
    mapping: dict[str, str] | None = None,
    default_source_type: str | None = None,
    date_format: str | None = None,
    tz: tzinfo = UTC,
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Validate a batch of flat records column by column and lay the valid ones out as item rows.

    The columnar twin of :func:`mention_from_record` for bulk drops: each valid record gives the row
    ``mention_from_record(...).to_row()`` would give, without a ``Mention`` per record. Records that
    are not plain (not an object, an id that is not a string or integer, a text that is missing,
    blank, too long or holds NUL bytes, a timestamp that does not parse) go through
    ``mention_from_record`` itself, so their reasons and corrections are exactly its own.

    Args:
        source: The configured source name.
        records: Decoded records (JSON values, CSV rows as dicts).
        fetched_at: When the batch was fetched.
        raws: Per record, the text to keep for audit (e.g. the JSON line); None keeps the record
            itself, serialised as ``Mention.to_row`` does.
        mapping: Optional field-name overrides, e.g. ``{"text": "Feedback"}``.
        default_source_type: ``source_type`` when a record does not say.
        date_format: ``strptime`` pattern of text timestamps (default: ISO 8601).
        tz: Time zone of timestamps that carry none (default UTC).

    Returns:
        ``(rows, rejected)``: an Arrow table laid out as ``ITEM_SCHEMA`` with the valid records in
        input order, and ``(index, reason)`` of every invalid record.
    """
    n = len(records)
    raw_list: Sequence[str | None] = raws if raws is not None else [None] * n
    is_dict = [type(r) is dict for r in records]
    dicts: list[dict[str, Any]] = [r if ok else {} for r, ok in zip(records, is_dict, strict=True)]
    present: set[str] = set().union(*dicts) if dicts else set()

    def column(name: str) -> list[Any]:
        if mapping and name in mapping:
            key = mapping[name]
            return [r.get(key) for r in dicts]
        return _first_present(dicts, [k for k in ALIASES[name] if k in present])

    ext = column("external_id")
    text = column("text")
    created_raw = column("created_at")
    created: list[datetime | None] = []
    fast = list(is_dict)
    for i, (e, t, c) in enumerate(zip(ext, text, created_raw, strict=True)):
        ok = (
            fast[i]
            and (type(e) is str or (type(e) is int and _INT64[0] <= e <= _INT64[1]))
            and e != ""
            and type(t) is str
            and 0 < len(t) <= MAX_TEXT_CHARS
            and "\x00" not in t
            and not t.isspace()
        )
        when = None
        if ok:
            try:
                when = created_at(c, date_format, tz)
            except Exception:  # noqa: BLE001 - mention_from_record says why (or raises) below
                ok = False
        fast[i] = ok
        created.append(when)
    external_ids = [e if type(e) is str else None if e is None else str(e) for e in ext]

    def opt_str(values: list[Any]) -> list[str | None]:
        if values.count(None) == len(values):
            return values  # a field the batch does not have: nothing to convert
        return [v if type(v) is str and v else _opt_str(v) for v in values]

    columns: dict[str, list[Any]] = {
        "external_id": external_ids,
        "url": opt_str(column("url")),
        "author_handle": opt_str(column("author")),
        "author_name": opt_str(column("author_name")),
        "author_url": opt_str(column("author_url")),
        "author_followers": [
            v if type(v) is int and _INT64[0] <= v <= _INT64[1] else _followers(v)
            for v in column("followers")
        ],
        "text": text,
        "created_at": created,
        "thread": opt_str(column("thread")),
        "in_reply_to": opt_str(column("in_reply_to")),
        "language": opt_str(column("language")),
        "source_type": [v or default_source_type for v in opt_str(column("source_type"))],
        "raw": [
            cap_raw(r if r is not None else raw_text(rec))
            for r, rec in zip(raw_list, records, strict=True)
        ],
    }
    keep = list(range(n))
    rejected: list[tuple[int, str]] = []
    if not all(fast):
        keep = []
        for i in range(n):
            if fast[i]:
                keep.append(i)
                continue
            try:
                row = mention_from_record(
                    source,
                    records[i],
                    fetched_at=fetched_at,
                    raw=raw_list[i],
                    mapping=mapping,
                    default_source_type=default_source_type,
                    date_format=date_format,
                    tz=tz,
                ).to_row()
            except InvalidRecord as exc:
                rejected.append((i, str(exc)))
                continue
            keep.append(i)
            for name, values in columns.items():
                values[i] = row[name]
        columns = {name: [values[i] for i in keep] for name, values in columns.items()}
    ids = [item_id(source, e) for e in columns["external_id"]]
    size = len(keep)
    arrays = {
        "id": ids,
        "source": [source] * size,
        **columns,
        "fetched_at": [fetched_at] * size,
    }
    try:
        table = _item_table(arrays)
    except (pa.ArrowException, UnicodeEncodeError):
        # A lone surrogate (only lenient decoders make them) cannot be stored: replace it, as
        # Mention.to_row does, instead of failing the batch. Never taken for orjson or CSV input.
        for name in columns:
            if name not in ("created_at", "author_followers"):
                arrays[name] = [storable(v) if type(v) is str else v for v in arrays[name]]
        table = _item_table(arrays)
    return table, rejected


def _item_table(arrays: dict[str, list[Any]]) -> pa.Table:
    return pa.table({f.name: pa.array(arrays[f.name], f.type) for f in ITEM_SCHEMA}, ITEM_SCHEMA)
