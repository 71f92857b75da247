"""Read labelled examples from CSV/JSONL files or folders of them, and the shipped starter corpus."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from triage.models import LABELS
from triage.tabular import csv_delimiter

STARTER_DIR = Path(__file__).parent / "corpus" / "starter"
EVAL_DIR = Path(__file__).parent / "corpus" / "eval"
"""Eval-only sets of our own writing: scored as new sources, never trained on."""
TEACHER_DIR = Path(__file__).parent / "corpus" / "distilled"

# Real-world exports occasionally carry very long cells; the csv module's default limit is 128 KiB.
csv.field_size_limit(2**31 - 1)


@dataclass(slots=True)
class Example:
    """One labelled text: its primary label and every label that applies."""

    text: str
    label: str
    labels: list[str] = field(default_factory=list)
    origin: str = ""
    row: int = 0
    """The row's number in its file (1 = the first data row)."""
    group: str = ""
    """The source the text came from, for cross-source evaluation: the row's ``source_type``
    when it has one (the starter corpus), else the file name (``airline_tweets.csv``)."""
    teacher_probs: dict[str, float] | None = None
    """A teacher row's label probabilities (:mod:`classifiers.teacher`), for soft targets."""


class DataError(ValueError):
    """A training or evaluation file cannot be used; the message names the file and row."""


DATA_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson", ".json"})
"""The files a folder given as training or evaluation data is searched for (``.json``: an array
of rows or JSON Lines, as :func:`_rows` reads a file given by name)."""


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in DATA_SUFFIXES)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return [path]


def csv_rows(text: str, wanted: str) -> csv.DictReader[str]:
    """A ``DictReader`` over CSV ``text`` with :func:`csv_delimiter`'s delimiter for ``wanted``."""
    return csv.DictReader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text, wanted))


def json_array(data: bytes, path: Path) -> list[object] | None:
    """The elements of a JSON array document, or None when ``data`` does not start with ``[``.

    A ``.json`` export is usually one array of objects, not JSON Lines; it is read whole.

    Args:
        data: The file's bytes.
        path: The file, named in the error.

    Raises:
        DataError: When the document starts with ``[`` but is not one valid JSON array.
    """
    if data.lstrip()[:1] != b"[":
        return None
    try:
        value = json.loads(data)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: starts with '[' but is not one valid JSON array: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the JSON array is not valid UTF-8 (byte {exc.start})") from exc
    # A document that starts with '[' and parses is an array.
    return list(value)


def _rows(path: Path) -> Iterable[dict[str, object]]:
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
        reader = csv_rows(text, "text")
        # Header names compared without case or padding ("Text", "Label "), as for classify.
        reader.fieldnames = [name.strip().casefold() for name in reader.fieldnames or []]
        yield from reader
        return
    data = path.read_bytes()
    elements = json_array(data, path)
    if elements is not None:
        for n, element in enumerate(elements, 1):
            if not isinstance(element, dict):
                raise DataError(f"{path} element {n}: not a JSON object")
            yield element
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    # Split on newlines only: str.splitlines would also cut at U+2028, which JSON allows in text.
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n}: invalid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n}: not a JSON object")
            yield row


def load_examples(paths: Sequence[str | Path]) -> list[Example]:
    """Load ``text``/``label`` (and optional ``labels``) rows from files or folders.

    Args:
        paths: CSV, JSONL or JSON-array files, or folders searched recursively for them.

    Returns:
        The examples, in file order.

    Raises:
        DataError: On a missing file, a missing column or an unknown label.
    """
    out: list[Example] = []
    for given in paths:
        for path in _files(Path(given)):
            for n, row in enumerate(_rows(path), 1):
                text = row.get("text")
                label = row.get("label")
                if not isinstance(text, str) or not text.strip():
                    continue
                if label not in LABELS:
                    raise DataError(f"{path} row {n}: unknown or missing label {label!r}")
                declared = row.get("labels")
                if isinstance(declared, str):
                    labels = [s for s in declared.replace("|", ",").split(",") if s]
                elif isinstance(declared, list):
                    labels = [str(s) for s in declared]
                else:
                    labels = [str(label)]
                all_labels = [lab for lab in labels if lab in LABELS]
                if label not in all_labels:
                    all_labels.insert(0, str(label))
                source_type = row.get("source_type")
                group = source_type if isinstance(source_type, str) and source_type else path.name
                probs = row.get("teacher_probs")
                out.append(
                    Example(
                        text=text,
                        label=str(label),
                        labels=all_labels,
                        origin=path.name,
                        row=n,
                        group=group,
                        teacher_probs=(
                            {k: float(v) for k, v in probs.items() if k in LABELS}
                            if isinstance(probs, dict)
                            else None
                        ),
                    )
                )
    return out


def load_starter() -> list[Example]:
    """Load the starter corpus that ships with the project (our own writing).

    Its examples' origin is ``starter/<file>``, which :func:`source_family` relies on.
    """
    examples = load_examples([STARTER_DIR])
    for ex in examples:
        ex.origin = f"starter/{ex.origin}"
    return examples


def from_starter(example: Example) -> bool:
    """Whether an example is starter text (:func:`load_starter`, or teacher rows made from it)."""
    return example.origin.startswith("starter/")


def load_teacher_rows(folder: Path = TEACHER_DIR) -> dict[str, list[Example]]:
    """Load the teacher-labelled recombined starter texts (:mod:`classifiers.teacher`).

    Their origin is ``starter/distilled/<file>``: they are made of starter text and weigh like it.

    Returns:
        The rows by the source family their teacher left out (``""``: the teacher that saw every
        family). A missing folder gives an empty mapping.

    Raises:
        DataError: When a file's rows disagree on their teacher.
    """
    out: dict[str, list[Example]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.jsonl")):
        teachers = {str(row.get("teacher_without") or "") for row in _rows(path)}
        if len(teachers) != 1:
            raise DataError(f"{path}: rows from more than one teacher ({sorted(teachers)})")
        examples = load_examples([path])
        for ex in examples:
            ex.origin = f"starter/distilled/{ex.origin}"
        out.setdefault(teachers.pop(), []).extend(examples)
    return out


def teacher_rows_without(
    rows: Mapping[str, Sequence[Example]], family: str
) -> Mapping[str, Sequence[Example]]:
    """The teacher rows a model may train on when ``family`` is kept out of its training data.

    The rows of the teacher that left ``family`` out stand in for the all-families teacher's;
    every other held-out teacher keeps only the rows made from other families' texts. Those
    teachers saw ``family``, but their rows only train the inner folds that choose the epochs and
    thresholds, never the model that scores ``family``. When no teacher left ``family`` out (a
    shared file: no teacher ever saw it), the rows are returned as they are.
    """
    if family not in rows:
        return rows
    out: dict[str, Sequence[Example]] = {"": rows[family]}
    for key, examples in rows.items():
        if key not in ("", family):
            out[key] = [ex for ex in examples if source_family(ex) != family]
    return out


# The starter corpus's source types, grouped into the kinds of source a customer connects: a
# model judged on one family has seen none of its platforms. Shared or user files are their own
# family (their file name).
SOURCE_FAMILIES: dict[str, str] = {
    "tweet": "starter:social-posts",
    "mastodon": "starter:social-posts",
    "app_review": "starter:app-reviews",
    "reddit": "starter:communities",
    "hn_comment": "starter:communities",
    "forum": "starter:communities",
    "slack_community": "starter:communities",
    "blog_comment": "starter:communities",
    "discord": "starter:communities",
    "youtube_comment": "starter:creator-comments",
    "instagram_comment": "starter:creator-comments",
    "tiktok_comment": "starter:creator-comments",
    "facebook_comment": "starter:creator-comments",
    "twitch_chat": "starter:creator-comments",  # a creator's live-stream chat
    "email": "starter:direct",
    "web_form": "starter:direct",
    "chat": "starter:direct",
}


def source_family(example: Example) -> str:
    """The cross-source group of an example: a starter source-type family, else its group."""
    if from_starter(example) and example.group:
        return SOURCE_FAMILIES.get(example.group, f"starter:{example.group}")
    return example.group or example.origin


def assign_folds(families: Sequence[str], k: int) -> dict[str, int]:
    """Spread families over ``k`` folds so that no family is split and the folds are even.

    Families are taken largest first, each into the fold with the fewest examples so far (ties
    by name, so the assignment is reproducible). With ``k`` or fewer families, each is a fold.
    """
    sizes: dict[str, int] = {}
    for fam in families:
        sizes[fam] = sizes.get(fam, 0) + 1
    k = max(1, min(k, len(sizes)))
    load = [0] * k
    fold_of: dict[str, int] = {}
    for fam in sorted(sizes, key=lambda f: (-sizes[f], f)):
        j = min(range(k), key=lambda i: (load[i], i))
        fold_of[fam] = j
        load[j] += sizes[fam]
    return fold_of
