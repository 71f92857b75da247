"""File drops: a folder of JSONL and CSV files (exports, backfills, form dumps), read incrementally.

The cursor remembers, per file, how many bytes of complete lines have been stored (and how many
lines that is, so quarantine reasons name the line counted from the start of the file), so files that
grow by appending are picked up where they left off and unchanged files cost one ``stat``.

One bad record never stops a file: a line that is not JSON, a CSV row with the wrong number of
columns, a quote that is never closed, a line over ``max_record_bytes`` (skipped unread) or a
record that does not validate each goes to quarantine with its line and reason, and the records
around it are stored.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import (
    check_date_format,
    decode_json,
    item_rows,
    normalise_fields,
    time_zone,
)
from triage.config import ConfigError
from triage.models import InvalidRecord, Rejected, cap_raw

SETTINGS = {
    "path": "folder (or single file) of *.jsonl / *.csv drops, relative to the config file (required)",
    "pattern": "glob of files to read inside the folder (default: *.jsonl and *.csv)",
    "fields": "map our field names to the file's columns, e.g. {id: Ticket ID, text: Description}",
    "source_type": "source_type for records that do not say (e.g. app_review, email, web_form)",
    "date_format": "strptime pattern of text dates, e.g. '%m/%d/%Y %I:%M %p' (default: ISO 8601)",
    "timezone": "IANA time zone of dates that carry none, e.g. Europe/Berlin (default: UTC)",
    "max_record_bytes": "longer lines (CSV: records) are quarantined unread (default 1048576)",
}

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")
# Long enough for any real feedback record (texts are cut at 20,000 characters anyway), short
# enough that one runaway line never has to be held in memory or parsed.
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
MIN_RECORD_BYTES = 1024
# Reading past an oversized line happens in chunks of this size.
_SKIP_CHUNK = 1024 * 1024
# How many records `triage sources check` parses.
SAMPLE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """How a source's records are read: the settings that shape a record, checked once."""

    mapping: dict[str, str] | None = None
    source_type: str | None = None
    date_format: str | None = None
    tz: tzinfo = UTC
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


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
    record_format(name, settings)


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
            run, or None.

    Yields:
        Batches whose cursor covers exactly the lines read so far.
    """
    fmt = _format(ctx)
    state: dict[str, Any] = {"files": dict((cursor or {}).get("files", {}))}
    root = ctx.path("path")
    base = root if root.is_dir() else root.parent
    fetched_at = datetime.now(UTC)
    for path in _files(ctx):
        key = str(path.relative_to(base))
        size = path.stat().st_size
        seen = state["files"].get(key, {})
        offset = int(seen.get("offset", 0))
        if offset == size:
            continue  # unchanged since the last run: the cheap path of every scheduled run
        if offset > size:
            offset = 0  # the file was replaced by a shorter one: read it again, ids absorb repeats
        line = int(seen["line"]) if "line" in seen and offset else _count_lines(path, offset)
        for batch, new_offset, new_line in _read(ctx, fmt, path, offset, line, fetched_at):
            state["files"][key] = {"offset": new_offset, "size": size, "line": new_line}
            batch.cursor = {"files": dict(state["files"])}
            yield batch


def sample(ctx: SourceContext, limit: int = SAMPLE_SIZE) -> FetchBatch:
    """Parse the first ``limit`` records of the drop, from the start, storing nothing.

    ``triage sources check`` uses this to say how many records would be quarantined and why.
    """
    fmt = _format(ctx)
    out = FetchBatch()
    small = replace(ctx, batch_size=max(1, min(limit, ctx.batch_size)))
    fetched_at = datetime.now(UTC)
    for path in _files(ctx):
        for batch, _, _ in _read(small, fmt, path, 0, 0, fetched_at):
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
    table, invalid = _item_rows(ctx, fmt, records, datetime.now(UTC), raws)
    still = {i for i, _ in invalid}
    return table, [k for i, k in enumerate(keys) if i not in still]


def _format(ctx: SourceContext) -> RecordFormat:
    try:
        return record_format(ctx.name, ctx.settings)
    except ConfigError as exc:
        raise ConnectorError(str(exc)) from None


def _read(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    offset: int,
    line: int,
    fetched_at: datetime,
) -> Iterator[tuple[FetchBatch, int, int]]:
    reader = _read_csv if path.suffix.lower() == ".csv" else _read_jsonl
    yield from reader(ctx, fmt, path, offset, line, fetched_at)


def _count_lines(path: Path, offset: int) -> int:
    """Lines before ``offset``: for cursors stored before they counted lines (read once)."""
    count = 0
    with path.open("rb") as fh:
        remaining = offset
        while remaining > 0:
            chunk = fh.read(min(_SKIP_CHUNK, remaining))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count


class _TooLong(Exception):
    """The record being read grew past ``max_record_bytes``."""


class _Lines:
    """Complete lines of a file from an offset, each at most ``limit`` bytes, with positions.

    A line over the limit is never held in memory: it is skipped in chunks up to its newline and
    reported in ``oversized``. A last line without its newline is not read (its writer may still
    be appending): iteration stops before it.
    """

    def __init__(self, fh: IO[bytes], offset: int, line: int, limit: int) -> None:
        self.fh = fh
        self.limit = limit
        self.pos = offset  # after the last line handed out
        self.line = line  # lines before ``pos``
        self.oversized: list[tuple[int, int, bytes]] = []  # (line number, size, head)
        fh.seek(offset)

    def seek(self, pos: int, line: int) -> None:
        """Continue from ``pos`` (the start of line ``line + 1``)."""
        self.fh.seek(pos)
        self.pos, self.line = pos, line

    def next_line(self) -> bytes | None:
        """The next complete line (newline included); None at the end of the complete lines.

        Oversized lines are skipped (and listed in ``oversized``), so the result is never longer
        than ``limit``.
        """
        while True:
            data = self.fh.readline(self.limit)
            if data.endswith(b"\n"):
                self.pos += len(data)
                self.line += 1
                return data
            if len(data) < self.limit:
                self.fh.seek(self.pos)  # a partial last line: it waits for the next run
                return None
            if not self._skip(data):
                return None

    def _skip(self, head: bytes) -> bool:
        # Find the end of an oversized line without keeping it; False when it has no end yet.
        size = len(head)
        while True:
            chunk = self.fh.read(_SKIP_CHUNK)
            if not chunk:
                self.fh.seek(self.pos)
                return False
            cut = chunk.find(b"\n")
            if cut >= 0:
                size += cut + 1
                self.line += 1
                self.oversized.append((self.line, size, head[:200]))
                self.pos += size
                self.fh.seek(self.pos)
                return True
            size += len(chunk)


@dataclass
class _Batch:
    """One batch being filled: the rejects so far and the parsed records with their lines."""

    out: FetchBatch = field(default_factory=FetchBatch)
    records: list[Any] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)


def _batches(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    src: _Lines,
    fetched_at: datetime,
    step: Callable[[_Batch], bool],
) -> Iterator[tuple[FetchBatch, int, int]]:
    """Fill batches of ``ctx.batch_size`` lines (CSV: records) with ``step``; yield each with the
    position after it. ``step`` reads one line or record into the batch, False at the end."""
    offset = src.pos
    while True:
        current = _Batch()
        count = 0
        while count < ctx.batch_size and step(current):
            count += 1
        batch = current.out
        _add_items(
            ctx, fmt, path, batch, current.records, current.numbers, fetched_at, current.raws
        )
        if batch.size or count or src.pos == offset:
            yield batch, src.pos, src.line
        if count < ctx.batch_size:
            return
        offset = src.pos


def _read_jsonl(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    offset: int,
    line: int,
    fetched_at: datetime,
) -> Iterator[tuple[FetchBatch, int, int]]:
    with path.open("rb") as fh:
        src = _Lines(fh, offset, line, fmt.max_record_bytes)

        def step(into: _Batch) -> bool:
            data = src.next_line()
            _oversized(ctx, fmt, path, src, into.out)
            if data is None:
                return False
            if not data.strip():
                return True
            try:
                record = decode_json(data)
            except InvalidRecord as exc:
                into.out.rejected.append(_reject(ctx, path, src.line, str(exc), data))
                return True
            into.records.append(record)
            # decode_json accepted the line, so it is valid UTF-8.
            into.raws.append(data.decode("utf-8").rstrip("\r\n"))
            into.numbers.append(src.line)
            return True

        yield from _batches(ctx, fmt, path, src, fetched_at, step)


def _oversized(
    ctx: SourceContext, fmt: RecordFormat, path: Path, src: _Lines, batch: FetchBatch
) -> None:
    for number, size, head in src.oversized:
        reason = (
            f"line is {size:,} bytes, over max_record_bytes ({fmt.max_record_bytes:,}); "
            "not read (raise max_record_bytes to read it)"
        )
        batch.rejected.append(_reject(ctx, path, number, reason, head + b"..."))
    src.oversized.clear()


def _item_rows(
    ctx: SourceContext,
    fmt: RecordFormat,
    records: list[Any],
    fetched_at: datetime,
    raws: list[str] | None,
) -> tuple[pa.Table, list[tuple[int, str]]]:
    return item_rows(
        ctx.name,
        records,
        fetched_at=fetched_at,
        raws=raws or None,  # none (CSV): each record is kept as itself
        mapping=fmt.mapping,
        default_source_type=fmt.source_type,
        date_format=fmt.date_format,
        tz=fmt.tz,
    )


def _add_items(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    batch: FetchBatch,
    records: list[Any],
    numbers: list[int],
    fetched_at: datetime,
    raws: list[str] | None = None,
) -> None:
    """Turn a batch's parsed records into item rows; quarantine the invalid ones with a reason.

    Valid records become item rows column by column (no Mention per record); the invalid ones
    come back with mention_from_record's reason and are kept as their raw line (JSONL) or row.
    """
    batch.items, invalid = _item_rows(ctx, fmt, records, fetched_at, raws)
    id_key = (fmt.mapping or {}).get("external_id", "id")
    for i, reason in invalid:
        record = records[i]
        ext = record.get(id_key) if isinstance(record, dict) else None
        raw = raws[i] if raws else record
        batch.rejected.append(_reject(ctx, path, numbers[i], reason, raw, ext))


class _CsvLines:
    """Feeds decoded lines to ``csv.reader`` and bounds each record to ``max_record_bytes``.

    The csv module decides where a record ends (quoted fields may span lines); this only counts
    what the current record has taken, so a quote that is never closed cannot swallow the rest of
    the file: past the limit it raises :class:`_TooLong`, and the reader starts afresh.
    """

    def __init__(self, src: _Lines) -> None:
        self.src = src
        self.start = (src.pos, src.line)
        self.taken = 0
        self.ended = False
        self.first = b""

    def begin(self) -> None:
        """Start a record at the current position."""
        self.start = (self.src.pos, self.src.line)
        self.taken = 0
        self.ended = False
        self.first = b""

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        data = self.src.next_line()
        if data is None:
            self.ended = True
            raise StopIteration
        if not self.taken:
            # The record starts at this line (an oversized line skipped before it is not part).
            self.start = (self.src.pos - len(data), self.src.line - 1)
            self.first = data
        self.taken += len(data)
        if self.taken > self.src.limit:
            raise _TooLong
        return data.decode("utf-8", errors="replace")


def _read_csv(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    offset: int,
    line: int,
    fetched_at: datetime,
) -> Iterator[tuple[FetchBatch, int, int]]:
    # The csv module refuses fields over its own limit (128 KiB); our record limit is the bound.
    csv.field_size_limit(max(csv.field_size_limit(), fmt.max_record_bytes))
    with path.open("rb") as fh:
        src = _Lines(fh, 0, 0, fmt.max_record_bytes)
        header_line = src.next_line()
        if header_line is None:
            if src.oversized:
                batch = FetchBatch()
                _oversized(ctx, fmt, path, src, batch)
                yield batch, src.pos, src.line
            return
        header = next(csv.reader([header_line.decode("utf-8-sig", errors="replace")]), [])
        if not header:
            return
        if offset > src.pos:
            src.seek(offset, line)
        lines = _CsvLines(src)
        reader = csv.reader(lines)

        def broken(into: _Batch, reason: str) -> None:
            # Quarantine the line that opened the record and read on from the line after it.
            start_pos, start_line = lines.start
            into.out.rejected.append(_reject(ctx, path, start_line + 1, reason, lines.first))
            src.seek(start_pos + len(lines.first), start_line + 1)

        def step(into: _Batch) -> bool:
            lines.begin()
            try:
                row = next(reader, None)
            except _TooLong:
                _oversized(ctx, fmt, path, src, into.out)
                broken(
                    into,
                    f"record runs past max_record_bytes ({fmt.max_record_bytes:,}): "
                    "a quoted field that opens on this line is never closed",
                )
                return True
            except csv.Error as exc:
                _oversized(ctx, fmt, path, src, into.out)
                number = lines.start[1] + 1
                into.out.rejected.append(
                    _reject(ctx, path, number, f"unreadable CSV: {exc}", lines.first)
                )
                return True
            _oversized(ctx, fmt, path, src, into.out)
            if row is None:
                return False
            if lines.ended:
                # The file ended inside a quoted field: the quote that opened it is broken.
                broken(into, "a quoted field that opens on this line is never closed")
                return True
            if not row:
                return True
            number = lines.start[1] + 1
            if len(row) != len(header):
                reason = f"{len(row)} columns, header has {len(header)}"
                into.out.rejected.append(_reject(ctx, path, number, reason, row))
                return True
            into.records.append(dict(zip(header, row, strict=True)))
            into.numbers.append(number)
            return True

        yield from _batches(ctx, fmt, path, src, fetched_at, step)


def _reject(
    ctx: SourceContext, path: Path, lineno: int, reason: str, raw: Any, ext: Any = None
) -> Rejected:
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    elif isinstance(raw, str):
        text = raw
    else:
        text = orjson.dumps(raw, default=str).decode()
    return Rejected(
        source=ctx.name,
        reason=f"{path.name} line {lineno}: {reason}",
        raw=cap_raw(text),
        external_id=None if ext in (None, "") else str(ext)[:500],
    )
