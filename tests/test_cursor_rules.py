"""The cursor advance, from the README's contract (not from the code).

README, "How it works": the cursor advances in the same transaction that stores the batch, so a
crash never skips or loses items. "Social and community sources": each stream keeps the newest id,
or the newest time plus the ids seen at that time, so two posts in the same second are neither lost
nor stored twice; pages are stored with the *old* cursor and the new one is written only after the
last page; the first run goes back ``backfill_days``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.paging import (
    BadAnswer,
    BeforeLowest,
    Entry,
    HighestId,
    Stream,
    Verdict,
    Watermark,
    paginate,
)
from triage.models import ITEM_SCHEMA, InvalidRecord, Mention, Rejected
from triage.store import open_store

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def mention(ext: str, at: datetime = T0) -> Mention:
    return Mention(source="feed", external_id=ext, text=f"post {ext}", created_at=at)


# ------------------------------------------------------------------ the store's half


def test_a_source_has_no_cursor_before_its_first_batch(tmp_path: Path) -> None:
    with open_store(tmp_path / "t.duckdb") as store:
        assert store.get_cursor("feed") is None
        assert store.reset_cursor("feed") is False


def test_each_batch_stores_its_items_and_its_cursor(tmp_path: Path) -> None:
    with open_store(tmp_path / "t.duckdb") as store:
        bad = Rejected(source="feed", reason="no text", raw='{"id": 3}', external_id="3")
        assert store.ingest("feed", [mention("1"), mention("2")], [bad], {"since": 1}) == (2, 1)
        assert store.get_cursor("feed") == {"since": 1}
        assert store.get_cursor("other") is None
        # A repeat of the same batch (a re-read after a crash) stores nothing new.
        assert store.ingest("feed", [mention("2"), mention("3")], [bad], {"since": 2}) == (1, 0)
        assert store.get_cursor("feed") == {"since": 2}
        # Stored as JSON, whatever the cursor's shape; dates as text.
        store.ingest("feed", [], [], {"at": T0, "ids": ["a", "b"]})
        assert store.get_cursor("feed") == {"at": str(T0), "ids": ["a", "b"]}
        # advance_cursor=False stores the batch and leaves the cursor where it was.
        assert store.ingest("feed", [mention("4")], [], {"since": 99}, advance_cursor=False) == (
            1,
            0,
        )
        assert store.get_cursor("feed") == {"at": str(T0), "ids": ["a", "b"]}
        assert store.reset_cursor("feed") is True
        assert store.get_cursor("feed") is None


def test_mentions_and_columnar_rows_of_one_batch_are_counted_together(tmp_path: Path) -> None:
    # The file connector hands over most of a batch as ITEM_SCHEMA rows, the rest as mentions.
    rows = pa.Table.from_pylist([mention(x).to_row() for x in ("3", "4", "5")], schema=ITEM_SCHEMA)
    with open_store(tmp_path / "t.duckdb") as store:
        assert store.ingest("feed", [mention("1"), mention("2")], [], {"n": 5}, items=rows) == (
            5,
            0,
        )
        assert store.ingest("feed", [mention("6")], [], {"n": 6}, items=rows) == (1, 0)
        assert store.get_cursor("feed") == {"n": 6}


def test_a_batch_that_fails_to_store_leaves_items_and_cursor_as_they_were(tmp_path: Path) -> None:
    with open_store(tmp_path / "t.duckdb") as store:
        store.ingest("feed", [mention("1")], [], {"since": 1})
        broken = pa.table({"not_a_column": [1]})  # fails after the mentions were inserted
        with pytest.raises(Exception):  # noqa: B017 - whatever the backend raises
            store.ingest("feed", [mention("2")], [], {"since": 2}, items=broken)
        assert store.get_cursor("feed") == {"since": 1}
        assert store.ingest("feed", [mention("2")], [], {"since": 2}) == (1, 0)


# ------------------------------------------------------------------ time-ordered streams


def test_watermark_first_run_takes_everything_since_the_backfill_bound() -> None:
    mark = Watermark.load(None, T0)
    assert mark.admit(T0 + timedelta(seconds=1), "new") is Verdict.NEW
    assert mark.admit(T0, "at-the-bound") is Verdict.NEW
    assert mark.admit(T0 - timedelta(seconds=1), "older") is Verdict.PAST
    assert mark.dump() == {"since": (T0 + timedelta(seconds=1)).isoformat(), "ids": ["new"]}


def test_watermark_keeps_every_post_of_the_newest_second() -> None:
    mark = Watermark.load(None, T0 - timedelta(days=7))
    late = T0 + timedelta(minutes=5)
    for ext, at in [("b", late), ("a", late), ("x", T0), ("c", late)]:
        assert mark.admit(at, ext) is Verdict.NEW
    cursor = mark.dump()
    assert cursor == {"since": late.isoformat(), "ids": ["a", "b", "c"]}

    # The next run: the same second again holds one more post, which alone is new.
    again = Watermark.load(cursor, T0 - timedelta(days=7))
    for ext in ("a", "b", "c"):
        assert again.admit(late, ext) is Verdict.SEEN
    assert again.admit(late, "d") is Verdict.NEW
    assert again.admit(T0, "x") is Verdict.PAST
    # Still the same newest second: the ids taken before stay remembered with the new one.
    assert again.dump() == {"since": late.isoformat(), "ids": ["a", "b", "c", "d"]}


def test_watermark_moves_on_to_a_newer_second_and_forgets_older_ids() -> None:
    cursor = {"since": T0.isoformat(), "ids": ["a"]}
    mark = Watermark.load(cursor, T0 - timedelta(days=7))
    newer = T0 + timedelta(seconds=1)
    assert mark.admit(newer, "n1") is Verdict.NEW
    assert mark.admit(T0, "a") is Verdict.SEEN
    assert mark.admit(T0, "b") is Verdict.NEW
    assert mark.dump() == {"since": newer.isoformat(), "ids": ["n1"]}


def test_watermark_with_nothing_new_keeps_its_cursor() -> None:
    cursor = {"since": T0.isoformat(), "ids": ["a", "b"]}
    mark = Watermark.load(cursor, T0 - timedelta(days=7))
    assert mark.admit(T0, "b") is Verdict.SEEN
    assert mark.admit(T0 - timedelta(hours=1), "z") is Verdict.PAST
    assert mark.dump() == cursor
    # Time-ordered streams learn nothing before a record is read.
    mark.see("anything")
    assert mark.behind("anything") is False
    assert mark.dump() == cursor


def test_an_item_dated_ahead_holds_the_watermark_at_now_and_is_read_again() -> None:
    # Dated ahead within the day allowed for clock skew: had the watermark moved to its time,
    # every post published before that hour would have been PAST on the next runs, and lost.
    now = datetime.now(UTC)
    ahead = now + timedelta(hours=20)
    mark = Watermark.load(None, now - timedelta(days=7))
    assert mark.admit(ahead, "skewed") is Verdict.NEW
    assert mark.admit(now - timedelta(minutes=5), "real") is Verdict.NEW
    cursor = mark.dump()
    held = datetime.fromisoformat(cursor["since"])
    assert now <= held <= datetime.now(UTC)
    again = Watermark.load(cursor, now - timedelta(days=7))
    later = held + timedelta(seconds=30)  # published after the first run, before the skewed time
    assert again.admit(ahead, "skewed") is Verdict.NEW  # read again; the store keeps one copy
    assert again.admit(later, "later") is Verdict.NEW
    assert again.admit(now - timedelta(minutes=5), "real") is Verdict.PAST


# ------------------------------------------------------------------ id-ordered streams


def order(x: object) -> int | None:
    return int(str(x)) if str(x).isdigit() else None


def test_highest_id_moves_only_upwards_and_ignores_unorderable_ids() -> None:
    mark = HighestId("since_id", stored=None, order=order)
    assert mark.dump() is None  # nothing seen: the cursor entry is left as it was
    for position in ["5", "12", "9", None, "abc", "11"]:
        mark.see(position)
    assert mark.dump() == {"since_id": "12"}


def test_highest_id_ends_a_stream_at_or_below_the_stored_id() -> None:
    mark = HighestId("since_id", stored="10", order=order)
    assert mark.dump() == {"since_id": "10"}
    assert mark.behind("9") and mark.behind("10")
    assert not mark.behind("11")
    assert not mark.behind(None) and not mark.behind("abc")
    mark.see("9")
    assert mark.dump() == {"since_id": "10"}
    mark.see("11")
    assert mark.dump() == {"since_id": "11"}
    # With a stored id, the backfill bound no longer applies: the id decides.
    bounded = HighestId("since_id", stored="10", order=order, start=T0)
    assert bounded.admit(T0 - timedelta(days=30), "old") is Verdict.NEW


def test_highest_id_first_run_reaches_back_only_to_the_backfill_bound() -> None:
    mark = HighestId("since_id", stored=None, order=order, start=T0)
    assert not mark.behind("1")
    assert mark.admit(T0, "at") is Verdict.NEW
    assert mark.admit(T0 - timedelta(seconds=1), "before") is Verdict.PAST
    assert HighestId("ts", stored=None, order=order).admit(T0, "x") is Verdict.NEW


# ------------------------------------------------------------------ the page loop


def timed_stream(key: str | None, pages: list[list[dict[str, Any]]], cursor: Any) -> Stream:
    """A newest-first, time-ordered stream whose page N is ``pages[N]`` (``page`` parameter)."""

    def entries(data: Any) -> list[Entry]:
        if not isinstance(data, list):
            raise BadAnswer("the answer has no list")
        return [Entry(r, id=r.get("id"), raw=r.get("raw"), skip=r.get("skip", False)) for r in data]

    def next_page(params: dict[str, Any], data: Any, got: list[Entry]) -> dict[str, Any] | None:
        page = params["page"] + 1
        return {**params, "page": page} if page < len(pages) else None

    pager = type("Pages", (), {"next": staticmethod(next_page)})()
    entry = cursor.get(key) if key is not None and isinstance(cursor, dict) else cursor
    mark = Watermark.load(entry, T0 - timedelta(days=7))
    return Stream(key, f"/{key}", {"page": 0}, mark, pager, entries)


def parse(entry: Entry, fetched_at: datetime) -> Mention:
    record = entry.record
    if "at" not in record:
        raise InvalidRecord("no date")
    return Mention(
        source="s",
        external_id=str(record["id"]),
        text="t",
        created_at=T0 + timedelta(minutes=record["at"]),
        fetched_at=fetched_at,
    )


# The requests of the last run(): (path, page).
CALLS: list[tuple[str, int]] = []


def run(
    cursor: Any,
    streams: list[Stream],
    pages: dict[str, list[list[dict[str, Any]]]],
    **settings: Any,
) -> list[FetchBatch]:
    CALLS.clear()

    def get(path: str, params: dict[str, Any]) -> Any:
        CALLS.append((path, params["page"]))
        return pages[path][params["page"]]

    ctx = SourceContext(name="src", settings=settings, base_dir=Path("."))
    batches = list(paginate(ctx, cursor, streams, get, parse))
    return batches


def ids(batch: FetchBatch) -> list[str]:
    return [m.external_id for m in batch.mentions]


def test_pages_carry_the_old_cursor_and_the_new_one_comes_last() -> None:
    old = {"a": {"since": T0.isoformat(), "ids": ["1"]}, "other": {"keep": True}}
    a = [[{"id": 4, "at": 4}, {"id": 3, "at": 3}], [{"id": 2, "at": 2}, {"id": 1, "at": 0}]]
    b = [[{"id": 9, "at": 9}, {"id": 4, "at": 4}]]
    streams = [timed_stream("a", a, old), timed_stream("b", b, old)]
    batches = run(old, streams, {"/a": a, "/b": b})
    assert [ids(x) for x in batches] == [["4", "3"], ["2"], ["9"], []]
    assert all(x.cursor == old for x in batches[:-1])
    assert batches[-1].cursor == {
        "a": {"since": (T0 + timedelta(minutes=4)).isoformat(), "ids": ["4"]},
        # An item both streams return is stored once; b still moves its own mark past it.
        "b": {"since": (T0 + timedelta(minutes=9)).isoformat(), "ids": ["9"]},
        "other": {"keep": True},
    }
    assert batches[-1].mentions == [] and batches[-1].rejected == []
    assert old == {"a": {"since": T0.isoformat(), "ids": ["1"]}, "other": {"keep": True}}


def test_a_stream_that_is_the_whole_cursor() -> None:
    pages = [[{"id": 2, "at": 2}, {"id": 1, "at": 1}]]
    (first, last) = run(None, [timed_stream(None, pages, None)], {"/None": pages})
    assert ids(first) == ["2", "1"] and first.cursor is None
    assert last.cursor == {"since": (T0 + timedelta(minutes=2)).isoformat(), "ids": ["2"]}


def test_a_stream_without_a_position_keeps_the_stored_cursor() -> None:
    def entries(data: Any) -> list[Entry]:
        return [Entry(r, id=r["id"]) for r in data]

    order = int
    pager = type("One", (), {"next": staticmethod(lambda params, data, got: None)})()
    stored = {"since_id": "7"}
    empty = Stream(None, "/x", {"page": 0}, HighestId("since_id", None, order), pager, entries)
    batches = run(stored, [empty], {"/x": [[]]})
    assert [x.cursor for x in batches] == [stored, stored]


def test_paging_stops_at_the_watermark_and_at_max_pages() -> None:
    old = {"a": {"since": (T0 + timedelta(minutes=2)).isoformat(), "ids": []}}
    a = [[{"id": 5, "at": 5}, {"id": 4, "at": 4}], [{"id": 1, "at": 1}], [{"id": 0, "at": 0}]]
    batches = run(old, [timed_stream("a", a, old)], {"/a": a})
    # Page 2 holds an item older than the watermark: the third page is never asked for.
    assert [ids(x) for x in batches] == [["5", "4"], [], []]
    assert CALLS == [("/a", 0), ("/a", 1)]
    many = [[{"id": 100 - i, "at": 100 - i}] for i in range(5)]
    batches = run(None, [timed_stream("m", many, None)], {"/m": many}, max_pages=2)
    assert [ids(x) for x in batches] == [["100"], ["99"], []]
    assert CALLS == [("/m", 0), ("/m", 1)]


def test_unreadable_records_are_quarantined_and_skipped_ones_not_stored() -> None:
    a = [
        [
            {"id": 3, "raw": "<original 3>"},
            {"id": 2, "at": 2, "skip": True},
            {"id": 1, "at": 1},
        ]
    ]
    (page, last) = run(None, [timed_stream("a", a, None)], {"/a": a})
    assert ids(page) == ["1"]
    (bad,) = page.rejected
    assert (bad.source, bad.reason, bad.external_id, bad.raw) == (
        "src",
        "no date",
        "3",
        "<original 3>",
    )
    assert last.cursor["a"]["ids"] == ["1"]


def test_a_record_with_no_raw_copy_is_quarantined_as_read() -> None:
    a = [[{"id": 8}]]
    (page, _) = run(None, [timed_stream("a", a, None)], {"/a": a})
    (bad,) = page.rejected
    assert bad.external_id == "8" and '"id": 8' in bad.raw.replace("'", '"')


def test_an_answer_of_the_wrong_shape_fails_the_source_by_name() -> None:
    with pytest.raises(ConnectorError, match=r"source 'src': /a: the answer has no list"):
        run(None, [timed_stream("a", [{"not": "a list"}], None)], {"/a": [{"not": "a list"}]})


def test_id_ordered_streams_stop_at_the_stored_id_unless_an_entry_says_otherwise() -> None:
    def entries(data: Any) -> list[Entry]:
        return [Entry(r, id=r["id"], ends=r.get("ends", True)) for r in data]

    def parse_id(entry: Entry, fetched_at: datetime) -> tuple[Mention, datetime]:
        m = Mention(source="s", external_id=str(entry.id), text="t", created_at=T0)
        return m, T0 + timedelta(seconds=entry.id)

    pages = [
        [{"id": 12}, {"id": 10, "ends": False}, {"id": 11}],
        [{"id": 9}, {"id": 8}],
        [{"id": 7}],
    ]

    def get(path: str, params: dict[str, Any]) -> Any:
        return pages[params["page"]]

    def next_page(params: dict[str, Any], data: Any, got: list[Entry]) -> dict[str, Any] | None:
        return {"page": params["page"] + 1} if params["page"] + 1 < len(pages) else None

    pager = type("Pages", (), {"next": staticmethod(next_page)})()
    mark = HighestId("since_id", 10, lambda x: x)
    stream = Stream(None, "/ids", {"page": 0}, mark, pager, entries)
    ctx = SourceContext(name="src", settings={}, base_dir=Path("."))
    batches = list(paginate(ctx, {"since_id": 10}, [stream], get, parse_id))
    # 10 is at the stored id but says it does not end the stream; 9 on page two does.
    assert [ids(b) for b in batches] == [["12", "11"], [], []]
    assert batches[-1].cursor == {"since_id": 12}


def test_fetched_at_is_the_moment_of_the_page_in_utc() -> None:
    # DESIGN.md: times in the mention record are UTC; a naive local time would shift with the host.
    pages = [[{"id": 2, "at": 2}, {"id": 1, "at": 1}]]
    before = datetime.now(UTC)
    (first, _) = run(None, [timed_stream(None, pages, None)], {"/None": pages})
    after = datetime.now(UTC)
    for m in first.mentions:
        assert m.fetched_at.utcoffset() == timedelta(0)
        assert before <= m.fetched_at <= after


# ------------------------------------------------------------------ positions that are checked


# The requests of the last id_run(): (path, before).
ID_CALLS: list[tuple[str, int | None]] = []


def id_run(
    cursor: Any,
    posts: list[dict[str, Any]],
    *,
    first_page_extra: list[dict[str, Any]] | None = None,
    per_page: int = 3,
    ignore_bound: bool = False,
    **settings: Any,
) -> list[FetchBatch]:
    """An id-ordered stream paged with ``before`` over ``posts``, newest first, as Discourse's
    /posts.json: ``first_page_extra`` rides on the first page, out of order."""
    ID_CALLS.clear()

    def get(path: str, params: dict[str, Any]) -> Any:
        before = params.get("before")
        ID_CALLS.append((path, before))
        items = sorted(posts, key=lambda p: -p["id"])
        if before is not None and not ignore_bound:
            items = [p for p in items if p["id"] < before]
        return items[:per_page] + ((first_page_extra or []) if before is None else [])

    def entries(data: Any) -> list[Entry]:
        return [
            Entry(
                r,
                id=r["id"],
                skip=r.get("skip", False),
                vouched=r.get("vouched", False),
                doubt=r.get("doubt"),
            )
            for r in data
        ]

    def parse_post(entry: Entry, fetched_at: datetime) -> Mention:
        if "at" not in entry.record:
            raise InvalidRecord("no date")
        at = T0 + timedelta(minutes=entry.record["at"])
        return Mention(source="s", external_id=str(entry.id), text="t", created_at=at)

    def order(value: Any) -> int | None:
        return value if isinstance(value, int) else None

    stored = cursor.get("last_id") if isinstance(cursor, dict) else None
    mark = HighestId("last_id", stored, order)
    stream = Stream(None, "/posts", {}, mark, BeforeLowest("before", order), entries)
    ctx = SourceContext(name="src", settings=settings, base_dir=Path("."))
    return list(paginate(ctx, cursor, [stream], get, parse_post))


def all_ids(batches: list[FetchBatch]) -> list[str]:
    return [m.external_id for b in batches for m in b.mentions]


def test_a_skipped_entry_moves_an_id_position_only_when_its_place_was_checked() -> None:
    # README: only records that were read move an id position. A skipped one (a join, a bot's
    # message) moved it unchecked: with a bogus place, every later post was behind the cursor.
    posts = [
        {"id": 10**12, "skip": True},  # a moderator post with a bogus id, unchecked
        {"id": 12, "skip": True, "vouched": True},  # a join with a valid place
        {"id": 11, "at": 1},
    ]
    batches = id_run({"last_id": 10}, posts)
    assert all_ids(batches) == ["11"] and batches[-1].cursor == {"last_id": 12}


def test_a_readable_record_whose_id_cannot_be_real_is_quarantined_and_moves_nothing() -> None:
    # README: only records that were read move an id position, and a record that reads well but
    # whose id its connector finds cannot be real (a Mastodon id from the future, a Discourse id
    # of 10^12) is not one of them: as the highest id it put every later post behind the cursor.
    posts = [
        {"id": 10**12, "at": 3, "doubt": "id from the future"},
        {"id": 10**12 - 1, "skip": True, "vouched": True, "doubt": "id from the future"},
        {"id": 12, "at": 2},
        {"id": 11, "at": 1},
    ]
    batches = id_run({"last_id": 10}, posts, per_page=2)
    assert all_ids(batches) == ["12", "11"]
    rejected = [(r.reason, r.external_id) for b in batches for r in b.rejected]
    assert rejected == [("id from the future", str(10**12))]
    assert batches[-1].cursor == {"last_id": 12}
    # Nor did the two steer paging: the page below them was read from the lowest of them (there
    # was no checked id on the first page), and the next run finds the post after 12.
    assert [before for _, before in ID_CALLS] == [None, 10**12 - 1, 11]
    batches = id_run(batches[-1].cursor, [*posts, {"id": 13, "at": 4}], per_page=4)
    assert all_ids(batches) == ["13"] and batches[-1].cursor == {"last_id": 13}


def test_only_checked_ids_steer_the_next_page() -> None:
    # A broken record with an out-of-order low id set `before` below the posts in between.
    posts = [{"id": i, "at": i} for i in range(11, 21)]
    batches = id_run(None, posts, first_page_extra=[{"id": 3}])
    assert sorted(all_ids(batches), key=int) == [str(i) for i in range(11, 21)]
    assert [r.external_id for b in batches for r in b.rejected] == ["3"]
    assert [before for _, before in ID_CALLS] == [None, 18, 15, 12, 11]
    assert batches[-1].cursor == {"last_id": 20}
    # A page with nothing checked on it still leads on, by the ids it has: stopping would lose
    # every page below it.
    broken_top = [{"id": i} for i in (23, 22, 21)]
    batches = id_run(None, broken_top + posts)
    assert len(all_ids(batches)) == 10 and len([r for b in batches for r in b.rejected]) == 3


def test_paging_by_id_stops_when_the_answer_ignores_the_bound() -> None:
    # The same page again would be asked for up to max_pages times and never get below it.
    batches = id_run(None, [{"id": i, "at": i} for i in (3, 2, 1)], ignore_bound=True)
    assert all_ids(batches) == ["3", "2", "1"] and ID_CALLS == [("/posts", None), ("/posts", 1)]
    assert batches[-1].notes == []


def test_a_stream_cut_short_by_max_pages_says_so_in_a_note() -> None:
    many = [[{"id": 100 - i, "at": 100 - i}] for i in range(5)]
    batches = run(None, [timed_stream("m", many, None)], {"/m": many}, max_pages=2)
    assert [ids(x) for x in batches] == [["100"], ["99"], []]
    (note,) = batches[-1].notes
    assert note.startswith("stream 'm' stopped at max_pages after 2 page(s) with more new pages")
    assert "not fetched" in note and "raise max_pages" in note
    assert all(x.notes == [] for x in batches[:-1])
    # Read to its end, a stream has nothing to say.
    assert run(None, [timed_stream("m", many, None)], {"/m": many})[-1].notes == []


def test_an_id_stream_cut_short_keeps_its_position_and_reads_on_next_run() -> None:
    # Paged by id, the posts below the last page read are bounded by ids: the stored id stays
    # (so they stay new), the gap is remembered, and the next run reads it before anything else.
    posts = [{"id": i, "at": i} for i in range(100, 111)]  # 100: the stored one, still there
    first = id_run({"last_id": 100}, posts, max_pages=2)
    assert all_ids(first) == ["110", "109", "108", "107", "106", "105"]
    cursor = first[-1].cursor
    assert cursor == {"last_id": 100, "gap": {"before": 105, "newest": 110}}
    assert len(first[-1].notes) == 1 and "the next run reads on" in first[-1].notes[0]

    posts.append({"id": 111, "at": 111})  # posted in between
    second = id_run(cursor, posts, max_pages=2)
    assert all_ids(second) == ["104", "103", "102", "101"] and ID_CALLS[0] == ("/posts", 105)
    assert second[-1].cursor == {"last_id": 110} and second[-1].notes == []
    third = id_run(second[-1].cursor, posts, max_pages=2)
    assert all_ids(third) == ["111"] and third[-1].cursor == {"last_id": 111}

    # Cut again inside the gap: the gap moves down, the newest id it waits for stays.
    deep = [{"id": i, "at": i} for i in range(100, 121)]
    gap = {"last_id": 100, "gap": {"before": 118, "newest": 120}}
    again = id_run(gap, deep, max_pages=1)
    assert all_ids(again) == ["117", "116", "115"]
    assert again[-1].cursor == {"last_id": 100, "gap": {"before": 115, "newest": 120}}
    # A gap that makes no sense (edited by hand) is ignored: read from the top, nothing lost.
    odd = id_run({"last_id": 100, "gap": {"before": "x", "newest": 120}}, posts)
    assert len(all_ids(odd)) == 11 and odd[-1].cursor == {"last_id": 111}
