"""Reading a drop file while its writer is part way through it loses and doubles nothing.

Each drop is read once whole, and again as a scheduled run meets it: first a prefix cut at any
byte (as just written, so its unfinished end waits), then the whole file once it has settled. Both
must give the same items and the same quarantine rows, line numbers included.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import SourceContext, file
from tests.test_connectors_records import PARSERS, drop_files


def outcome(batches: list[Any]) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The items (id and text) and quarantine reasons of a read, in a comparable order."""
    items = [
        (row["external_id"], row["text"])
        for b in batches
        if b.items is not None
        for row in b.items.select(["external_id", "text"]).to_pylist()
    ]
    return sorted(items), sorted(r.reason for r in batches for r in r.rejected)


@settings(PARSERS, max_examples=150)
@given(drop=drop_files(), cut=st.floats(min_value=0, max_value=1), batch_size=st.integers(1, 5))
def test_a_drop_read_part_way_through_its_writing_gives_what_one_read_gives(
    tmp_path_factory: pytest.TempPathFactory, drop: tuple[str, bytes], cut: float, batch_size: int
) -> None:
    name, data = drop
    folder = tmp_path_factory.mktemp("resume")
    path = folder / name
    written = {"path": name, "max_record_bytes": 1024}
    ctx = SourceContext(name="fz", settings=written, base_dir=folder, batch_size=batch_size)
    settled = replace(ctx, settings={**written, "settle_seconds": 0})

    path.write_bytes(data)
    whole = outcome(list(file.fetch(settled, None)))

    path.write_bytes(data[: int(len(data) * cut)])
    first = list(file.fetch(ctx, None))
    path.write_bytes(data)
    cursor = first[-1].cursor if first else None
    assert outcome(first + list(file.fetch(settled, cursor))) == whole
