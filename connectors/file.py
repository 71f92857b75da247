"""File drops: a folder of JSONL, JSON-array and CSV files (exports, backfills, form dumps), read
incrementally.

The cursor remembers, per file, how many bytes of complete lines (of a JSON array: elements) have
been stored, and how many lines that is, so quarantine reasons name the line counted from the start
of the file. Files that grow by appending are picked up where they left off, and unchanged files
cost one ``stat``. The end of a file that may still be being written (a last line without its line
end, a CSV quote still open, an array without its closing bracket) waits until the file has not
changed for ``settle_seconds``; then it is read as the file's last record, or reported. A JSON
array that has been read to its closing bracket cannot grow: when its size changes, it was written
again, and it is read again from the start.

One bad record never stops a file: a line that is not JSON, a CSV row with the wrong number of
columns, a quote that is never closed, a line over ``max_record_bytes`` (skipped unread) or a
record that does not validate each goes to quarantine with its line and reason, and the records
around it are stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.file_reader import (
    DEFAULT_MAX_RECORD_BYTES,
    RecordFormat,
    count_lines,
    is_array,
    item_rows_for,
    read,
)
from connectors.records import check_date_format, decode_json, normalise_fields, time_zone
from triage.config import ConfigError
from triage.models import InvalidRecord

SETTINGS = {
    "path": "folder (or single file) of *.jsonl / *.json / *.csv drops, relative to the config "
    "file (required)",
    "pattern": "glob of files to read inside the folder (default: *.jsonl, *.ndjson, *.json, *.csv)",
    "fields": "map our field names to the file's columns, e.g. {id: Ticket ID, text: Description}",
    "source_type": "source_type for records that do not say (e.g. app_review, email, web_form)",
    "date_format": "strptime pattern of text dates, e.g. '%m/%d/%Y %I:%M %p' (default: ISO 8601)",
    "timezone": "IANA time zone of dates that carry none, e.g. Europe/Berlin (default: UTC)",
    "max_record_bytes": "longer lines (CSV: records) are quarantined unread (default 1048576)",
    "settle_seconds": "a file unchanged for this long is finished: a last line without its line "
    "end is read, a CSV quote still open or an array's missing ']' is reported (default 60)",
}

T = TypeVar("T")

OPEN_ARRAY = "its JSON array is not finished yet (no closing ']')"

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")
MIN_RECORD_BYTES = 1024
# Long enough that a writer part way through a line (an export, a copy over the network) has
# touched the file since; short enough that an export's last row is read on the next run.
DEFAULT_SETTLE_SECONDS = 60
# How many records `triage sources check` parses.
SAMPLE_SIZE = 1000


def record_format(name: str, settings: dict[str, Any]) -> RecordFormat:
    """Check the record-shaping settings of a ``file`` (or ``webhook``) source.

    Raises:
        ConfigError: Naming the source and the setting.
    """
    where = f"source '{name}'"
    limit = settings.get("max_record_bytes", DEFAULT_MAX_RECORD_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < MIN_RECORD_BYTES:
        raise ConfigError(f"{where}: max_record_bytes must be a whole number >= {MIN_RECORD_BYTES}")
    source_type = settings.get("source_type")
    if source_type is not None and not isinstance(source_type, str):
        raise ConfigError(f"{where}: source_type must be text")
    return RecordFormat(
        mapping=normalise_fields(settings.get("fields"), where),
        source_type=source_type,
        date_format=check_date_format(settings.get("date_format"), where),
        tz=time_zone(settings.get("timezone"), where),
        max_record_bytes=limit,
    )


def validate(name: str, settings: dict[str, Any]) -> None:
    """Check the settings' values at configuration load (unknown keys are checked by the caller)."""
    if settings.get("path") in (None, ""):
        raise ConfigError(f"source '{name}': setting 'path' is required")
    if not isinstance(settings.get("pattern", ""), str):
        raise ConfigError(f"source '{name}': pattern must be a glob such as '*.csv'")
    settle_seconds(name, settings)
    record_format(name, settings)


def settle_seconds(name: str, settings: dict[str, Any]) -> float:
    """How long a file must be unchanged before its unterminated end is read as finished.

    Raises:
        ConfigError: Naming the source and the setting.
    """
    value = settings.get("settle_seconds", DEFAULT_SETTLE_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ConfigError(f"source '{name}': settle_seconds must be a number of seconds >= 0")
    return float(value)


def _files(ctx: SourceContext) -> list[Path]:
    root = ctx.path("path")
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ConnectorError(f"source '{ctx.name}': {root} does not exist")
    pattern = ctx.settings.get("pattern")
    if pattern:
        return sorted(p for p in root.glob(str(pattern)) if p.is_file())
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def check(ctx: SourceContext) -> str:
    """Check that the drop folder exists and say how many files it holds."""
    files = _files(ctx)
    return f"{len(files)} file(s) in {ctx.path('path')}"


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Read new complete lines of every drop file, in batches of ``ctx.batch_size`` records.

    Args:
        ctx: The configured source.
        cursor: ``{"files": {name: {"offset": int, "size": int, "line": int}}}`` from the last
            run, or None; ``"array": true`` marks a file that holds one JSON array, and
            ``"closed": true`` one read to its end.

    Yields:
        Batches whose cursor covers exactly the lines read so far.
    """
    fmt = _format(ctx)
    settle = _checked(ctx, settle_seconds)
    state: dict[str, Any] = {"files": dict((cursor or {}).get("files", {}))}
    root = ctx.path("path")
    base = root if root.is_dir() else root.parent
    fetched_at = datetime.now(UTC)
    for path in _files(ctx):
        key = str(path.relative_to(base))
        stat = path.stat()
        size = stat.st_size
        # Not touched for a while: its writer is done, so an unterminated end is all there is.
        final = time.time() - stat.st_mtime >= settle
        seen = state["files"].get(key, {})
        offset = int(seen.get("offset", 0))
        open_array = bool(seen.get("array") and not seen.get("closed"))
        if offset == size and not (open_array and final):
            # Unchanged since the last run: the cheap path of every scheduled run. An array read
            # up to its last element has nothing to read until its ']' comes, unless it has
            # settled without one: that is said once (and closes it).
            if open_array:
                yield _waiting(state, key, OPEN_ARRAY, stat, settle)
            continue
        if offset > size or (seen.get("closed") and size != seen.get("size")):
            # Replaced by a shorter file, or a finished array written again (an export run once
            # more): read it again from the start; the stable ids keep items from doubling.
            offset = 0
        line = int(seen["line"]) if "line" in seen and offset else count_lines(path, offset)
        array = is_array(path)
        reading = read(ctx, fmt, path, offset, line, fetched_at, final)
        end, closed = offset, False
        for batch, end, new_line, closed in reading:
            # A file that grew while it was read ends past the size seen before reading.
            entry = {"offset": end, "size": max(size, end), "line": new_line}
            if array:
                entry["array"] = True
            if closed:
                entry["closed"] = True
            state["files"][key] = entry
            batch.cursor = {"files": dict(state["files"])}
            yield batch
        if not final and (end < size or (array and not closed)):
            what = (
                OPEN_ARRAY
                if array
                else f"its last {size - end} bytes are not a finished record yet (a line "
                "without its line end, or a quoted field still open)"
            )
            yield _waiting(state, key, what, stat, settle)


def _waiting(
    state: dict[str, Any], key: str, what: str, stat: os.stat_result, settle: float
) -> FetchBatch:
    """A batch of no records that says a file's end waits for its writer, and until when.

    Without it a run reports nothing about a file whose last record is held back, and an
    operator who dropped a file and ran at once sees its last row missing for no stated reason.
    """
    age = max(time.time() - stat.st_mtime, 0.0)
    note = (
        f"{key}: {what}; it changed {age:.0f} s ago and is read as finished once unchanged for "
        f"{settle:g} s (settle_seconds)"
    )
    return FetchBatch(cursor={"files": dict(state["files"])}, notes=[note])


def sample(ctx: SourceContext, limit: int = SAMPLE_SIZE) -> FetchBatch:
    """Parse the first ``limit`` records of the drop, from the start, storing nothing.

    ``triage sources check`` uses this to say how many records would be quarantined and why. Each
    file is read as finished, so a file being checked is judged whole, its last line included.
    """
    fmt = _format(ctx)
    out = FetchBatch()
    small = replace(ctx, batch_size=max(1, min(limit, ctx.batch_size)))
    fetched_at = datetime.now(UTC)
    for path in _files(ctx):
        for batch, *_ in read(small, fmt, path, 0, 0, fetched_at, final=True):
            out.rejected.extend(batch.rejected)
            if batch.items is not None and batch.items.num_rows:
                parts = [batch.items] if out.items is None else [out.items, batch.items]
                out.items = pa.concat_tables(parts)
            if out.size >= limit:
                return out
    return out


def reread(ctx: SourceContext, rows: list[dict[str, Any]]) -> tuple[pa.Table | None, list[str]]:
    """Validate quarantined records again, from their saved copies, with the current settings.

    Used by ``triage quarantine retry`` after a mapping, ``date_format`` or ``timezone`` fix.

    Args:
        ctx: The configured source.
        rows: Quarantine rows of this source (``key`` and ``raw``).

    Returns:
        ``(items, keys)``: item rows of the records that are valid now, and the quarantine keys
        they came from. Copies that are not a JSON object (a torn line, a CSV row with the wrong
        number of columns, an oversized line's head) stay quarantined.
    """
    fmt = _format(ctx)
    records: list[dict[str, Any]] = []
    raws: list[str] = []
    keys: list[str] = []
    for row in rows:
        raw = str(row.get("raw") or "")
        try:
            record = decode_json(raw.encode("utf-8", "replace"))
        except InvalidRecord:
            continue
        if isinstance(record, dict):
            records.append(record)
            raws.append(raw)
            keys.append(str(row["key"]))
    if not records:
        return None, []
    table, invalid = item_rows_for(ctx, fmt, records, datetime.now(UTC), raws)
    still = {i for i, _ in invalid}
    return table, [k for i, k in enumerate(keys) if i not in still]


def _format(ctx: SourceContext) -> RecordFormat:
    return _checked(ctx, record_format)


def _checked(ctx: SourceContext, check: Callable[[str, dict[str, Any]], T]) -> T:
    """A setting checked as at configuration load, failing the run as the connector's error."""
    try:
        return check(ctx.name, ctx.settings)
    except ConfigError as exc:
        raise ConnectorError(str(exc)) from None
