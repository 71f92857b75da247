"""File input/output of ``triage classify``: every input row gets an output row, errors included."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from classifiers.model import Classifier

csv.field_size_limit(2**31 - 1)
_NUL = "\ufffe"


def _is_jsonl(path: Path, head: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return True
    if suffix == ".csv":
        return False
    return head.lstrip()[:1] == b"{"


def _jsonl_rows(data: bytes) -> Iterator[tuple[str | None, Any, str | None]]:
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
        text = obj.get("text")
        if not isinstance(text, str):
            yield None, obj.get("id"), "no 'text' string field"
        elif not text.strip():
            yield None, obj.get("id"), "text is empty"
        else:
            yield text, obj.get("id"), None


def _csv_rows(data: bytes) -> Iterator[tuple[str | None, Any, str | None]]:
    # surrogateescape keeps undecodable bytes visible per row instead of failing the whole file.
    # NUL bytes would stop the csv module; swap them for a noncharacter and flag those rows.
    text = data.decode("utf-8-sig", errors="surrogateescape").replace("\x00", _NUL)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise ValueError("CSV input needs a header row with a 'text' column")
    for row in reader:
        value = row.get("text")
        if value is None:
            yield None, row.get("id"), "row has fewer columns than the header"
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield None, row.get("id"), "row is not valid UTF-8"
            continue
        if _NUL in value:
            yield None, row.get("id"), "row contains binary data (NUL bytes)"
        elif not value.strip():
            yield None, row.get("id"), "text is empty"
        else:
            yield value, row.get("id"), None


def read_rows(path: Path) -> list[tuple[str | None, Any, str | None]]:
    """Read an input file into (text, id, error) rows in file order.

    Raises:
        ValueError: When the file as a whole cannot be used (e.g. a CSV without a text column).
        OSError: When the file cannot be read.
    """
    data = path.read_bytes()
    rows = _jsonl_rows(data) if _is_jsonl(path, data[:64]) else _csv_rows(data)
    return list(rows)


def classify_file(
    input_path: Path, output_path: Path, model: Path | None, batch_size: int = 2000
) -> dict[str, int]:
    """Classify a CSV/JSONL file into a JSONL file with one object per input row, in order.

    Rows that cannot be classified get ``{"row": n, "error": reason}`` with null label fields, so a
    consumer can zip input and output line by line.

    Returns:
        ``{"ok": n, "errors": n}``.
    """
    rows = read_rows(input_path)
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
                ok += 1
            out.write(orjson.dumps(record) + b"\n")
    return {"ok": ok, "errors": errors}
