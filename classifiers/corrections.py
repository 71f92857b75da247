"""Reviewers' corrections as training data: parse, keep provenance, resolve, freeze an eval slice.

A correction says "this text is this label", from a reviewer in Slack or from a file another tool
exported (``triage corrections import --input FILE``). This module is the engine behind both; the
store keeps the rows (see "Storage" below) and the retrain loop (:mod:`classifiers.retrain`) reads
them back.

Storage (one append-only table; the store package implements it, this module defines the rows)::

    corrections(
        id              VARCHAR PRIMARY KEY,   -- Correction.id: deterministic, so re-inserting is a no-op
        text_key        VARCHAR NOT NULL,      -- text_key(text): the same text however it is spaced/cased
        text            VARCHAR NOT NULL,
        label           VARCHAR NOT NULL,      -- one of triage.models.LABELS
        source          VARCHAR NOT NULL,      -- the stream the text came from (connector name, "import")
        provenance_kind VARCHAR NOT NULL,      -- 'slack' (a reviewer's click) or 'file' (an import)
        provenance      VARCHAR NOT NULL,      -- reviewer (user id or name) or the imported file's path
        line            BIGINT,                -- the row's line in that file (file imports)
        item_id         VARCHAR,               -- the stored item corrected (Slack corrections)
        previous_label  VARCHAR,               -- what the model had said, when known
        created_at      TIMESTAMPTZ NOT NULL   -- when the correction was made (import: import time)
    )
    -- index on text_key; the current label of a text is its row with the latest
    -- (created_at, id-insertion order): resolve_latest() over the rows, or in SQL
    -- QUALIFY row_number() OVER (PARTITION BY text_key ORDER BY created_at DESC, rowid DESC) = 1.

Every accepted correction is kept (the audit trail: who said what, when); only the latest per text
is trained on. An import whose row repeats the current label adds no row, so importing the same
file twice changes nothing.

The frozen evaluation slice: a correction is in it when a salted hash of its text key falls under
the share (:func:`in_eval_slice`). Membership depends on the text alone, so a text never moves
between training and evaluation as corrections arrive; each source's slice is that share of its
own corrections and grows with them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from classifiers.data import Example
from triage.models import LABELS

# Real-world exports occasionally carry very long cells; the csv module's default limit is 128 KiB.
csv.field_size_limit(2**31 - 1)

DEFAULT_SOURCE = "import"
"""The source of an imported row that names none."""
DEFAULT_EVAL_SHARE = 0.2
EVAL_SALT = "triage-eval-slice-v1"
"""Changing the salt (or the share) re-deals the slice: models judged on different slices are not
comparable, so both are recorded with every model the retrain loop trains."""
ORIGIN_PREFIX = "corrections/"
"""``Example.origin`` of a correction used as training data (cross-source family: its source)."""

PROVENANCE_KINDS = ("slack", "file")

CORRECTIONS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text_key", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),
        ("provenance_kind", pa.string()),
        ("provenance", pa.string()),
        ("line", pa.int64()),
        ("item_id", pa.string()),
        ("previous_label", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""The Arrow shape of the ``corrections`` table (insert with one Arrow batch, never row by row)."""


class CorrectionsFileError(ValueError):
    """A corrections file cannot be read at all (missing, no ``text``/``label`` column)."""


def normalise_text(text: str) -> str:
    """The form two corrections must share to be "the same text": NFKC, case-folded, one space.

    Deliberately lighter than :func:`classifiers.normalize.normalize`: two posts that differ in a
    link or a handle are different texts and may carry different labels.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_key(text: str) -> str:
    """A stable key of a text's normalised form (:func:`normalise_text`), 24 hex characters."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()[:24]


def normalise_label(value: object) -> str | None:
    """The label a cell names ("Service Issue", "service-issue" → ``service_issue``), or None."""
    if not isinstance(value, str):
        return None
    label = "_".join(value.strip().lower().replace("-", " ").split())
    return label if label in LABELS else None


@dataclass(frozen=True, slots=True)
class Correction:
    """One correction: a text, the label it should have had, and where that verdict came from."""

    text: str
    label: str
    source: str
    provenance_kind: str
    """``slack`` (a reviewer's decision) or ``file`` (an import)."""
    provenance: str
    """The reviewer (Slack user id or name) or the imported file's path."""
    created_at: datetime
    line: int | None = None
    """The row's first line in its file (file imports), 1-based, counting the header."""
    item_id: str | None = None
    previous_label: str | None = None
    key: str = field(default="")
    """The text key (filled from ``text`` when not given)."""

    def __post_init__(self) -> None:
        """Fill the text key; refuse labels and provenance kinds outside the contract."""
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r} (expected one of {', '.join(LABELS)})")
        if self.provenance_kind not in PROVENANCE_KINDS:
            raise ValueError(f"unknown provenance kind {self.provenance_kind!r}")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware (UTC)")
        if not self.key:
            object.__setattr__(self, "key", text_key(self.text))

    @property
    def id(self) -> str:
        """Deterministic row id: the same correction from the same place at the same time."""
        parts = (
            self.provenance_kind,
            self.provenance,
            str(self.line or ""),
            self.item_id or "",
            self.key,
            self.label,
            self.created_at.isoformat(),
        )
        return "c-" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:20]

    def to_example(self) -> Example:
        """The correction as a training example; its source is its cross-source family."""
        return Example(
            text=self.text,
            label=self.label,
            labels=[self.label],
            origin=f"{ORIGIN_PREFIX}{self.source}",
            row=self.line or 0,
            group=f"corrections:{self.source}",
        )


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
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
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
                yield line, f"{len(cells)} cells for {len(names)} columns (unquoted comma?)"
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


def resolve_latest(corrections: Iterable[Correction]) -> list[Correction]:
    """One correction per text: the latest (by ``created_at``; equal times, the later in order).

    Returns:
        The winners, oldest first.
    """
    latest: dict[str, Correction] = {}
    # sorted() is stable: among equal times the input order decides, so a file's later row wins.
    for c in sorted(corrections, key=lambda c: c.created_at):
        latest.pop(c.key, None)  # re-insert so the dict keeps "oldest first" by winning time
        latest[c.key] = c
    return list(latest.values())


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


def from_reviews(rows: Iterable[Mapping[str, Any]]) -> list[Correction]:
    """Corrections from reviewers' Slack decisions (the store's ``training_examples`` rows).

    Args:
        rows: Mappings with ``text``, ``label``, ``decided_by``, ``decided_at`` and optionally
            ``item_id``, ``previous_label`` and ``source`` (the item's source, joined from items).
    """
    out = []
    for r in rows:
        when = r["decided_at"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        out.append(
            Correction(
                text=str(r["text"]),
                label=str(r["label"]),
                source=str(r.get("source") or DEFAULT_SOURCE),
                provenance_kind="slack",
                provenance=str(r["decided_by"]),
                created_at=when.astimezone(UTC),
                item_id=r.get("item_id"),
                previous_label=r.get("previous_label"),
            )
        )
    return out


def to_arrow(corrections: Sequence[Correction]) -> pa.Table:
    """The rows of the ``corrections`` table (:data:`CORRECTIONS_SCHEMA`)."""
    return pa.Table.from_pylist(
        [
            {
                "id": c.id,
                "text_key": c.key,
                "text": c.text,
                "label": c.label,
                "source": c.source,
                "provenance_kind": c.provenance_kind,
                "provenance": c.provenance,
                "line": c.line,
                "item_id": c.item_id,
                "previous_label": c.previous_label,
                "created_at": c.created_at,
            }
            for c in corrections
        ],
        schema=CORRECTIONS_SCHEMA,
    )


def from_arrow(table: pa.Table) -> list[Correction]:
    """Corrections back from ``corrections`` table rows (in table order)."""
    out = []
    for r in table.to_pylist():
        when = r["created_at"]
        out.append(
            Correction(
                text=r["text"],
                label=r["label"],
                source=r["source"],
                provenance_kind=r["provenance_kind"],
                provenance=r["provenance"],
                created_at=when if when.tzinfo else when.replace(tzinfo=UTC),
                line=r.get("line"),
                item_id=r.get("item_id"),
                previous_label=r.get("previous_label"),
                key=r.get("text_key") or "",
            )
        )
    return out


def slice_position(key: str, salt: str = EVAL_SALT) -> float:
    """Where a text key falls in [0, 1) under the salted hash that deals the evaluation slice."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_eval_slice(key: str, share: float = DEFAULT_EVAL_SHARE, salt: str = EVAL_SALT) -> bool:
    """Whether the text with this key belongs to the frozen evaluation slice (never trained on)."""
    return slice_position(key, salt) < share


@dataclass(slots=True)
class Split:
    """Resolved corrections dealt into training rows and the frozen evaluation slice."""

    train: list[Correction]
    eval: list[Correction]
    share: float
    salt: str

    def counts(self) -> dict[str, dict[str, int]]:
        """Per source: ``{"train": n, "eval": n}``."""
        train = Counter(c.source for c in self.train)
        held = Counter(c.source for c in self.eval)
        return {s: {"train": train[s], "eval": held[s]} for s in sorted(set(train) | set(held))}


def split_corrections(
    corrections: Iterable[Correction],
    share: float = DEFAULT_EVAL_SHARE,
    salt: str = EVAL_SALT,
) -> Split:
    """Resolve to the latest per text, then deal the frozen evaluation slice.

    Args:
        corrections: Every stored correction (Slack and imports together).
        share: The share of each source's texts held out for evaluation.
        salt: The slice's salt (:data:`EVAL_SALT`).
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the evaluation share must be between 0 and 1, got {share}")
    train: list[Correction] = []
    held: list[Correction] = []
    for c in resolve_latest(corrections):
        (held if in_eval_slice(c.key, share, salt) else train).append(c)
    return Split(train=train, eval=held, share=share, salt=salt)
