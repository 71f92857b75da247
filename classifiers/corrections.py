"""Reviewers' corrections as training data: parse, keep provenance, resolve, freeze an eval slice.

A correction says "this text is this label", from a reviewer in Slack or from a file another tool
exported (``triage corrections import --input FILE``; files are read by
:mod:`classifiers.correction_files`). This module defines the rows and how they resolve; the
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

import hashlib
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from classifiers.data import Example
from triage.models import LABELS

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
