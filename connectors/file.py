"""File drops: a folder of JSONL and CSV files (exports, backfills, form dumps), read incrementally.

The cursor remembers, per file, how many bytes of complete lines have been stored, so files that
grow by appending are picked up where they left off and unchanged files cost one ``stat``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import item_rows
from triage.models import Rejected

SETTINGS = {
    "path": "folder (or single file) of *.jsonl / *.csv drops, relative to the config file (required)",
    "pattern": "glob of files to read inside the folder (default: *.jsonl and *.csv)",
    "fields": "optional mapping of our field names to the file's columns, e.g. {text: Feedback}",
    "source_type": "source_type for records that do not say (e.g. app_review, email, web_form)",
}

SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")
# Raw records kept for audit are bounded: quarantine must not become a dumping ground for 1 GB lines.
MAX_RAW_CHARS = 100_000


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
        cursor: ``{"files": {name: {"offset": int, "size": int}}}`` from the last run, or None.

    Yields:
        Batches whose cursor covers exactly the lines read so far.
    """
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
        reader = _read_csv if path.suffix.lower() == ".csv" else _read_jsonl
        for batch, new_offset in reader(ctx, path, offset, fetched_at):
            state["files"][key] = {"offset": new_offset, "size": size}
            batch.cursor = {"files": dict(state["files"])}
            yield batch


def _read_lines(
    path: Path, offset: int, batch_size: int, *, quoted: bool = False
) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Yield (numbered complete lines, offset after them); a partial last line waits for next run.

    With ``quoted``, a batch only ends where the count of double quotes is even, so a CSV field
    with embedded newlines is never split between two batches.
    """
    with path.open("rb") as fh:
        fh.seek(offset)
        lines: list[tuple[int, bytes]] = []
        pos = offset
        quotes = 0
        for lineno, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                # A writer may still be appending this line; we only consume complete lines.
                break
            pos += len(line)
            lines.append((lineno, line))
            if quoted:
                quotes += line.count(b'"')
            if len(lines) >= batch_size and quotes % 2 == 0:
                yield lines, pos
                lines = []
        if lines or pos == offset:
            yield lines, pos


def _read_jsonl(
    ctx: SourceContext, path: Path, offset: int, fetched_at: datetime
) -> Iterator[tuple[FetchBatch, int]]:
    for lines, pos in _read_lines(path, offset, ctx.batch_size):
        batch = FetchBatch()
        records: list[Any] = []
        raws: list[str] = []
        numbers: list[int] = []
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                batch.rejected.append(_reject(ctx, path, lineno, f"invalid JSON: {exc}", line))
                continue
            records.append(record)
            # orjson accepted the line, so it is valid UTF-8.
            raws.append(line.decode("utf-8").rstrip("\r\n"))
            numbers.append(lineno)
        _add_items(ctx, path, batch, records, numbers, fetched_at, raws)
        yield batch, pos


def _add_items(
    ctx: SourceContext,
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
    batch.items, invalid = item_rows(
        ctx.name,
        records,
        fetched_at=fetched_at,
        raws=raws,
        mapping=ctx.settings.get("fields"),
        default_source_type=ctx.settings.get("source_type"),
    )
    for i, reason in invalid:
        record = records[i]
        ext = record.get("id") if isinstance(record, dict) else None
        raw = raws[i] if raws is not None else record
        batch.rejected.append(_reject(ctx, path, numbers[i], reason, raw, ext))


def _read_csv(
    ctx: SourceContext, path: Path, offset: int, fetched_at: datetime
) -> Iterator[tuple[FetchBatch, int]]:
    with path.open("rb") as fh:
        header_line = fh.readline()
    header = next(csv.reader([header_line.decode("utf-8-sig", errors="replace")]), [])
    if not header:
        return
    start = max(offset, len(header_line))
    # Quoted CSV fields may span lines, so parse the batch's bytes as a whole, not line by line.
    for lines, pos in _read_lines(path, start, ctx.batch_size, quoted=True):
        batch = FetchBatch()
        chunk = b"".join(line for _, line in lines).decode("utf-8", errors="replace")
        records: list[dict[str, str]] = []
        numbers: list[int] = []
        for n, row in enumerate(csv.reader(io.StringIO(chunk)), start=1):
            if not row:
                continue
            if len(row) != len(header):
                batch.rejected.append(
                    _reject(ctx, path, n, f"{len(row)} columns, header has {len(header)}", row)
                )
                continue
            records.append(dict(zip(header, row, strict=True)))
            numbers.append(n)
        _add_items(ctx, path, batch, records, numbers, fetched_at)
        yield batch, pos


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
        raw=text[:MAX_RAW_CHARS],
        external_id=None if ext in (None, "") else str(ext),
    )
