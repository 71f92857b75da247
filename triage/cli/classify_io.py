"""File input/output of ``triage classify``: every input row gets an output row, errors included."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from classifiers.model import PIPE_BATCH, Classifier

csv.field_size_limit(2**31 - 1)
_NUL = "\ufffe"


def _is_jsonl(path: Path, head: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return True
    if suffix == ".csv":
        return False
    return head.lstrip()[:1] == b"{"


def _jsonl_rows(
    data: bytes, text_field: str = "text", id_field: str = "id"
) -> Iterator[tuple[str | None, Any, str | None]]:
    """Yield (text, id, error) per non-blank line."""
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield None, None, f"line is not valid UTF-8 (byte {exc.start})"
            continue
        try:
            obj = orjson.loads(decoded)
        except orjson.JSONDecodeError as exc:
            yield None, None, f"invalid JSON: {exc}"
            continue
        if not isinstance(obj, dict):
            yield None, None, "line is not a JSON object"
            continue
        text = obj.get(text_field)
        ident = obj.get(id_field)
        if not isinstance(text, str):
            yield None, ident, f"no {text_field!r} string field"
        elif not text.strip():
            yield None, ident, "text is empty"
        else:
            yield text, ident, None


def _csv_rows(
    data: bytes, text_column: str = "text", id_column: str = "id"
) -> Iterator[tuple[str | None, Any, str | None]]:
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
    # NUL bytes would stop the csv module; swap them for a noncharacter and flag those rows.
    text = data.decode("utf-8-sig", errors="surrogateescape").replace("\x00", _NUL)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or text_column not in reader.fieldnames:
        found = ", ".join(repr(f) for f in reader.fieldnames or []) or "none"
        raise ValueError(
            f"CSV input needs a header row with a {text_column!r} column (columns: {found}); "
            "name the text column with --text-column"
        )
    for row in reader:
        value = row.get(text_column)
        ident = row.get(id_column)
        if value is None:
            yield None, ident, "row has fewer columns than the header"
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield None, ident, "row is not valid UTF-8"
            continue
        if _NUL in value:
            yield None, ident, "row contains binary data (NUL bytes)"
        elif not value.strip():
            yield None, ident, "text is empty"
        else:
            yield value, ident, None


def read_rows(
    path: Path, text_column: str = "text", id_column: str = "id"
) -> list[tuple[str | None, Any, str | None]]:
    """Read an input file into (text, id, error) rows in file order.

    Args:
        path: A CSV or JSONL file.
        text_column: The CSV column or JSON field holding the text.
        id_column: The column or field whose value is copied to the output as ``id``.

    Raises:
        ValueError: When the file as a whole cannot be used (e.g. a CSV without a text column).
        OSError: When the file cannot be read.
    """
    data = path.read_bytes()
    if _is_jsonl(path, data[:64]):
        return list(_jsonl_rows(data, text_column, id_column))
    return list(_csv_rows(data, text_column, id_column))


def classify_file(
    input_path: Path,
    output_path: Path,
    model: Path | None,
    batch_size: int = PIPE_BATCH,
    text_column: str = "text",
    id_column: str = "id",
) -> dict[str, int]:
    """Classify a CSV/JSONL file into a JSONL file with one object per input row, in order.

    Rows that cannot be classified get ``{"row": n, "error": reason}`` with null label fields, so a
    consumer can zip input and output line by line. Each row's ``id_column`` value, when it has
    one, is written as ``id``.

    Returns:
        ``{"ok": n, "errors": n}``.
    """
    rows = read_rows(input_path, text_column, id_column)
    clf = Classifier.load(model)
    texts = [t for t, _, err in rows if err is None and t is not None]
    preds = iter(clf.predict(texts, batch_size)) if texts else iter(())
    ok = errors = 0
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("wb") as out:
        for n, (text, ident, err) in enumerate(rows, 1):
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
    return {"ok": ok, "errors": errors}
