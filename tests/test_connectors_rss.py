"""The ``rss`` connector over HTTP against a local publisher (tests/fakes/feed.py).

Conditional GET (ETag and Last-Modified), 304 meaning nothing new, 5xx and a hung publisher
failing the source without moving its cursor, and poison entries quarantined without pushing the
watermark. The store side is a real DuckDB file through ``ingest`` (the flow's fetch task body).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from connectors import ConnectorError, SourceContext, rss
from flows.settings import load_config
from flows.triage import ingest
from tests.fakes.feed import FeedServer
from triage.cli import app
from triage.store import open_store

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    server = FeedServer().start()
    try:
        yield server
    finally:
        server.stop()


def config(tmp_path: Path, feed: FeedServer, path: str = "/comments.rss", **extra: Any) -> Path:
    source = {
        "name": "blog",
        "type": "rss",
        "url": feed.url + path,
        "timeout": 5,
        "max_retries": 2,
        "retry_backoff": 0,
        **extra,
    }
    out = tmp_path / "triage.yaml"
    out.write_text(yaml.safe_dump({"database": str(tmp_path / "t.duckdb"), "sources": [source]}))
    return out


def fetch_into_store(cfg_path: Path) -> dict[str, Any]:
    cfg = load_config(cfg_path)
    return ingest(cfg, cfg.sources[0])


def stored(tmp_path: Path) -> list[str]:
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        return sorted(r[0] for r in con.execute("SELECT external_id FROM items").fetchall())


def cursor(tmp_path: Path) -> Any:
    with open_store(tmp_path / "t.duckdb", read_only=True) as store:
        return store.get_cursor("blog")


@pytest.mark.parametrize("path", ["/comments.rss", "/forum.atom"])
def test_conditional_get_and_304_mean_nothing_new(
    feed: FeedServer, tmp_path: Path, path: str
) -> None:
    feed.add("c1", "Love the new sync, thanks!", NOW - timedelta(hours=3))
    feed.add("c2", "Any student discount?", NOW - timedelta(hours=2))
    cfg = config(tmp_path, feed, path)

    first = fetch_into_store(cfg)
    assert first["stored"] == 2 and stored(tmp_path) == ["c1", "c2"]
    sent = feed.calls[-1]
    assert sent.status == 200 and "if-none-match" not in sent.headers
    saved = cursor(tmp_path)
    assert saved["etag"].startswith('"') and saved["last_modified"].endswith("GMT")

    # Unchanged feed: the validators go back to the publisher, which answers 304.
    second = fetch_into_store(cfg)
    asked = feed.calls[-1]
    assert asked.headers["if-none-match"] == saved["etag"]
    assert asked.headers["if-modified-since"] == saved["last_modified"]
    assert asked.status == 304
    assert second["fetched"] == 0 and cursor(tmp_path) == saved

    # A new entry changes the validators: only it is new.
    feed.add("c3", "Export to PDF is broken", NOW - timedelta(hours=1))
    third = fetch_into_store(cfg)
    assert feed.calls[-1].status == 200
    assert third["stored"] == 1 and stored(tmp_path) == ["c1", "c2", "c3"]
    assert cursor(tmp_path)["etag"] != saved["etag"]


def test_last_modified_alone_gives_304_too(feed: FeedServer, tmp_path: Path) -> None:
    feed.send_etag = False
    feed.add("c1", "Great support today", NOW - timedelta(hours=3))
    cfg = config(tmp_path, feed)
    assert fetch_into_store(cfg)["stored"] == 1
    assert "etag" not in cursor(tmp_path)
    assert fetch_into_store(cfg)["fetched"] == 0
    assert feed.calls[-1].status == 304 and "if-none-match" not in feed.calls[-1].headers


def test_server_errors_are_retried_then_fail_the_source_without_moving_its_cursor(
    feed: FeedServer, tmp_path: Path
) -> None:
    feed.add("c1", "first comment", NOW - timedelta(hours=3))
    cfg = config(tmp_path, feed)
    fetch_into_store(cfg)
    before = cursor(tmp_path)
    feed.add("c2", "second comment", NOW - timedelta(hours=1))

    # One 503, then the feed: the retry reads it.
    feed.failures = [503]
    assert fetch_into_store(cfg)["stored"] == 1
    after = cursor(tmp_path)
    assert after != before

    # Down for longer than the retries: the source fails and its cursor stays.
    feed.add("c3", "third comment", NOW - timedelta(minutes=30))
    feed.failures = [503, 502, 500]
    with pytest.raises(ConnectorError, match="source 'blog'.*gave up after 3 attempts.*HTTP 500"):
        fetch_into_store(cfg)
    assert cursor(tmp_path) == after and stored(tmp_path) == ["c1", "c2"]
    # A 404 is not retried; the message names the status.
    feed.failures = [404]
    with pytest.raises(ConnectorError, match="HTTP 404"):
        fetch_into_store(cfg)
    assert cursor(tmp_path) == after


def test_a_hung_publisher_times_out_and_the_cursor_stays(feed: FeedServer, tmp_path: Path) -> None:
    feed.add("c1", "first comment", NOW - timedelta(hours=3))
    cfg = config(tmp_path, feed, timeout=0.2, max_retries=1)
    fetch_into_store(cfg)
    before = cursor(tmp_path)
    feed.stalled = True  # answers nothing until the test ends: no race with the client's clock
    with pytest.raises(ConnectorError, match="Timeout"):
        fetch_into_store(cfg)
    assert cursor(tmp_path) == before
    assert len([c for c in feed.calls if c.status == 0]) == 2  # the first try and one retry


def test_poison_entries_are_quarantined_and_do_not_move_the_watermark(
    feed: FeedServer, tmp_path: Path
) -> None:
    feed.add("ok-1", "fine comment", NOW - timedelta(hours=2))
    feed.add("future", "from the future", NOW + timedelta(days=400))
    feed.add("y9999", "end of time", None, raw_date="Fri, 31 Dec 9999 23:59:59 -0500")
    feed.add("nodate", "no date at all", None)
    feed.add("empty", "", NOW - timedelta(hours=1))
    cfg = config(tmp_path, feed)
    result = fetch_into_store(cfg)
    assert stored(tmp_path) == ["ok-1"]
    assert result["quarantined"] == 4
    assert cursor(tmp_path)["watermark"] == (NOW - timedelta(hours=2)).isoformat()
    # The next real comment is still read.
    feed.add("ok-2", "newer fine comment", NOW - timedelta(minutes=5))
    fetch_into_store(cfg)
    assert stored(tmp_path) == ["ok-1", "ok-2"]


def test_an_entry_dated_hours_ahead_does_not_hide_the_entries_after_it(
    feed: FeedServer, tmp_path: Path
) -> None:
    # Dated ahead within the day allowed for clock skew (a local time labelled UTC): with the
    # watermark at its time, every entry published before that hour was skipped.
    feed.add("ok-1", "fine comment", NOW - timedelta(hours=2))
    feed.add("skewed", "posted at 9 local, labelled UTC", NOW + timedelta(hours=20))
    cfg = config(tmp_path, feed)
    fetch_into_store(cfg)
    assert stored(tmp_path) == ["ok-1", "skewed"]
    assert datetime.fromisoformat(cursor(tmp_path)["watermark"]) <= datetime.now(UTC)
    feed.add("ok-2", "a comment written after the run", datetime.now(UTC) + timedelta(seconds=2))
    result = fetch_into_store(cfg)
    assert stored(tmp_path) == ["ok-1", "ok-2", "skewed"]
    assert result["stored"] == 1  # the skewed entry was read again and not stored twice


def test_sources_check_samples_the_feed(feed: FeedServer, tmp_path: Path) -> None:
    feed.add("ok-1", "fine comment", NOW - timedelta(hours=2))
    feed.add("nodate", "no date at all", None)
    result = CliRunner().invoke(
        app, ["sources", "check", "blog", "--config", str(config(tmp_path, feed))]
    )
    assert result.exit_code == 0, result.output
    assert "sample of 2 record(s): 1 would be stored, 1 would be quarantined" in result.output
    assert "entry has no published or updated date" in result.output


@pytest.mark.parametrize(
    "ref",
    [
        "&#xD800;",
        "&#55296;",
        "&#x110000;",
        "&#99999999999999999999;",
        "&#xdfff",
        "&#9" + "9" * 5000,
    ],
)
def test_a_reference_to_no_character_costs_that_character_not_the_feed(
    tmp_path: Path, ref: str
) -> None:
    # feedparser raised on such a reference inside one entry (UnicodeEncodeError for a lone
    # surrogate, ValueError past U+10FFFF, OverflowError for 20 digits): the whole feed was lost
    # on every run while the entry was in it. The reference now reads as U+FFFD.
    def item(guid: str, hours: int, text: str) -> str:
        when = format_datetime(NOW - timedelta(hours=hours))
        return (
            f"<item><guid>{guid}</guid><link>https://blog.example.com/{guid}</link>"
            f"<pubDate>{when}</pubDate><description>{text}</description></item>"
        )

    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Blog</title>'
        "<link>https://blog.example.com/</link>"
        + item("c3", 1, "good newer")
        + item("c2", 2, f"great app {ref} really")
        + item("c1", 3, "good older")
        + "</channel></rss>"
    )
    (tmp_path / "feed.xml").write_text(body)
    ctx = SourceContext(name="blog", settings={"url": "feed.xml"}, base_dir=tmp_path)
    (batch,) = list(rss.fetch(ctx, None))
    texts = {m.external_id: m.text for m in batch.mentions}
    assert sorted(texts) == ["c1", "c2", "c3"] and batch.rejected == []
    assert texts["c2"].startswith("great app \ufffd")
    assert rss.check(ctx) == "'Blog': 3 entries"
    assert len(rss.sample(ctx).mentions) == 3


def test_items_without_a_guid_that_share_a_link_are_each_stored_once(tmp_path: Path) -> None:
    # A comment feed's items often all link to the post they comment on and carry no <guid>.
    # By the link alone they were one item: every comment after the first was lost unsaid.
    def item(n: int, minutes: int) -> str:
        when = format_datetime(NOW - timedelta(minutes=minutes))
        return (
            f"<item><title>Comment by user{n}</title><link>https://blog.example.com/post-42</link>"
            f"<pubDate>{when}</pubDate><description>comment {n}: love the new theme</description>"
            "</item>"
        )

    def write(*items: str) -> None:
        (tmp_path / "feed.xml").write_text(
            '<?xml version="1.0"?><rss version="2.0"><channel><title>Comments</title>'
            "<link>https://blog.example.com/</link>" + "".join(items) + "</channel></rss>"
        )

    write(item(2, 2), item(1, 3))
    cfg = tmp_path / "triage.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "database": str(tmp_path / "t.duckdb"),
                "sources": [{"name": "blog", "type": "rss", "url": "feed.xml"}],
            }
        )
    )
    assert fetch_into_store(cfg)["stored"] == 2
    # The next run sees the newest again (it sits at the watermark) and one more: the ids are
    # the same on every run, so nothing is stored twice.
    write(item(3, 1), item(2, 2), item(1, 3))
    assert fetch_into_store(cfg)["stored"] == 1
    ids = stored(tmp_path)
    assert len(ids) == 3 and all(i.startswith("https://blog.example.com/post-42#") for i in ids)
