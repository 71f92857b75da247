"""Reading the header of a tabular export the way people actually save them.

Spreadsheets in many locales write ``;`` between cells, others tabs or ``|``, and header names
arrive title-cased or padded ("Text", "text "). ``triage classify``, training files, corrections
imports and the ``file`` source all read CSV through these two functions, so one file reads the
same everywhere.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

CSV_DELIMITERS = (",", ";", "\t", "|")
"""The delimiters tried, in order: commas first, as the CSV default."""

HEADER_CHARS = 65_536
"""How much of a file's start :func:`csv_delimiter` parses for its header (quoted header cells
may span lines; no real header comes near this)."""


def find_column(columns: Sequence[str] | None, wanted: str) -> str | None:
    """The header column that names ``wanted``: itself, else one equal but for case and spaces.

    Args:
        columns: The header's column names (None for a file without one).
        wanted: The column asked for.
    """
    names = list(columns or [])
    if wanted in names:
        return wanted
    key = wanted.strip().casefold()
    return next((name for name in names if name.strip().casefold() == key), None)


def csv_delimiter(text: str, wanted: str | Sequence[str]) -> str:
    """The delimiter that makes one of ``wanted`` a column of the header of CSV ``text``.

    Commas are tried first; a header whose columns only come apart on ``;``, a tab or ``|``
    (:data:`CSV_DELIMITERS`) is read with that instead. When none yields a wanted column, commas,
    and the caller reports the missing column with the header it found.

    Args:
        text: The CSV text, at least its header line (decoded; a byte-order mark removed).
        wanted: A column the file must have (e.g. ``text``), or several accepted names;
            compared as :func:`find_column` does.
    """
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    # Only the header is parsed: a StringIO of a whole export would copy it once per delimiter.
    head = text[:HEADER_CHARS]
    for delimiter in CSV_DELIMITERS:
        header = next(csv.reader(io.StringIO(head, newline=""), delimiter=delimiter), [])
        if any(find_column(header, name) is not None for name in names):
            return delimiter
    return ","
