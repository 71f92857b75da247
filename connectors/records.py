"""Turn a flat feedback record (file drops, exports, webhook posts) into a mention."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import pyarrow as pa

from triage.models import (
    ITEM_SCHEMA,
    MAX_TEXT_CHARS,
    Author,
    InvalidRecord,
    Mention,
    clean_text,
    item_id,
    parse_timestamp,
)

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


def _followers(value: Any) -> int | None:
    # As mention_from_record: a count when it is one, None when missing or unreadable.
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def item_rows(
    source: str,
    records: Sequence[Any],
    *,
    fetched_at: datetime,
    raws: Sequence[str | None] | None = None,
    mapping: dict[str, str] | None = None,
    default_source_type: str | None = None,
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
            and (type(e) is str or type(e) is int)
            and e != ""
            and type(t) is str
            and 0 < len(t) <= MAX_TEXT_CHARS
            and "\x00" not in t
            and not t.isspace()
        )
        when = None
        if ok:
            try:
                when = parse_timestamp(c)
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
        "author_followers": [v if type(v) is int else _followers(v) for v in column("followers")],
        "text": text,
        "created_at": created,
        "thread": opt_str(column("thread")),
        "in_reply_to": opt_str(column("in_reply_to")),
        "language": opt_str(column("language")),
        "source_type": [v or default_source_type for v in opt_str(column("source_type"))],
        "raw": [
            r if r is not None else json.dumps(rec, ensure_ascii=False, default=str)
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
    table = pa.table({f.name: pa.array(arrays[f.name], f.type) for f in ITEM_SCHEMA}, ITEM_SCHEMA)
    return table, rejected
