"""File input/output of ``triage classify``: every input row gets an output row, errors included."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from classifiers.adapt import StreamMix, adapt_streams, adapts_by_content, stream_name
from classifiers.data import csv_rows, json_array
from classifiers.model import PIPE_BATCH, Classifier
from classifiers.progress import Progress
from triage.tabular import find_column

_NUL = "\ufffe"


def _is_jsonl(path: Path, head: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return True
    if suffix == ".csv":
        return False
    return head.lstrip()[:1] == b"{"


Row = tuple[str | None, Any, str | None, str | None]
"""(text, id, error, stream) of one input row; the stream is its ``source`` value, if any."""


def _stream(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _object_row(obj: Any, text_field: str, id_field: str, stream_field: str) -> Row:
    """(text, id, error, stream) of one JSON value: a line of JSONL or an element of an array."""
    if not isinstance(obj, dict):
        return None, None, "not a JSON object", None
    text = obj.get(text_field)
    ident = obj.get(id_field)
    stream = _stream(obj.get(stream_field))
    if not isinstance(text, str):
        return None, ident, f"no {text_field!r} string field", stream
    if not text.strip():
        return None, ident, "text is empty", stream
    return text, ident, None, stream


def _jsonl_rows(
    data: bytes, text_field: str = "text", id_field: str = "id", stream_field: str = "source"
) -> Iterator[Row]:
    """Yield (text, id, error, stream) per non-blank line."""
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield None, None, f"line is not valid UTF-8 (byte {exc.start})", None
            continue
        try:
            obj = orjson.loads(decoded)
        except orjson.JSONDecodeError as exc:
            yield None, None, f"invalid JSON: {exc}", None
            continue
        yield _object_row(obj, text_field, id_field, stream_field)


def _csv_rows(
    data: bytes, text_column: str = "text", id_column: str = "id", stream_column: str = "source"
) -> Iterator[Row]:
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
    # NUL bytes would stop the csv module; swap them for a noncharacter and flag those rows.
    text = data.decode("utf-8-sig", errors="surrogateescape").replace("\x00", _NUL)
    reader = csv_rows(text, text_column)
    column = find_column(reader.fieldnames, text_column)
    if column is None:
        found = ", ".join(repr(f) for f in reader.fieldnames or []) or "none"
        raise ValueError(
            f"CSV input needs a header row with a {text_column!r} column (columns: {found}); "
            "name the text column with --text-column"
        )
    id_key = find_column(reader.fieldnames, id_column)
    stream_key = find_column(reader.fieldnames, stream_column)
    for row in reader:
        value = row.get(column)
        ident = row.get(id_key) if id_key else None
        stream = _stream(row.get(stream_key)) if stream_key else None
        if value is None:
            yield None, ident, "row has fewer columns than the header", stream
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield None, ident, "row is not valid UTF-8", stream
            continue
        if _NUL in value:
            yield None, ident, "row contains binary data (NUL bytes)", stream
        elif not value.strip():
            yield None, ident, "text is empty", stream
        else:
            yield value, ident, None, stream


def read_rows(
    path: Path, text_column: str = "text", id_column: str = "id", stream_column: str = "source"
) -> list[Row]:
    """Read an input file into (text, id, error, stream) rows in file order.

    Args:
        path: A CSV file (comma, semicolon, tab or ``|`` delimited), a JSONL file, or a JSON
            file holding one array of objects.
        text_column: The CSV column or JSON field holding the text.
        id_column: The column or field whose value is copied to the output as ``id``.
        stream_column: The column or field naming the row's source (its stream).

    Raises:
        ValueError: When the file as a whole cannot be used (e.g. a CSV without a text column,
            or a JSON array that does not parse).
        OSError: When the file cannot be read.
    """
    data = path.read_bytes()
    # A .csv is CSV even when its header opens with '[' ("[id],text").
    elements = None if path.suffix.lower() == ".csv" else json_array(data, path)
    if elements is not None:
        # Rows are the array's elements, numbered from 1 like lines.
        return [_object_row(obj, text_column, id_column, stream_column) for obj in elements]
    if _is_jsonl(path, data[:64]):
        return list(_jsonl_rows(data, text_column, id_column, stream_column))
    return list(_csv_rows(data, text_column, id_column, stream_column))


PROGRESS_ROWS = 20_000
"""Rows scored between two progress lines; a file of at most this many prints none."""


def _scores(
    clf: Classifier,
    texts: Sequence[str],
    batch_size: int,
    log: Callable[[str], None] | None,
    rich: bool | None,
) -> np.ndarray:
    """Calibrated scores of ``texts``, with a progress line per :data:`PROGRESS_ROWS` rows."""
    if log is None or len(texts) <= PROGRESS_ROWS:
        return clf.scores(texts, batch_size)
    parts = []
    steps = -(-len(texts) // PROGRESS_ROWS)
    with Progress("classify", steps, log, rich=rich) as progress:
        for start in range(0, len(texts), PROGRESS_ROWS):
            # Each text's score is its own: scoring in parts gives the same scores as one pass.
            parts.append(clf.scores(texts[start : start + PROGRESS_ROWS], batch_size))
            done = min(start + PROGRESS_ROWS, len(texts))
            progress.advance(f"{done:,} of {len(texts):,} rows scored")
    return np.vstack(parts)


def classify_file(
    input_path: Path,
    output_path: Path,
    model: Path | None,
    batch_size: int = PIPE_BATCH,
    text_column: str = "text",
    id_column: str = "id",
    stream_column: str = "source",
    adapt: bool = True,
    adapt_to: str = "neighbours",
    log: Callable[[str], None] | None = None,
    rich: bool | None = None,
) -> dict[str, Any]:
    """Classify a CSV/JSONL file into a JSONL file with one object per input row, in order.

    Rows that cannot be classified get ``{"row": n, "error": reason}`` with null label fields, so a
    consumer can zip input and output line by line. Each row's ``id_column`` value, when it has
    one, is written as ``id``. Scores are adapted to each stream's label mix
    (:mod:`classifiers.adapt`): a stream is the rows with one ``stream_column`` value, and rows
    without one are the file's own stream (named after the file). With ``adapt_to="neighbours"``
    each row adapts to the mix of the rows of its stream that read most like it
    (:func:`classifiers.adapt.content_mixes`): a source has parts with mixes of their own, and the
    file's own stream may hold several sources. ``"source"`` adapts each stream to its one mix (a
    run's ``classification.adapt_to`` chooses the same way).

    With ``log``, a file of more than :data:`PROGRESS_ROWS` rows reports its progress there (a
    bar on a terminal, see ``rich``; else one line per part scored) and says when it adapts.

    Returns:
        ``{"ok": n, "errors": n, "streams": {stream: StreamMix}}``.

    Raises:
        ValueError: When ``adapt_to`` is neither ``neighbours`` nor ``source``.
    """
    by_content = adapts_by_content(adapt_to)
    rows = read_rows(input_path, text_column, id_column, stream_column)
    clf = Classifier.load(model)
    if not adapt:
        clf = clf.with_overrides({}, None, adapt=False)
    own = stream_name(input_path.name)
    kept = [(t, s or own) for t, _, err, s in rows if err is None and t is not None]
    texts = [t for t, _ in kept]
    streams: dict[Hashable, StreamMix] = {}
    preds: Iterator[Any] = iter(())
    if texts:
        raw = _scores(clf, texts, batch_size, log, rich)
        if log is not None and len(texts) > PROGRESS_ROWS and clf.policy.adaptation is not None:
            log(f"adapting {len(texts):,} rows' scores to their label mix ...")
        scores, streams = adapt_streams(
            raw, [s for _, s in kept], clf.policy.adaptation, texts=texts, by_content=by_content
        )
        preds = iter(clf.predictions(scores))
    ok = errors = 0
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("wb") as out:
        for n, (text, ident, err, _) in enumerate(rows, 1):
            record: dict[str, Any] = {"row": n}
            if ident is not None:
                record["id"] = ident
            if err is not None or text is None:
                record.update(
                    {"label": None, "labels": [], "scores": {}, "needs_review": True, "error": err}
                )
                errors += 1
            else:
                record.update(next(preds).to_json())
                # Which model answered: the active one changes when a retrain is promoted.
                record["model_version"] = clf.version
                ok += 1
            out.write(orjson.dumps(record) + b"\n")
    return {"ok": ok, "errors": errors, "streams": streams}
