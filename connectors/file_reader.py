"""Reading one drop file of the ``file`` source: JSONL lines, CSV records or the elements of one
JSON array (``connectors/json_array.py``), into batches.

Each record is at most ``max_record_bytes``: a longer line is skipped unread, a quote that is never
closed cannot swallow the rest of the file. The end of a file its writer may still be appending to
(a last line without its line end, a CSV record whose quote is still open, an array without its
closing bracket) waits, unless the caller says the file is finished (``final``): then it is read
as the last record, or reported. A line that is not JSON, a CSV row with the wrong
number of columns and a record that does not validate go to quarantine with the file, the line
(counted from the start of the file) and the reason; the records around them are stored. Valid
records become item rows column by column (``connectors/columns.py``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import pyarrow as pa

from connectors.base import FetchBatch, SourceContext
from connectors.columns import item_rows
from connectors.json_array import ArrayReader, is_array_file
from connectors.records import ALIASES, decode_json
from triage.models import InvalidRecord, Rejected
from triage.tabular import csv_delimiter

JSON_ARRAY_HINT = (
    "a JSON document over many lines? this source reads JSON Lines (one object per line) or "
    "a file that holds one JSON array"
)
"""Added to the reason of a line of JSON Lines that opens or closes an array and is not JSON itself."""

# Long enough for any real feedback record (texts are cut at 20,000 characters anyway), short
# enough that one runaway line never has to be held in memory or parsed.
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
# Reading past an oversized line happens in chunks of this size.
_SKIP_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """How a source's records are read: the settings that shape a record, checked once."""

    mapping: dict[str, str] | None = None
    source_type: str | None = None
    date_format: str | None = None
    tz: tzinfo = UTC
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


Position = tuple[FetchBatch, int, int, bool]
"""A batch, with the byte offset and line count after it and whether the file is finished."""


def read(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    offset: int,
    line: int,
    fetched_at: datetime,
    final: bool = False,
) -> Iterator[Position]:
    """Batches of the complete lines (CSV: records; a JSON array: elements) of one file from
    ``offset``, each with the position and line count after it, and True once a JSON array's
    closing bracket has been read (nothing can be appended to it).

    With ``final`` (nothing is being written to the file any more), a last line without its line
    end is read too, a CSV record whose quote is still open at the end is quarantined, and an
    array that ends without its closing bracket is reported and closed. Without it, they wait.
    """
    reader = _read_csv if path.suffix.lower() == ".csv" else _read_json
    yield from reader(ctx, fmt, path, offset, line, fetched_at, final)


def is_array(path: Path) -> bool:
    """Whether :func:`read` reads the file as one JSON array (any file but a ``.csv`` whose first
    character is ``[``), element by element, rather than as lines or CSV records."""
    return path.suffix.lower() != ".csv" and is_array_file(path)


def count_lines(path: Path, offset: int) -> int:
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


def _line_end(fh: IO[bytes]) -> bytes:
    """``b"\\r"`` for a file whose lines end in a bare CR (old Mac exports, "CSV (Macintosh)" from
    spreadsheets), else ``b"\\n"`` (LF or CRLF); judged on the first 64 KiB."""
    fh.seek(0)
    head = fh.read(65536)
    # A CR at the very end may be the first half of a CRLF still being written.
    lone_cr = b"\n" not in head and 0 <= head.find(b"\r") < len(head) - 1
    return b"\r" if lone_cr else b"\n"


class _TooLong(Exception):
    """The record being read grew past ``max_record_bytes``."""


class _Lines:
    """Complete lines of a file from an offset, each at most ``limit`` bytes, with positions.

    A line over the limit is never held in memory: it is skipped in chunks up to its newline and
    reported in ``oversized``. A last line without its newline is not read (its writer may still
    be appending): iteration stops before it, unless ``final`` says the file is finished.
    """

    def __init__(
        self, fh: IO[bytes], offset: int, line: int, limit: int, final: bool = False
    ) -> None:
        self.fh = fh
        self.limit = limit
        self.final = final
        self.oversized: list[tuple[int, int, bytes]] = []  # (line number, size, head)
        self.closed = False  # lines can always be appended
        self.newline = _line_end(fh)
        self.seek(offset, line)

    def seek(self, pos: int, line: int) -> None:
        """Continue from ``pos`` (the start of line ``line + 1``, or the rest of line ``line``
        when an earlier run read that line as a finished file's last, before its line end)."""
        # What follows a last line taken without its line end belongs to that line: at least its
        # line end, which must not count as a line of its own.
        self._joined = False
        if pos > 0:
            self.fh.seek(pos - 1)
            self._joined = self.fh.read(1) != self.newline
        self.fh.seek(pos)
        self.pos, self.line = pos, line

    def next_line(self) -> bytes | None:
        """The next complete line (newline included); None at the end of the complete lines.

        Oversized lines are skipped (and listed in ``oversized``), so the result is never longer
        than ``limit``.
        """
        while True:
            data = self.fh.readline(self.limit) if self.newline == b"\n" else self._cr_line()
            if data.endswith(self.newline) or (self.final and data and len(data) < self.limit):
                self.pos += len(data)
                # The rest of a line counted before (see ``seek``) is not a line of its own.
                self.line += not self._joined
                self._joined = not data.endswith(self.newline)
                return data
            if len(data) < self.limit:
                self.fh.seek(self.pos)  # a partial last line: it waits for the next run
                return None
            if not self._skip(data):
                return None

    def _cr_line(self) -> bytes:
        # readline knows only LF: read ahead, cut after the first CR and go back to just past it.
        start = self.fh.tell()
        want = min(8192, self.limit)
        while True:
            data = self.fh.read(want)
            cut = data.find(b"\r")
            if cut >= 0:
                self.fh.seek(start + cut + 1)
                return data[: cut + 1]
            if len(data) < want or want == self.limit:
                return data  # the end of the file, or a line at the limit
            self.fh.seek(start)
            want = min(want * 8, self.limit)

    def _skip(self, head: bytes) -> bool:
        # Find the end of an oversized line without keeping it; False when it has no end yet
        # (in a finished file, the end of the file ends it).
        size = len(head)
        while True:
            chunk = self.fh.read(_SKIP_CHUNK)
            if chunk:
                cut = chunk.find(self.newline)
                if cut < 0:
                    size += len(chunk)
                    continue
                size += cut + 1
            elif not self.final:
                self.fh.seek(self.pos)
                return False
            self.line += not self._joined
            self._joined = not chunk
            self.oversized.append((self.line, size, head[:200]))
            self.pos += size
            self.fh.seek(self.pos)
            return True


@dataclass
class _Batch:
    """One batch being filled: the rejects so far and the parsed records with their lines."""

    out: FetchBatch = field(default_factory=FetchBatch)
    records: list[Any] = field(default_factory=list)
    # Per record, where it was read ("intake-20260301.jsonl line 7"), for quarantine reasons.
    places: list[str] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)


class _Source(Protocol):
    """Where a reader is in its file: what the cursor stores after each batch."""

    pos: int
    line: int
    closed: bool


def _batches(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    src: _Source,
    fetched_at: datetime,
    step: Callable[[_Batch], bool],
) -> Iterator[Position]:
    """Fill batches of ``ctx.batch_size`` lines (CSV: records) with ``step``; yield each with the
    position after it. ``step`` reads one line or record into the batch, False at the end."""
    offset = src.pos
    while True:
        current = _Batch()
        count = 0
        while count < ctx.batch_size and step(current):
            count += 1
        batch = current.out
        _add_items(ctx, fmt, batch, current.records, current.places, fetched_at, current.raws)
        if batch.size or count or src.pos == offset:
            yield batch, src.pos, src.line, src.closed
        if count < ctx.batch_size:
            return
        offset = src.pos


def _read_json(
    ctx: SourceContext,
    fmt: RecordFormat,
    path: Path,
    offset: int,
    line: int,
    fetched_at: datetime,
    final: bool,
) -> Iterator[Position]:
    with path.open("rb") as fh:
        # Whatever its name: a file that opens with '[' is one array, not lines of JSON.
        if is_array(path):
            array = ArrayReader(fh, offset, line, fmt.max_record_bytes, final=final)

            def element(into: _Batch) -> bool:
                got = array.next()
                if got is None:
                    return False
                place = _place(path, got.line)
                if got.error is not None:
                    into.out.rejected.append(_reject(ctx, place, got.error, got.text))
                else:
                    # Checked as a line of JSON Lines is: strict UTF-8, no NaN, an object.
                    _take_line(ctx, into, got.text.encode("utf-8", "surrogateescape"), place)
                return True

            yield from _batches(ctx, fmt, path, array, fetched_at, element)
            return
        lines = _Lines(fh, offset, line, fmt.max_record_bytes, final)

        def next_line(into: _Batch) -> bool:
            data = lines.next_line()
            _oversized(ctx, fmt, path, lines, into.out)
            if data is None:
                return False
            _take_line(ctx, into, data, _place(path, lines.line))
            return True

        yield from _batches(ctx, fmt, path, lines, fetched_at, next_line)


def _take_line(ctx: SourceContext, into: _Batch, data: bytes, place: str) -> None:
    """Decode one JSONL line into the batch: a record, a quarantined line, or (blank) nothing."""
    if not data.strip():
        return
    try:
        record = decode_json(data)
    except InvalidRecord as exc:
        reason = str(exc)
        stripped = data.strip()
        if stripped[:1] == b"]" or stripped[-1:] == b"[":
            # The usual cause: an export that wraps its array in an object ({"reviews": [ ...),
            # pretty-printed over many lines. A file that opens with '[' is read as an array.
            reason += f" ({JSON_ARRAY_HINT})"
        into.out.rejected.append(_reject(ctx, place, reason, data))
        return
    into.records.append(record)
    # decode_json accepted the line, so it is valid UTF-8.
    into.raws.append(data.decode("utf-8").rstrip("\r\n"))
    into.places.append(place)


def line_batch(
    ctx: SourceContext, fmt: RecordFormat, data: bytes, fetched_at: datetime, place: str
) -> FetchBatch:
    """The batch one JSONL line gives when it is read from a file: its item row, or its
    quarantine row with the same reason (``place`` stands where a file names its line).

    The intake server stores a post this way when it writes to the store directly.
    """
    into = _Batch()
    if len(data) > fmt.max_record_bytes:
        reason = _too_long(len(data), fmt)
        into.out.rejected.append(_reject(ctx, place, reason, data[:200] + b"..."))
    else:
        _take_line(ctx, into, data, place)
    _add_items(ctx, fmt, into.out, into.records, into.places, fetched_at, into.raws)
    return into.out


def _oversized(
    ctx: SourceContext, fmt: RecordFormat, path: Path, src: _Lines, batch: FetchBatch
) -> None:
    for number, size, head in src.oversized:
        reason = _too_long(size, fmt)
        batch.rejected.append(_reject(ctx, _place(path, number), reason, head + b"..."))
    src.oversized.clear()


def _too_long(size: int, fmt: RecordFormat) -> str:
    return (
        f"line is {size:,} bytes, over max_record_bytes ({fmt.max_record_bytes:,}); "
        "not read (raise max_record_bytes to read it)"
    )


def item_rows_for(
    ctx: SourceContext,
    fmt: RecordFormat,
    records: list[Any],
    fetched_at: datetime,
    raws: list[str] | None,
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Records validated and laid out as item rows with the source's record format."""
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
    batch: FetchBatch,
    records: list[Any],
    places: list[str],
    fetched_at: datetime,
    raws: list[str] | None = None,
) -> None:
    """Turn a batch's parsed records into item rows; quarantine the invalid ones with a reason.

    Valid records become item rows column by column (no Mention per record); the invalid ones
    come back with mention_from_record's reason and are kept as their raw line (JSONL) or row.
    """
    batch.items, invalid = item_rows_for(ctx, fmt, records, fetched_at, raws)
    id_key = (fmt.mapping or {}).get("external_id", "id")
    for i, reason in invalid:
        record = records[i]
        ext = record.get(id_key) if isinstance(record, dict) else None
        raw = raws[i] if raws else record
        batch.rejected.append(_reject(ctx, places[i], reason, raw, ext))


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
    final: bool,
) -> Iterator[Position]:
    # The csv module refuses fields over its own limit (128 KiB); our record limit is the bound.
    csv.field_size_limit(max(csv.field_size_limit(), fmt.max_record_bytes))
    with path.open("rb") as fh:
        src = _Lines(fh, 0, 0, fmt.max_record_bytes, final)
        header_line = src.next_line()
        # Blank lines before the header (a spreadsheet export with an empty first row) are
        # skipped, as every run re-reads the header from the top of the file.
        while header_line is not None and not header_line.strip():
            header_line = src.next_line()
        if header_line is None:
            if src.oversized:
                batch = FetchBatch()
                _oversized(ctx, fmt, path, src, batch)
                yield batch, src.pos, src.line, src.closed
            return
        if src.oversized:
            # The first line that is not blank was over max_record_bytes: that was the header,
            # and the line read after it is a row. Named from it, every row would be misread.
            number, size, head = src.oversized[0]
            reason = (
                f"header line {number} is {size:,} bytes, over max_record_bytes "
                f"({fmt.max_record_bytes:,}); none of this file's rows were read (raise "
                "max_record_bytes, then run `triage sources reset` for this source)"
            )
            src.oversized.clear()
            yield _passed_over(
                ctx, fmt, path, src, _reject(ctx, _place(path, number), reason, head + b"...")
            )
            return
        header_text = header_line.decode("utf-8-sig", errors="replace")
        # A spreadsheet saved with ';' (or tabs, or '|') between cells: read with whichever
        # delimiter splits the header into a text column, so the rows are not all quarantined.
        text_names = [fmt.mapping["text"]] if fmt.mapping and "text" in fmt.mapping else []
        delimiter = csv_delimiter(header_text, text_names or ALIASES["text"])
        try:
            header = next(csv.reader([header_text], delimiter=delimiter), [])
        except csv.Error as exc:
            # A stray carriage return or NUL bytes (a UTF-16 export): no column can be named, so
            # no row can be read. Said once, in quarantine, and the file is passed over instead
            # of stopping the source (and every file after it) on every run.
            reason = (
                f"header line {src.line} cannot be read as CSV ({exc}); none of this file's "
                "rows were read (save it as UTF-8 CSV, then run `triage sources reset` for this source)"
            )
            yield _passed_over(
                ctx, fmt, path, src, _reject(ctx, _place(path, src.line), reason, header_line)
            )
            return
        if not header:
            return
        if offset > src.pos:
            src.seek(offset, line)
        lines = _CsvLines(src)
        reader = csv.reader(lines, delimiter=delimiter)

        def broken(into: _Batch, reason: str) -> None:
            # Quarantine the line that opened the record and read on from the line after it.
            start_pos, start_line = lines.start
            into.out.rejected.append(
                _reject(ctx, _place(path, start_line + 1), reason, lines.first)
            )
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
                    _reject(ctx, _place(path, number), f"unreadable CSV: {exc}", lines.first)
                )
                return True
            _oversized(ctx, fmt, path, src, into.out)
            if row is None:
                return False
            if lines.ended:
                if not final:
                    # The end of what has been written so far is inside a quoted field: its
                    # writer may be part way through the record, which waits for the next run.
                    src.seek(*lines.start)
                    return False
                # A finished file ends inside a quoted field: the quote that opened it is broken.
                broken(into, "a quoted field that opens on this line is never closed")
                return True
            if not row:
                return True
            number = lines.start[1] + 1
            if len(row) != len(header):
                reason = f"{len(row)} columns, header has {len(header)}"
                into.out.rejected.append(_reject(ctx, _place(path, number), reason, row))
                return True
            into.records.append(dict(zip(header, row, strict=True)))
            into.places.append(_place(path, number))
            return True

        yield from _batches(ctx, fmt, path, src, fetched_at, step)


def _passed_over(
    ctx: SourceContext, fmt: RecordFormat, path: Path, src: _Lines, header: Rejected
) -> Position:
    """A CSV file whose header cannot be used: its one quarantine row, and the cursor at its end.

    Said once instead of stopping the source (and every file after it) on every run.
    """
    batch = FetchBatch()
    batch.rejected.append(header)
    while src.next_line() is not None:
        pass
    _oversized(ctx, fmt, path, src, batch)
    return batch, src.pos, src.line, src.closed


def _place(path: Path, lineno: int) -> str:
    """Where a record was read, as quarantine reasons name it: ``<file> line <n>``."""
    return f"{path.name} line {lineno}"


def _reject(ctx: SourceContext, place: str, reason: str, raw: Any, ext: Any = None) -> Rejected:
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    elif isinstance(raw, str):
        text = raw
    else:
        text = orjson.dumps(raw, default=str).decode()
    return ctx.reject(f"{place}: {reason}", text, ext)
