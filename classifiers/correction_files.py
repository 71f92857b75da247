"""Corrections files: read CSV/JSONL exports of other tools and plan their import.

``triage corrections import --input FILE`` runs :func:`import_file` against the stored
corrections and stores ``report.to_store``. The rows themselves, their provenance and how they
resolve are in :mod:`classifiers.corrections`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifiers.corrections import (
    DEFAULT_SOURCE,
    Correction,
    normalise_label,
    resolve_latest,
)
from triage.models import LABELS
from triage.tabular import csv_delimiter

# Real-world exports occasionally carry very long cells; the csv module's default limit is 128 KiB.
csv.field_size_limit(2**31 - 1)


class CorrectionsFileError(ValueError):
    """A corrections file cannot be read at all (missing, no ``text``/``label`` column)."""


@dataclass(frozen=True, slots=True)
class RowError:
    """A row of an import that was not accepted, and why (reported, never fatal)."""

    line: int
    reason: str

    def __str__(self) -> str:
        """``line 12: empty text``."""
        return f"line {self.line}: {self.reason}"


@dataclass(slots=True)
class ParsedFile:
    """What :func:`read_corrections` found in a file."""

    path: Path
    corrections: list[Correction]
    errors: list[RowError]
    read: int
    """Data rows read (accepted + rejected; blank JSONL lines are not rows)."""


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    text = path.read_text(encoding="utf-8-sig")
    # Spreadsheets in many locales export with ';' (or tabs): read with whichever splits the
    # header into a text column.
    delimiter = csv_delimiter(text, "text")
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip().lower() for h in header]
        missing = [c for c in ("text", "label") if c not in names]
        if missing:
            raise CorrectionsFileError(
                f"{path}: no {' or '.join(repr(c) for c in missing)} column "
                f"(columns: {', '.join(header) or 'none'}); expected text, label[, source]"
            )
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(names):
                unquoted = "comma" if delimiter == "," else repr(delimiter)
                yield line, f"{len(cells)} cells for {len(names)} columns (unquoted {unquoted}?)"
                continue
            yield line, dict(zip(names, cells, strict=False))


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with path.open(encoding="utf-8-sig") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield n, f"invalid JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(row, dict):
                yield n, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield n, {str(k).lower(): v for k, v in row.items()}


def read_corrections(
    path: str | Path,
    *,
    default_source: str = DEFAULT_SOURCE,
    now: datetime | None = None,
) -> ParsedFile:
    """Parse a CSV or JSONL corrections file (``text``, ``label``, optional ``source``).

    A bad row (empty text, unknown label, invalid JSON) is reported with its line number and
    skipped; the rest are imported. Labels are matched loosely ("Service Issue" is
    ``service_issue``); other columns are ignored.

    Args:
        path: A ``.csv`` file (header row) or a ``.jsonl``/``.ndjson`` file (one object a line).
        default_source: The source of rows that name none.
        now: The corrections' time (default: now, UTC); later rows of the file win over earlier
            ones for the same text.

    Returns:
        The accepted corrections in file order, the row errors and the number of rows read.

    Raises:
        CorrectionsFileError: When the file is missing, of an unknown kind, or has no ``text`` or
            ``label`` column (no row could be read).
    """
    p = Path(path)
    if not p.is_file():
        raise CorrectionsFileError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(p)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(p)
    else:
        raise CorrectionsFileError(f"{p}: expected a .csv or .jsonl file")
    when = (now or datetime.now(UTC)).astimezone(UTC)
    provenance = str(p.resolve())
    out: list[Correction] = []
    errors: list[RowError] = []
    read = 0
    try:
        for line, row in rows:
            read += 1
            if isinstance(row, str):
                errors.append(RowError(line, row))
                continue
            text = row.get("text")
            if text is not None and not isinstance(text, str):
                errors.append(RowError(line, f"text is not a string ({type(text).__name__})"))
                continue
            if not text or not text.strip():
                errors.append(RowError(line, "empty text"))
                continue
            raw_label = row.get("label")
            label = normalise_label(raw_label)
            if label is None:
                shown = (
                    "missing label" if raw_label in (None, "") else f"unknown label {raw_label!r}"
                )
                errors.append(RowError(line, f"{shown} (expected one of {', '.join(LABELS)})"))
                continue
            source = row.get("source")
            src = source.strip() if isinstance(source, str) and source.strip() else default_source
            out.append(
                Correction(
                    text=text,
                    label=label,
                    source=src,
                    provenance_kind="file",
                    provenance=provenance,
                    created_at=when,
                    line=line,
                )
            )
    except UnicodeDecodeError as exc:
        raise CorrectionsFileError(f"{p}: not UTF-8 text ({exc.reason})") from exc
    return ParsedFile(path=p, corrections=out, errors=errors, read=read)


@dataclass(slots=True)
class ImportReport:
    """The counts ``triage corrections import`` prints, and the rows to store."""

    read: int = 0
    """Data rows read from the file."""
    added: int = 0
    """Texts that had no correction before."""
    updated: int = 0
    """Texts whose current label changes (a later correction wins)."""
    unchanged: int = 0
    """Texts that already had this label (nothing stored)."""
    rejected: int = 0
    """Rows with an error (see ``errors``)."""
    repeated: int = 0
    """Rows overridden by a later row of the same file for the same text."""
    errors: list[RowError] = field(default_factory=list)
    to_store: list[Correction] = field(default_factory=list)
    """The new rows for the ``corrections`` table (the added and updated ones)."""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (``triage corrections import --json``), errors as strings."""
        return {
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "repeated": self.repeated,
            "errors": [str(e) for e in self.errors],
        }

    def summary(self) -> str:
        """One line for people: ``read 120: 100 added, 5 updated, ...``."""
        return (
            f"read {self.read}: {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.repeated} repeated in the file, "
            f"{self.rejected} rejected"
        )


def plan_import(current: Iterable[Correction], incoming: Sequence[Correction]) -> ImportReport:
    """Compare incoming corrections with the stored ones; count them and choose what to store.

    Args:
        current: The stored corrections (all rows or already resolved; they are resolved here).
        incoming: New corrections, later than every stored one (an import happens now).

    Returns:
        A report whose ``to_store`` holds the rows to insert; ``read``, ``rejected`` and
        ``errors`` are left for the caller (see :func:`import_file`).
    """
    known = {c.key: c for c in resolve_latest(current)}
    winners = resolve_latest(incoming)
    report = ImportReport(repeated=len(incoming) - len(winners))
    for c in winners:
        before = known.get(c.key)
        if before is None:
            report.added += 1
            report.to_store.append(c)
        elif before.label == c.label:
            report.unchanged += 1
        else:
            report.updated += 1
            report.to_store.append(c)
    return report


def import_file(
    path: str | Path,
    current: Iterable[Correction],
    *,
    default_source: str = DEFAULT_SOURCE,
    now: datetime | None = None,
) -> ImportReport:
    """Read a corrections file and plan its import against the stored corrections.

    The caller stores ``report.to_store`` (one Arrow insert: :func:`to_arrow`) and prints
    ``report.summary()`` and the errors.

    Raises:
        CorrectionsFileError: See :func:`read_corrections`.
    """
    parsed = read_corrections(path, default_source=default_source, now=now)
    report = plan_import(current, parsed.corrections)
    report.read = parsed.read
    report.rejected = len(parsed.errors)
    report.errors = parsed.errors
    return report
