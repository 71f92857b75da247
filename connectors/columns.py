"""The column-wise fast path of :func:`connectors.records.mention_from_record` for bulk drops.

A backfill of millions of rows cannot afford a ``Mention`` per record: :func:`item_rows` checks a
batch column by column and lays the valid records out as item rows directly. Any record that is
not plain goes through ``mention_from_record`` itself, so the two never disagree;
``tests/test_columnar.py`` checks them against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import pyarrow as pa

from connectors.records import (
    ALIASES,
    INT64,
    created_at,
    mention_from_record,
    opt_str,
)
from triage.models import (
    ITEM_SCHEMA,
    MAX_TEXT_CHARS,
    InvalidRecord,
    cap_raw,
    follower_count,
    item_id,
    raw_text,
    storable,
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
            and (type(e) is str or (type(e) is int and INT64[0] <= e <= INT64[1]))
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

    def texts(values: list[Any]) -> list[str | None]:
        if values.count(None) == len(values):
            return values  # a field the batch does not have: nothing to convert
        return [v if type(v) is str and v else opt_str(v) for v in values]

    columns: dict[str, list[Any]] = {
        "external_id": external_ids,
        "url": texts(column("url")),
        "author_handle": texts(column("author")),
        "author_name": texts(column("author_name")),
        "author_url": texts(column("author_url")),
        "author_followers": [follower_count(v) for v in column("followers")],
        "text": text,
        "created_at": created,
        "thread": texts(column("thread")),
        "in_reply_to": texts(column("in_reply_to")),
        "language": texts(column("language")),
        "source_type": [v or default_source_type for v in texts(column("source_type"))],
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
