"""A poison record never stops its source: it is quarantined with its reason and the run moves on.

Dates out of range, a CSV quote that never closes, a 100 MB line, numbers too large for a column,
lone surrogates: each is tried through the real connector and a real DuckDB store (``ingest``, the
body of the flow's fetch task), and the records around it must be stored. A property-based suite
then feeds the record parsers generated input: every input yields an item or a quarantine row,
never an exception, and the column-wise fast path agrees with the per-record code.
"""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import SourceContext, file, hackernews
from connectors.columns import item_rows
from connectors.json_array import is_array_file
from connectors.records import ALIASES, mention_from_record
from flows.settings import load_config
from flows.triage import ingest
from tests.fakes.hackernews import FakeHackerNews
from triage.models import (
    ITEM_SCHEMA,
    MAX_RAW_CHARS,
    Author,
    InvalidRecord,
    Mention,
    check_mention,
    parse_timestamp,
)

FETCHED = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


def line(**record: Any) -> str:
    return json.dumps(record)


def ok(i: int) -> str:
    return line(id=f"ok-{i}", text=f"valid mention {i}", created_at="2026-01-02T03:04:05Z")


def run(tmp_path: Path, source: dict[str, Any], batch_size: int = 5000) -> dict[str, Any]:
    cfg_path = tmp_path / "triage.yaml"
    cfg_path.write_text(
        yaml.safe_dump({"database": str(tmp_path / "t.duckdb"), "sources": [source]})
    )
    cfg = load_config(cfg_path)
    return ingest(cfg, cfg.sources[0], batch_size=batch_size)


def query(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


POISON_DATES = [
    line(id="p-1e20", text="epoch far out", created_at=1e20),
    line(id="p-9999", text="last instant", created_at="9999-12-31T23:59:59-05:00"),
    line(id="p-neg", text="before 1970", created_at=-5),
    line(id="p-1900", text="old iso", created_at="1900-01-01T00:00:00Z"),
    line(id="p-2200", text="far future", created_at="2200-01-01T00:00:00Z"),
    line(id="p-big", text="huge exponent", created_at=1.5e308),
]


def test_out_of_range_dates_are_quarantined_and_the_rest_of_the_batch_stored(
    tmp_path: Path,
) -> None:
    # Poison in the middle of a batch, and valid records in the same batch and the ones after.
    lines = [ok(0), ok(1), *POISON_DATES, ok(2), ok(3), ok(4), ok(5), ok(6)]
    (tmp_path / "drop.jsonl").write_text("\n".join(lines) + "\n")
    result = run(tmp_path, {"name": "drop", "type": "file", "path": "drop.jsonl"}, batch_size=4)

    assert result["stored"] == 7 and result["quarantined"] == len(POISON_DATES)
    stored = sorted(r[0] for r in query(tmp_path, "SELECT external_id FROM items"))
    assert stored == [f"ok-{i}" for i in range(7)]
    reasons = dict(query(tmp_path, "SELECT external_id, reason FROM quarantine"))
    assert set(reasons) == {"p-1e20", "p-9999", "p-neg", "p-1900", "p-2200", "p-big"}
    assert all("created_at is out of range" in r for r in reasons.values()), reasons
    # Line numbers count from the start of the file, across batches.
    assert reasons["p-1e20"].startswith("drop.jsonl line 3: ")
    assert reasons["p-big"].startswith("drop.jsonl line 8: ")


def test_a_signed_web_form_post_cannot_poison_the_webhook_source(tmp_path: Path) -> None:
    # Spool lines written as an older intake (or a hand edit) could have: the source moves on.
    spool = tmp_path / "spool"
    spool.mkdir()
    posts = [
        line(id="w-1", text="thanks!", created_at="2026-03-01T10:00:00Z"),
        line(id="w-2", text="poison", created_at=1e20, channel="web_form"),
        line(id="w-3", text="poison too", followers=1e30, created_at="2026-03-01T10:00:00Z"),
        line(id="w-4", text="still read", created_at="2026-03-01T10:00:01Z"),
    ]
    (spool / "intake-20260301.jsonl").write_text("\n".join(posts) + "\n")
    result = run(tmp_path, {"name": "web", "type": "webhook", "spool_dir": "spool"})
    assert result["stored"] == 3 and result["quarantined"] == 1
    rows = dict(query(tmp_path, "SELECT external_id, author_followers FROM items"))
    # A count too large for the column is unknown, not a failure of the batch.
    assert rows == {"w-1": None, "w-3": None, "w-4": None}


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (17, 17),
        ("17", 17),
        (3.9, 3),
        (0, 0),
        (-5, None),  # not a count
        (True, None),  # int(True) is 1, but a boolean is not a count
        (2**70, None),  # past the BIGINT column
        ("many", None),
        (None, None),
    ],
)
def test_a_follower_count_is_read_the_same_by_every_source(value: Any, count: int | None) -> None:
    # The file and webhook sources (per record and column-wise) and the API parsers (through
    # check_mention) keep a count, or make it unknown, alike: the post is stored either way.
    record = {"id": "f1", "text": "hi", "created_at": "2026-01-02T03:04:05Z", "followers": value}
    by_record = mention_from_record("s", record, fetched_at=FETCHED)
    table, rejected = item_rows("s", [record], fetched_at=FETCHED, raws=[None])
    api = Mention(
        source="s", external_id="f1", text="hi", created_at=FETCHED, author=Author(followers=value)
    )
    assert rejected == []
    assert by_record.author.followers == count
    assert table.column("author_followers").to_pylist() == [count]
    assert check_mention(api).author.followers == count


def test_unbalanced_quote_followed_by_more_than_128kb_of_rows(tmp_path: Path) -> None:
    rows = [f"r{i},fine row number {i} with some words,2026-01-02T03:04:05Z" for i in range(4000)]
    broken = 'rx,"this quote never closes,2026-01-02T03:04:05Z'
    text = "id,text,created_at\n" + "\n".join([rows[0], broken, *rows[1:], "ry,,"]) + "\n"
    assert len(text) > 200_000
    (tmp_path / "export.csv").write_text(text)
    source = {"name": "csv", "type": "file", "path": "export.csv"}
    # Just written, the open quote may be a record its writer is part way through: what follows
    # it waits, and nothing is quarantined yet.
    assert run(tmp_path, source, batch_size=500)["stored"] == 1
    assert query(tmp_path, "SELECT count(*) FROM quarantine") == [(0,)]
    # Once the file has not changed for settle_seconds, the quote is broken, and the rows after
    # it are read.
    result = run(tmp_path, {**source, "settle_seconds": 0}, batch_size=500)

    assert result["stored"] == 3999
    reasons = sorted(r[0] for r in query(tmp_path, "SELECT reason FROM quarantine"))
    assert reasons == [
        "export.csv line 3: a quoted field that opens on this line is never closed",
        f"export.csv line {4000 + 3}: text is missing (field 'text' is empty)",
    ]
    # Nothing is read twice on the next run.
    assert run(tmp_path, source)["fetched"] == 0


def test_a_runaway_quote_is_cut_at_max_record_bytes(tmp_path: Path) -> None:
    rows = [f"r{i},row {i},2026-01-02T03:04:05Z" for i in range(5000)]
    text = "id,text,created_at\n" + "\n".join([*rows[:10], 'bad,"open', *rows[10:]]) + "\n"
    (tmp_path / "big.csv").write_text(text)
    source = {"name": "csv", "type": "file", "path": "big.csv", "max_record_bytes": 4096}
    result = run(tmp_path, source, batch_size=1000)

    assert result["stored"] == 5000 and result["quarantined"] == 1
    ((reason,),) = query(tmp_path, "SELECT reason FROM quarantine")
    assert reason.startswith("big.csv line 12: record runs past max_record_bytes (4,096)")


def test_a_100_mb_line_is_quarantined_by_its_size_without_being_read(tmp_path: Path) -> None:
    drop = tmp_path / "huge.jsonl"
    with drop.open("w") as fh:
        fh.write(ok(0) + "\n")
        fh.write('{"id": "huge", "created_at": "2026-01-02T03:04:05Z", "text": "')
        chunk = "x" * (1024 * 1024)
        for _ in range(100):
            fh.write(chunk)
        fh.write('"}\n')
        fh.write(ok(1) + "\n")
    ctx = SourceContext(name="big", settings={"path": "huge.jsonl"}, base_dir=tmp_path)
    tracemalloc.start()
    try:
        batches = list(file.fetch(ctx, None))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        size = drop.stat().st_size
        drop.unlink()  # do not leave 100 MB behind in pytest's kept temporary folders
    items = [r for b in batches if b.items is not None for r in b.items.to_pylist()]
    rejected = [r for b in batches for r in b.rejected]
    assert [r["external_id"] for r in items] == ["ok-0", "ok-1"]
    (bad,) = rejected
    assert bad.reason.startswith("huge.jsonl line 2: line is 104,857,")
    assert "over max_record_bytes (1,048,576)" in bad.reason
    assert len(bad.raw) < 300
    # Never held whole: the peak is a few chunks, not the line (the default limit is 1 MiB).
    assert peak < 8 * 1024 * 1024, peak
    assert batches[-1].cursor["files"]["huge.jsonl"] == {"offset": size, "size": size, "line": 3}


def test_raw_kept_for_audit_is_capped_for_accepted_records_too(tmp_path: Path) -> None:
    extra = "y" * (MAX_RAW_CHARS * 2)
    rec = line(id="wide", text="short text", created_at="2026-01-02T03:04:05Z", extra=extra)
    (tmp_path / "wide.jsonl").write_text(rec + "\n")
    run(tmp_path, {"name": "wide", "type": "file", "path": "wide.jsonl"})
    ((raw_len,),) = query(tmp_path, "SELECT length(raw) FROM items")
    assert raw_len == MAX_RAW_CHARS
    # The same cap on the per-record path.
    m = mention_from_record("s", json.loads(rec), fetched_at=FETCHED)
    assert len(m.to_row()["raw"]) == MAX_RAW_CHARS


def test_social_source_moves_past_a_poison_hit() -> None:
    fake = FakeHackerNews()
    fake.start()
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        good = fake.add("nimbus is great", now - timedelta(minutes=3))
        poison = {"comment_text": "nimbus poison", "_tags": ["comment"]}
        fake.add_raw({**poison, "objectID": "poison", "created_at_i": 1e20})
        future = int((now + timedelta(days=30)).timestamp())
        fake.add_raw({**poison, "objectID": "future", "created_at_i": future})
        later = fake.add("nimbus sync broke", now - timedelta(minutes=2))
        ctx = SourceContext(
            name="hn",
            settings={"base_url": f"{fake.url}/api/v1", "query": "nimbus", "retry_backoff": 0},
            base_dir=Path("."),
        )
        batches = list(hackernews.fetch(ctx, None))
    finally:
        fake.stop()
    stored = {m.external_id for b in batches for m in b.mentions}
    rejected = {r.external_id: r.reason for b in batches for r in b.rejected}
    assert stored == {good, later}
    assert "created_at is out of range" in rejected["poison"]
    assert "created_at is out of range" in rejected["future"]
    # The watermark is the newest valid post, not a date that would hide every post until then.
    assert batches[-1].cursor["since"] == (now - timedelta(minutes=2)).isoformat()


def test_parse_timestamp_bounds() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert parse_timestamp("2026-06-01T12:00:00Z", now=now) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert parse_timestamp(0, now=now) == datetime(1970, 1, 1, tzinfo=UTC)
    for bad in (float("nan"), float("inf"), -1, 1e20, "2026-06-03T00:00:00Z", "0001-01-01", True):
        with pytest.raises(InvalidRecord):
            parse_timestamp(bad, now=now)


# ----------------------------------------------------------------------------- property-based
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # nan and infinities included: Python's json module produces them
    st.text(alphabet=st.characters(exclude_categories=()), max_size=30),  # lone surrogates too
    st.sampled_from(
        [
            "2026-01-02T03:04:05Z",
            "9999-12-31T23:59:59-05:00",
            "0001-01-01",
            "1e20",
            "",
            " ",
            "\x00",
            "nan",
        ]
    ),
)
value = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
known = sorted({k for aliases in ALIASES.values() for k in aliases})
record = st.dictionaries(st.one_of(st.sampled_from(known), st.text(max_size=6)), value, max_size=8)
# Records with the required fields present, so that the accepting paths (and the optional fields
# next to them) are exercised as much as the refusals.
likely = st.builds(
    lambda extra, ext, text, when: {**extra, "id": ext, "text": text, "created_at": when},
    record,
    st.one_of(st.text(max_size=8), st.integers(), st.floats()),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),
    st.one_of(
        st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02 03:04", 1767000000, 1e20, -1]),
        st.floats(),
        st.datetimes().map(str),
    ),
)
any_record = st.one_of(record, likely, value)

PARSERS = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def storable(m: Mention) -> None:
    # What the store does with a mention: one Arrow row in the items layout.
    pa.Table.from_pylist([m.to_row()], schema=ITEM_SCHEMA)


@PARSERS
@given(records=st.lists(any_record, max_size=6), source_type=st.sampled_from([None, "forum"]))
def test_fuzz_records_yield_an_item_or_a_reason_and_both_paths_agree(
    records: list[Any], source_type: str | None
) -> None:
    want_rows, want_rejected = [], []
    for i, rec in enumerate(records):
        try:
            m = mention_from_record("fz", rec, fetched_at=FETCHED, default_source_type=source_type)
        except InvalidRecord as exc:
            assert str(exc)
            want_rejected.append((i, str(exc)))
            continue
        storable(m)
        want_rows.append(m.to_row())
    table, rejected = item_rows("fz", records, fetched_at=FETCHED, default_source_type=source_type)
    assert rejected == want_rejected
    assert table.to_pylist() == want_rows


@st.composite
def drop_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A JSONL or CSV drop made of valid lines, broken lines, odd quotes and odd bytes."""
    if draw(st.booleans()):
        lines = draw(
            st.lists(
                st.one_of(
                    st.one_of(record, likely).map(lambda r: json.dumps(r, default=str).encode()),
                    st.sampled_from([ok(1).encode(), ok(2).encode(), b"{", b"[]", b"", b"\xff"]),
                    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
                ),
                max_size=12,
            )
        )
        return "drop.jsonl", b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\n{"]))
    cell = st.one_of(
        st.text(max_size=12),
        st.sampled_from(['"', '""', '"open', 'close"', ",", "\n", "\r\n", "2026-01-02", "1e20"]),
    )
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=4), max_size=12))
    body = "\n".join(",".join(r) for r in [["id", "text", "created_at"], *rows])
    return "drop.csv", body.encode("utf-8", "surrogatepass") + b"\n"


@settings(PARSERS, max_examples=150)
@given(drop=drop_files(), batch_size=st.integers(min_value=1, max_value=5))
def test_fuzz_file_drops_never_raise_and_account_for_every_line(
    tmp_path_factory: pytest.TempPathFactory, drop: tuple[str, bytes], batch_size: int
) -> None:
    name, data = drop
    folder = tmp_path_factory.mktemp("fz")
    (folder / name).write_bytes(data)
    settings_: dict[str, Any] = {"path": name, "max_record_bytes": 1024}
    ctx = SourceContext(name="fz", settings=settings_, base_dir=folder, batch_size=batch_size)
    # Read as just written (its end waits), then as settled (its end is read): together, what a
    # file read while it is written and after gives.
    batches = list(file.fetch(ctx, None))
    cursor = batches[-1].cursor if batches else None
    settled = replace(ctx, settings={**settings_, "settle_seconds": 0})
    rest = list(file.fetch(settled, cursor))
    items = sum(b.items.num_rows for b in batches + rest if b.items is not None)
    rejected = [r for b in batches + rest for r in b.rejected]
    complete = data[: data.rfind(b"\n") + 1] if b"\n" in data else b""
    # A drop that opens with '[' is one JSON array (tests/test_connectors_file_json_array.py):
    # its cursor counts elements, not lines.
    lines = not is_array_file(folder / name)
    if batches and lines:
        # Never past the complete lines (a CSV record whose quote is still open stops it early).
        offset = batches[-1].cursor["files"][name]["offset"]
        assert offset == len(complete) if name.endswith(".jsonl") else offset <= len(complete)
    if rest and lines:
        assert rest[-1].cursor["files"][name]["offset"] == len(data)
    if name.endswith(".jsonl") and lines:
        # Every non-blank line, the last one too, is an item or a quarantine row: none lost,
        # none twice.
        expected = sum(1 for x in data.split(b"\n") if x.strip())
        assert items + len(rejected) == expected
    assert all(r.reason.startswith(f"{name} line ") for r in rejected)
    # A read from the stored cursor finds nothing new.
    if rest or batches:
        last = (rest or batches)[-1].cursor
        assert sum(b.size for b in file.fetch(settled, last)) == 0
