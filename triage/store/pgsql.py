"""What the PostgreSQL backend writes differently: the one place where the SQL dialects meet.

The sections and the migrations are written once, in the SQL both engines understand. The few
spellings that are DuckDB's are turned into PostgreSQL's here, statement by statement, and Arrow
batches are turned into the CSV that ``COPY`` reads. Everything else is shared.
"""

from __future__ import annotations

import io
import re
from datetime import UTC
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

# DuckDB spellings with a PostgreSQL equivalent (a list parameter, a column type).
_REWRITES = (
    (re.compile(r"list_contains\(\?,\s*([\w.]+)\)"), r"\1 = ANY(?)"),
    (re.compile(r"IN \(SELECT unnest\(\?\)\)"), "= ANY(?)"),
)
_DOUBLE = re.compile(r"\bDOUBLE\b(?!\s+PRECISION)")
# Single-quoted literals are copied as they are; placeholders are only looked for outside them.
_LITERAL = re.compile(r"('(?:[^']|'')*')")


def statement(sql: str) -> str:
    """A section's statement in PostgreSQL's dialect with psycopg's ``%s`` placeholders."""
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    parts = _LITERAL.split(sql)
    for i in range(0, len(parts), 2):  # even parts are outside literals
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    for i in range(1, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%")
    return "".join(parts)


def migration(sql: str) -> str:
    """A migration in PostgreSQL's types (run as a script, without parameters)."""
    return _DOUBLE.sub("DOUBLE PRECISION", sql)


def column_type(t: pa.DataType) -> str:
    """The PostgreSQL type of a stage column for an Arrow type (when the target has none)."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "TEXT[]"
    return "TEXT"


def _csv_ready(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    t = column.type
    if pa.types.is_null(t):
        return column.cast(pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # PostgreSQL text cannot hold NUL; the rest of the text is kept.
        return pc.replace_substring(column, "\x00", "")
    if pa.types.is_timestamp(t) and t.tz is None:
        # Naive times are UTC throughout the project.
        return column.cast(pa.timestamp(t.unit, tz=str(UTC)))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        # An array literal {a,"b c"}: each element quoted, quotes and backslashes escaped.
        values = pc.replace_substring(column.flatten(), "\\", "\\\\")
        values = pc.replace_substring(values, '"', '\\"')
        quoted = pc.binary_join_element_wise('"', values, '"', "")
        lists = pa.ListArray.from_arrays(_offsets(column), quoted, mask=pc.is_null(column))
        joined = pc.binary_join(lists, ",")
        return pc.binary_join_element_wise("{", joined, "}", "")
    return column


def _offsets(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets
    # Offsets of a sliced array start where the slice does: make them start at zero.
    return pc.subtract(offsets, offsets[0])


def csv_bytes(rows: pa.Table) -> bytes:
    """The rows as CSV without a header, as ``COPY ... (FORMAT csv)`` reads them.

    An empty string is written quoted and a NULL unquoted, so ``COPY`` keeps them apart.
    """
    columns = [_csv_ready(rows.column(i).combine_chunks()) for i in range(rows.num_columns)]
    ready = pa.table(columns, names=rows.column_names)
    out = io.BytesIO()
    pacsv.write_csv(ready, out, pacsv.WriteOptions(include_header=False))
    return out.getvalue()


def scores_json(rows: pa.Table, labels: tuple[str, ...]) -> pa.Array:
    """The ``scores`` JSON text of each prediction from its ``score_<label>`` columns.

    The same text as the DuckDB backend's ``printf`` (five decimals, labels in order).
    """
    columns = [rows.column(f"score_{lab}").to_pylist() for lab in labels]
    texts: list[Any] = [
        "{" + ", ".join(f'"{lab}": {v:.5f}' for lab, v in zip(labels, values, strict=True)) + "}"
        for values in zip(*columns, strict=True)
    ]
    return pa.array(texts, pa.string())
