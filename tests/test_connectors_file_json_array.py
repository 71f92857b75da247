"""Exports that hold one JSON array, through the ``file`` source into a real DuckDB store.

Such files are read element by element with a byte-offset cursor, like JSON Lines: these tests
check that a run stores every element once, quarantines the bad ones with the line they start on,
resumes in the middle of an array, waits for an array that is still being written, and reads an
export again when it is written again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import SourceContext, file
from connectors.json_array import ArrayReader
from tests.test_connectors_file import rows, run_ingest, write_config

STAMP = "2026-01-02T03:04:05Z"


def record(ident: str, text: str = "the export works 👍 café") -> dict[str, Any]:
    return {"id": ident, "text": text, "created_at": STAMP}


def pretty(elements: list[str]) -> str:
    """An array as exporters write it: a BOM, an element per few lines, two-space indents."""
    return "\ufeff[\n" + ",\n".join(elements) + "\n]\n"


def element(ident: str, text: str = "the export works 👍 café") -> str:
    return json.dumps(record(ident, text), indent=2, ensure_ascii=False)


def quarantined(tmp_path: Path, source: str) -> dict[str, str]:
    """Quarantine reasons by where they were read (``export.json line 7``)."""
    got = rows(tmp_path, f"SELECT reason FROM quarantine WHERE source = '{source}'")
    return {r[0].split(":")[0]: r[0] for r in got}


def stored(tmp_path: Path) -> list[str]:
    return sorted(r[0] for r in rows(tmp_path, "SELECT external_id FROM items"))


def test_an_array_export_is_stored_element_by_element_and_bad_elements_quarantined(
    tmp_path: Path,
) -> None:
    elements = [
        element("a"),
        element("b", "line one\nline two, with a ] and a } in it"),
        '{"id": "c", "text": "no comma" "created_at": "2026-01-02T03:04:05Z"}',
        "42",
        element("d", "x" * 3000),
        element("e"),
        '{"id": "f", "text": "missing comma before me", "created_at": "2026-01-02T03:04:05Z"}',
    ]
    text = pretty(elements[:6]).replace("\n]\n", " " + elements[6] + "\n]\n")
    (tmp_path / "export.json").write_text(text, encoding="utf-8")
    config = write_config(
        tmp_path,
        [{"name": "x", "type": "file", "path": ".", "pattern": "*.json", "max_record_bytes": 2048}],
    )
    summary = run_ingest(config, "x", batch_size=2)
    assert stored(tmp_path) == ["a", "b", "e", "f"]
    texts = dict(rows(tmp_path, "SELECT external_id, text FROM items"))
    assert texts["b"] == "line one\nline two, with a ] and a } in it"
    assert texts["a"] == "the export works 👍 café"
    # Each reason names the line its element starts on, counted from the top of the file.
    starts = {ident: 1 + text[: text.index(f'"id": "{ident}"')].count("\n") for ident in "cd"}
    got = quarantined(tmp_path, "x")
    assert sorted(got) == sorted(
        [f"export.json line {starts['c']}", f"export.json line {starts['c'] + 1}"]
        + [f"export.json line {starts['d'] - 1}"]
    )
    assert "invalid JSON" in got[f"export.json line {starts['c']}"]
    assert "over max_record_bytes (2,048)" in got[f"export.json line {starts['d'] - 1}"]
    assert summary["stored"] == 4 and summary["quarantined"] == 3
    # The element that is not an object is kept for audit as it was written.
    raws = [r[0] for r in rows(tmp_path, "SELECT raw FROM quarantine")]
    assert "42" in raws

    # Unchanged, the finished file is not read again: nothing more is stored or quarantined.
    again = run_ingest(config, "x")
    assert again["fetched"] == 0 and len(quarantined(tmp_path, "x")) == 3


def test_a_run_resumes_inside_an_array_after_the_last_stored_batch(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(pretty([element(str(i), f"ünïcode {i} 🚀") for i in range(7)]), "utf-8")
    ctx = SourceContext(name="x", settings={"path": "export.json"}, base_dir=tmp_path, batch_size=3)
    first = next(iter(file.fetch(ctx, None)))
    assert first.items is not None
    assert first.items.column("external_id").to_pylist() == ["0", "1", "2"]
    # A run that stopped after its first batch: the next one starts from that batch's cursor.
    rest = list(file.fetch(ctx, first.cursor))
    ids = [i for b in rest if b.items is not None for i in b.items.column("external_id").to_pylist()]
    assert ids == ["3", "4", "5", "6"]
    assert not any(b.rejected for b in rest)
    assert rest[-1].cursor["files"]["export.json"]["closed"] is True


def test_an_array_still_being_written_waits_then_a_rewritten_export_is_read_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "export.json"
    head = "[\n" + element("a") + ",\n"
    path.write_text(head + element("b")[:25], "utf-8")
    config = write_config(tmp_path, [{"name": "x", "type": "file", "path": "export.json"}])
    run_ingest(config, "x")
    # The element cut off by the end of the file is not an error: its writer is not done.
    assert stored(tmp_path) == ["a"] and quarantined(tmp_path, "x") == {}
    path.write_text(head + element("b") + ",\n" + element("c") + "\n]\n", "utf-8")
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "b", "c"] and quarantined(tmp_path, "x") == {}
    # The export is run once more and written over the old file, with one record more.
    path.write_text(pretty([element(i) for i in "abcd"]), "utf-8")
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "b", "c", "d"]
    assert rows(tmp_path, "SELECT count(*) FROM items") == [(4,)]


def test_a_broken_array_is_reported_once_and_read_whole_once_fixed(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    # A quote that never closes: where the element ends cannot be told, so nothing after it is.
    broken = '{"id": "b", "text": "unclosed, "created_at": "2026-01-02T03:04:05Z"}'
    path.write_text("[\n" + element("a") + ",\n" + element("c") + ",\n" + broken + "\n]\n")
    config = write_config(tmp_path, [{"name": "x", "type": "file", "path": "export.json"}])
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "c"]
    (reason,) = quarantined(tmp_path, "x").values()
    assert reason.startswith("export.json line 12: invalid JSON")
    assert "the rest of the file is not read" in reason and "sources reset" in reason
    run_ingest(config, "x")
    assert len(quarantined(tmp_path, "x")) == 1  # reported once, not on every run
    fixed = broken.replace("unclosed, ", 'closed", ')
    path.write_text("[\n" + element("a") + ",\n" + element("c") + ",\n" + fixed + "\n]\n")
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "b", "c"]


def test_an_element_missing_its_closing_brace_does_not_take_in_the_ones_after_it(
    tmp_path: Path,
) -> None:
    # Followed by its brackets, the broken element would run to the array's end: every later
    # element would be lost inside its quarantine row, and the array would never close.
    broken = element("b").rstrip().removesuffix("}")
    path = tmp_path / "export.json"
    path.write_text(pretty([element("a"), broken, element("c"), element("d")]), "utf-8")
    config = write_config(tmp_path, [{"name": "x", "type": "file", "path": "export.json"}])
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "c", "d"]
    (reason,) = quarantined(tmp_path, "x").values()
    assert reason.startswith("export.json line 7: invalid JSON")
    assert "an object starts on line 12 before this one is closed" in reason
    (raw,) = rows(tmp_path, "SELECT raw FROM quarantine")[0]
    assert '"b"' in raw and '"c"' not in raw
    run_ingest(config, "x")  # the array was read to its end: nothing new, nothing twice
    assert stored(tmp_path) == ["a", "c", "d"] and len(quarantined(tmp_path, "x")) == 1


@pytest.mark.parametrize(
    "broken",
    [
        # One bracket missing inside a nested list or object. Counted as depth alone, each kept
        # the element open past every later one: those were lost, and the array never closed.
        '{"id": "b", "tags": [{"k": 1], "created_at": "2026-01-02T03:04:05Z"}',
        '{"id": "b", "tags": ["x", {"k": [1}, "created_at": "2026-01-02T03:04:05Z"}',
        '{"id": "b", "tags": ["x", "y"}',
    ],
)
def test_a_bracket_missing_inside_an_element_costs_that_element_alone(
    tmp_path: Path, broken: str
) -> None:
    path = tmp_path / "export.json"
    lines = [json.dumps(record(i)) for i in ("a", "c", "d")]
    path.write_text("[\n" + ",\n".join([lines[0], broken, *lines[1:]]) + "\n]\n", "utf-8")
    config = write_config(tmp_path, [{"name": "x", "type": "file", "path": "export.json"}])
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "c", "d"]
    (reason,) = quarantined(tmp_path, "x").values()
    assert reason.startswith("export.json line 3: invalid JSON")
    assert "not read" not in reason and "cut off" not in reason
    (raw,) = rows(tmp_path, "SELECT raw FROM quarantine")[0]
    assert raw == broken
    # The array was read to its own ']': a second run finds nothing new and reports nothing twice.
    assert run_ingest(config, "x")["fetched"] == 0
    assert len(quarantined(tmp_path, "x")) == 1
    # Exported again with the element last: the array's ']' ends it, and the array closes.
    lines.append(json.dumps(record("e")))
    path.write_text("[\n" + ",\n".join([*lines, broken]) + "\n]\n", "utf-8")
    run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "c", "d", "e"]
    got = quarantined(tmp_path, "x")
    assert sorted(got) == ["export.json line 3", "export.json line 6"]
    assert "not read" not in got["export.json line 6"]
    assert "cut off" not in got["export.json line 6"]


def test_a_json_lines_file_that_opens_with_a_bracket_is_read_as_the_array_it_is(
    tmp_path: Path,
) -> None:
    one = json.dumps(record("a"))
    two = json.dumps(record("b"))
    (tmp_path / "export.jsonl").write_text(f"[\n{one},\n{two}\n]\n")
    config = write_config(tmp_path, [{"name": "e", "type": "file", "path": "export.jsonl"}])
    run_ingest(config, "e")
    assert stored(tmp_path) == ["a", "b"] and quarantined(tmp_path, "e") == {}


def test_sources_check_samples_an_array_export(tmp_path: Path) -> None:
    (tmp_path / "export.json").write_text(pretty([element("a"), "[1, 2]", element("c")]))
    ctx = SourceContext(name="x", settings={"path": "export.json"}, base_dir=tmp_path)
    batch = file.sample(ctx)
    assert batch.items is not None and batch.items.num_rows == 2
    (reject,) = batch.rejected
    assert reject.reason == "export.json line 7: record is a list, not an object"


# Texts that stress the reader: quotes, backslashes, brackets, commas, line breaks and characters
# of two to four bytes, which the tiny chunks below split anywhere.
tricky = st.text(st.sampled_from(list('a"\\[]{},: \n\té€👍\u2028')), max_size=30)
records = st.lists(st.fixed_dictionaries({"id": st.text(max_size=4), "text": tricky}), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    items=records,
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    chunk=st.integers(1, 64),
    cut=st.integers(0, 10_000),
)
def test_any_array_is_read_whole_in_any_chunks_and_resumes_at_any_cursor(
    items: list[dict[str, str]], indent: int | None, ascii_only: bool, chunk: int, cut: int
) -> None:
    data = json.dumps(items, indent=indent, ensure_ascii=ascii_only).encode()
    reader = ArrayReader(io.BytesIO(data), 0, 0, 1 << 20, chunk=chunk)
    cursors = [(0, 0)]
    got = []
    while (element := reader.next()) is not None:
        assert element.error is None
        got.append(json.loads(element.text))
        # The element starts on the line the reader says, and the cursor is just after it.
        assert data[: reader.pos].decode().endswith(element.text)
        assert data[: reader.pos].count(b"\n") == reader.line
        assert data[: reader.pos].decode().count("\n") + 1 >= element.line
        cursors.append((reader.pos, reader.line))
    assert got == items and reader.closed and reader.pos == len(data)
    # A run that stopped after any element resumes with exactly the ones after it.
    k = cut % len(cursors)
    pos, line = cursors[k] if k < len(cursors) - 1 else cursors[0]
    k = k if k < len(cursors) - 1 else 0
    again = ArrayReader(io.BytesIO(data), pos, line, 1 << 20, chunk=chunk)
    rest = []
    while (element := again.next()) is not None:
        rest.append(json.loads(element.text))
    assert rest == items[k:]
    # The same file cut short anywhere (its writer is not done) gives a prefix of the elements.
    # It reports an error only when the cut leaves a ']' last, so that the file looks finished;
    # the reader then stops, and the file is read again once its size changes.
    short = data[: cut % (len(data) + 1)]
    partial = ArrayReader(io.BytesIO(short), 0, 0, 1 << 20, chunk=chunk)
    some = []
    while (element := partial.next()) is not None:
        if element.error is not None:
            assert short.rstrip()[-1:] == b"]" and partial.closed
            assert partial.next() is None
            break
        some.append(json.loads(element.text))
    assert some == items[: len(some)]
    if not partial.closed:
        # Once the writer is done, the next run resumes at the cursor the cut file left.
        later = ArrayReader(io.BytesIO(data), partial.pos, partial.line, 1 << 20, chunk=chunk)
        after = []
        while (element := later.next()) is not None:
            after.append(json.loads(element.text))
        assert some + after == items and later.line == data.count(b"\n")


@settings(max_examples=500, deadline=None)
@given(
    body=st.binary(max_size=200) | st.text(st.sampled_from(list('[]{},:"\\ \n1ax€')), max_size=80),
    chunk=st.integers(1, 16),
)
def test_any_bytes_after_a_bracket_end_in_elements_or_reasons_and_never_raise(
    body: bytes | str, chunk: int
) -> None:
    data = b"[" + (body.encode() if isinstance(body, str) else body)
    reader = ArrayReader(io.BytesIO(data), 0, 0, 64, chunk=chunk)
    for _ in range(len(data) + 2):  # every element takes at least one byte
        element = reader.next()
        if element is None:
            break
        if element.error is None:
            json.loads(element.text)  # what is handed out as a record is one JSON value
        assert 1 <= element.line <= data.count(b"\n") + 1
    else:
        raise AssertionError("the reader did not stop")
    assert 0 <= reader.pos <= len(data)


def test_elements_too_deep_or_too_long_for_the_decoder_are_quarantined_and_reading_goes_on(
    tmp_path: Path,
) -> None:
    # Python's decoder raises RecursionError on deep nesting and ValueError on an integer of
    # more than 4,300 digits: neither may stop the source (and every later file) on every run.
    deep = '{"id": "deep", "text": "x", "n": ' + "[" * 3000 + "]" * 3000 + "}"
    huge = '{"id": ' + "7" * 5000 + ', "text": "x", "created_at": "2026-01-02T03:04:05Z"}'
    text = pretty([element("a"), deep, huge, element("b")])
    (tmp_path / "export.json").write_text(text, encoding="utf-8")
    config = write_config(
        tmp_path,
        [{"name": "x", "type": "file", "path": ".", "pattern": "*.json", "max_record_bytes": 65536}],
    )
    summary = run_ingest(config, "x")
    assert stored(tmp_path) == ["a", "b"]
    reasons = sorted(quarantined(tmp_path, "x").values())
    assert len(reasons) == 2 and all("unreadable JSON" in r for r in reasons), reasons
    assert summary["quarantined"] == 2
