"""Social and community connectors against local fakes of their APIs (random ports, real clients).

Every connector runs the same scenarios through a small per-connector spec: pagination, the stored
cursor (a second fetch returns only new items), 429 then success, 5xx then success, refused
credentials, malformed records to quarantine, oversize text truncated, and ``check()``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from connectors import CONNECTORS, ConnectorError, SourceContext, paging
from connectors import bluesky as bluesky_mod
from connectors import discourse as discourse_mod
from connectors import hackernews as hackernews_mod
from connectors import mastodon as mastodon_mod
from connectors import reddit as reddit_mod
from connectors import slack_community as slack_community_mod
from connectors import social_api as sa
from connectors import x as x_mod
from connectors import youtube as youtube_mod
from flows import triage as flows_triage
from tests.fakes.base import FakeApi, Request
from tests.fakes.bluesky import FakeBluesky
from tests.fakes.discourse import FakeDiscourse
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.reddit import FakeReddit
from tests.fakes.slack_community import CommunitySlackServer
from tests.fakes.x import FakeX
from tests.fakes.youtube import FakeYouTube
from triage.cli import app
from triage.models import TRUNCATION_MARKER, InvalidRecord, Mention, Rejected
from triage.store import open_store


@dataclass
class Spec:
    """How to drive one connector against its fake."""

    name: str
    module: ModuleType
    make_fake: Callable[[], Any]
    settings: Callable[[Any], dict[str, Any]]
    add: Callable[[Any, str, datetime], str]
    add_malformed: Callable[[Any], None]
    secrets: dict[str, str] = field(default_factory=dict)
    # Secrets that the API refuses, and a phrase the error must contain; None: no credentials.
    bad_secrets: dict[str, str] | None = None
    auth_phrase: str = ""
    # How many items a page holds with the settings above (the tests add more than two pages).
    page: int = 10
    data_path: str = ""
    # False when the API can be read anonymously (a credential only widens what is visible).
    secrets_required: bool = True


def _now(minutes: float = 0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)


def _hn_malformed(fake: FakeHackerNews) -> None:
    now = int(_now(2).timestamp())
    # A deleted comment keeps its hit but loses its text; a hit without its id cannot be stored.
    fake.add_raw({"objectID": "bad-1", "created_at_i": now, "comment_text": None, "_tags": []})
    fake.add_raw({"created_at_i": now, "comment_text": "no id", "_tags": ["malformed"]})


def _x_malformed(fake: FakeX) -> None:
    fake.add_raw({"text": "no date on this one", "author_id": "2244994945"})
    fake.add_raw({"created_at": _now(2).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "text": 42})


def _reddit_malformed(fake: FakeReddit) -> None:
    fake.add_raw({"kind": "t3", "data": {"name": "t3_nodate", "subreddit": "notetaking"}})
    fake.add_raw(
        {
            "kind": "t1",
            "data": {
                "name": "t1_blank",
                "subreddit": "notetaking",
                "body": "  ",
                "created_utc": _now(2).timestamp(),
            },
        }
    )


def _iso(minutes: float) -> str:
    return _now(minutes).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _mastodon_malformed(fake: FakeMastodon) -> None:
    account = {"acct": "troll", "username": "troll"}
    fake.add_raw({"created_at": "last tuesday", "content": "<p>hi</p>", "account": account})
    fake.add_raw({"created_at": _iso(2), "content": "<p> </p>", "account": account})


def _bluesky_malformed(fake: FakeBluesky) -> None:
    base = "at://did:plc:odd/app.bsky.feed.post/malformed"
    fake.add_raw({"uri": f"{base}1", "record": {"text": "nimbus", "createdAt": "yesterday"}})
    fake.add_raw({"uri": f"{base}2", "indexedAt": _iso(2)})


def _youtube_malformed(fake: FakeYouTube) -> None:
    top = {"kind": "youtube#comment", "id": "UgzBAD", "snippet": {"videoId": "vid0001"}}
    snippet = {"videoId": "vid0001", "channelId": "UCnimbus", "topLevelComment": top}
    fake.add_raw({"kind": "youtube#commentThread", "id": "UgzBAD", "snippet": snippet})


def _discourse_malformed(fake: FakeDiscourse) -> None:
    fake.add_raw({"created_at": "soon", "raw": "hello", "username": "x", "post_type": 1})
    fake.add_raw({"created_at": _iso(2), "raw": "", "cooked": "", "post_type": 1})


def _slack_malformed(fake: CommunitySlackServer) -> None:
    ts = int(_now(2).timestamp())
    fake.state.add_raw({"type": "message", "user": "U1", "ts": f"{ts}.900001"})
    fake.state.add_raw({"type": "message", "user": "U1", "ts": f"{ts}.900002", "text": 12345})


SPECS: list[Spec] = [
    Spec(
        name="hackernews",
        module=hackernews_mod,
        make_fake=FakeHackerNews,
        settings=lambda f: {"base_url": f"{f.url}/api/v1", "query": "nimbus", "page_size": 10},
        add=lambda f, text, created: f.add(f"nimbus {text}", created),
        add_malformed=_hn_malformed,
        data_path="search_by_date",
    ),
    Spec(
        name="x",
        module=x_mod,
        make_fake=FakeX,
        settings=lambda f: {"query": "nimbus -is:retweet", "page_size": 10},
        add=lambda f, text, created: f.add(text, created),
        add_malformed=_x_malformed,
        secrets={"X_BEARER_TOKEN": "x-bearer-good"},
        bad_secrets={"X_BEARER_TOKEN": "x-bearer-revoked"},
        auth_phrase="X refused the bearer token",
        data_path="/2/tweets/search/recent",
    ),
    Spec(
        name="reddit",
        module=reddit_mod,
        make_fake=FakeReddit,
        settings=lambda f: {"auth_url": f.url, "subreddits": ["notetaking"], "page_size": 10},
        add=lambda f, text, created: f.add(text, created),
        add_malformed=_reddit_malformed,
        secrets={"REDDIT_CLIENT_ID": "app-id", "REDDIT_CLIENT_SECRET": "app-secret"},
        bad_secrets={"REDDIT_CLIENT_ID": "app-id", "REDDIT_CLIENT_SECRET": "wrong"},
        auth_phrase="Reddit refused the app credentials",
        data_path="/r/notetaking/new",
    ),
    Spec(
        name="mastodon",
        module=mastodon_mod,
        make_fake=FakeMastodon,
        settings=lambda f: {"hashtags": ["#NimbusNotes"], "mentions": True, "page_size": 10},
        add=lambda f, text, created: f.add(text, created),
        add_malformed=_mastodon_malformed,
        secrets={"MASTODON_ACCESS_TOKEN": "masto-good"},
        bad_secrets={"MASTODON_ACCESS_TOKEN": "masto-revoked"},
        auth_phrase="refused the access token",
        data_path="/api/v1/timelines/tag/",
    ),
    Spec(
        name="bluesky",
        module=bluesky_mod,
        make_fake=FakeBluesky,
        settings=lambda f: {"queries": ["nimbus"], "handle": "brand.bsky.social", "page_size": 10},
        add=lambda f, text, created: f.add(f"nimbus {text}", created),
        add_malformed=_bluesky_malformed,
        secrets={"BLUESKY_APP_PASSWORD": "abcd-efgh-ijkl-mnop"},
        bad_secrets={"BLUESKY_APP_PASSWORD": "wrong-pass-word-here"},
        auth_phrase="Bluesky refused the sign-in",
        data_path="searchPosts",
    ),
    Spec(
        name="youtube",
        module=youtube_mod,
        make_fake=FakeYouTube,
        settings=lambda f: {
            "base_url": f"{f.url}/youtube/v3",
            "video_ids": ["vid0001"],
            "page_size": 10,
        },
        add=lambda f, text, created: f.add(text, created),
        add_malformed=_youtube_malformed,
        secrets={"YOUTUBE_API_KEY": "AIza-good-key"},
        bad_secrets={"YOUTUBE_API_KEY": "AIza-typo"},
        auth_phrase="YouTube refused the API key",
        data_path="commentThreads",
    ),
    Spec(
        name="discourse",
        module=discourse_mod,
        make_fake=FakeDiscourse,
        settings=lambda f: {"api_username": "system"},
        add=lambda f, text, created: f.add(text, created),
        add_malformed=_discourse_malformed,
        secrets={"DISCOURSE_API_KEY": "disc-good-key"},
        bad_secrets={"DISCOURSE_API_KEY": "disc-old-key"},
        auth_phrase="the forum refused the API key",
        secrets_required=False,
        page=50,
        data_path="/posts.json",
    ),
    Spec(
        name="slack_community",
        module=slack_community_mod,
        make_fake=CommunitySlackServer,
        settings=lambda f: {"api_url": f.url, "channels": ["C0COMMUNITY"], "page_size": 10},
        add=lambda f, text, created: f.add(text, created),
        add_malformed=_slack_malformed,
        secrets={"SLACK_COMMUNITY_TOKEN": "xoxb-community"},
        bad_secrets={"SLACK_COMMUNITY_TOKEN": "xoxb-revoked"},
        auth_phrase="refused the token",
    ),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Credential tests run only for connectors that have credentials (Hacker News has none).
    if "spec" in metafunc.fixturenames:
        specs = SPECS
        if metafunc.function.__name__ == "test_refused_credentials":
            specs = [s for s in SPECS if s.bad_secrets is not None]
        if metafunc.function.__name__ == "test_missing_credentials_named":
            specs = [s for s in SPECS if s.secrets and s.secrets_required]
        metafunc.parametrize("spec", specs, ids=[s.name for s in specs])


SPECS_BY_NAME = {s.name: s for s in SPECS}


@pytest.fixture
def fake(spec: Spec) -> Iterator[Any]:
    with spec.make_fake() as server:
        yield server


def _ctx(
    spec: Spec, fake: Any, secrets: dict[str, str] | None = None, **extra: Any
) -> SourceContext:
    settings = {
        "base_url": fake.url,
        "retry_backoff": 0.01,
        "max_retries": 3,
        "timeout": 2,
        **spec.settings(fake),
        **extra,
    }
    values = spec.secrets if secrets is None else secrets
    return SourceContext(
        name=f"my-{spec.name}", settings=settings, base_dir=Path("."), secret=values.get
    )


def _fetch(
    spec: Spec, ctx: SourceContext, cursor: Any
) -> tuple[list[Mention], list[Rejected], Any]:
    mentions: list[Mention] = []
    rejected: list[Rejected] = []
    for batch in spec.module.fetch(ctx, cursor):
        mentions += batch.mentions
        rejected += batch.rejected
        cursor = batch.cursor
    return mentions, rejected, cursor


def test_every_connector_is_registered() -> None:
    for s in SPECS:
        assert CONNECTORS[s.name] is s.module
        assert "base_url" in s.module.SETTINGS and "backfill_days" in s.module.SETTINGS


def test_pagination_backfill_and_cursor(spec: Spec, fake: Any) -> None:
    # Older than the backfill window: the first run must not reach back this far.
    old = spec.add(fake, "an old post from last month", _now(60 * 24 * 30))
    total = 2 * spec.page + 3
    # Published in time order, as they would be, so sequential ids grow with time.
    ids = {spec.add(fake, f"post number {i}", _now(5 + i)) for i in reversed(range(total))}
    ctx = _ctx(spec, fake)

    mentions, rejected, cursor = _fetch(spec, ctx, None)

    got = [m.external_id for m in mentions]
    assert len(got) == len(set(got)), "an item was fetched twice"
    assert set(got) == ids and old not in got
    assert rejected == []
    assert len(fake.served(spec.data_path)) >= 3, "expected several pages"
    assert all(m.source == ctx.name and m.text and m.created_at.tzinfo for m in mentions)

    fresh = {spec.add(fake, f"brand new post {i}", _now(1 - i)) for i in range(2)}
    again, _, cursor2 = _fetch(spec, ctx, cursor)
    assert {m.external_id for m in again} == fresh

    nothing, _, _ = _fetch(spec, ctx, cursor2)
    assert nothing == []


def _watermark(entry: Any) -> bool:
    return (
        set(entry) == {"since", "ids"}
        and datetime.fromisoformat(entry["since"]).tzinfo is not None
        and all(isinstance(i, str) for i in entry["ids"])
    )


# The cursor entries as databases already store them (one stream, or one entry per stream).
CURSOR_SHAPES: dict[str, Callable[[Any], bool]] = {
    "hackernews": _watermark,
    "x": lambda c: set(c) == {"since_id"} and c["since_id"].isdigit(),
    "discourse": lambda c: set(c) == {"last_id"} and type(c["last_id"]) is int,
    "reddit": lambda c: all(_watermark(v) for v in c.values()),
    "bluesky": lambda c: all(_watermark(v) for v in c.values()),
    "youtube": lambda c: all(_watermark(v) for v in c.values()),
    "mastodon": lambda c: all(
        set(v) == {"since_id"} and v["since_id"].isdigit() for v in c.values()
    ),
    "slack_community": lambda c: all(set(v) == {"ts"} and float(v["ts"]) > 0 for v in c.values()),
}


def test_cursor_keeps_the_stored_shape(spec: Spec, fake: Any) -> None:
    for i in range(3):
        spec.add(fake, f"post {i}", _now(3 + i))
    ctx = _ctx(spec, fake)
    _, _, cursor = _fetch(spec, ctx, None)
    assert cursor and CURSOR_SHAPES[spec.name](cursor), cursor
    # As the store keeps it (JSON), and read back: nothing is fetched again, nothing is lost.
    stored = json.loads(json.dumps(cursor))
    assert _fetch(spec, ctx, stored)[0] == []
    new = spec.add(fake, "one more", _now(1))
    again, _, cursor2 = _fetch(spec, ctx, stored)
    assert [m.external_id for m in again] == [new] and CURSOR_SHAPES[spec.name](cursor2)


def test_rate_limit_then_success(spec: Spec, fake: Any) -> None:
    expected = {spec.add(fake, f"post {i}", _now(3 + i)) for i in range(3)}
    fake.fail_next(429, retry_after=0, times=2)
    mentions, _, _ = _fetch(spec, _ctx(spec, fake), None)
    assert {m.external_id for m in mentions} == expected
    assert fake.statuses()[:2] == [429, 429]


def test_server_error_then_success(spec: Spec, fake: Any) -> None:
    expected = {spec.add(fake, f"post {i}", _now(3 + i)) for i in range(3)}
    fake.fail_next(503, times=1)
    mentions, _, _ = _fetch(spec, _ctx(spec, fake), None)
    assert {m.external_id for m in mentions} == expected
    assert 503 in fake.statuses()


def test_outage_gives_up_with_clear_error(spec: Spec, fake: Any) -> None:
    spec.add(fake, "post", _now(3))
    fake.down = 500
    with pytest.raises(ConnectorError, match=f"my-{spec.name}.*(gave up|HTTP 500)"):
        _fetch(spec, _ctx(spec, fake), None)


def test_refused_credentials(spec: Spec, fake: Any) -> None:
    assert spec.bad_secrets is not None
    spec.add(fake, "post", _now(3))
    ctx = _ctx(spec, fake, secrets=spec.bad_secrets)
    with pytest.raises(ConnectorError, match=spec.auth_phrase):
        _fetch(spec, ctx, None)
    with pytest.raises(ConnectorError, match=spec.auth_phrase):
        spec.module.check(ctx)


def test_missing_credentials_named(spec: Spec, fake: Any) -> None:
    with pytest.raises(ConnectorError, match="credential missing: set the"):
        _fetch(spec, _ctx(spec, fake, secrets={}), None)


def test_malformed_records_are_quarantined(spec: Spec, fake: Any) -> None:
    good = spec.add(fake, "a perfectly fine post", _now(3))
    spec.add_malformed(fake)
    mentions, rejected, _ = _fetch(spec, _ctx(spec, fake), None)
    assert [m.external_id for m in mentions] == [good]
    assert rejected, "the malformed record vanished instead of going to quarantine"
    assert all(r.reason and r.raw and r.source == f"my-{spec.name}" for r in rejected)


def test_mastodon_values_of_the_wrong_type_are_quarantined_and_the_rest_stored(
    tmp_path: Path,
) -> None:
    # Values the API documents as text or a count, sent as another type, once passed the parser
    # and failed the whole batch when stored, on every run.
    with FakeMastodon() as fake:
        spec = SPECS_BY_NAME["mastodon"]
        good = fake.add("a perfectly fine post", _now(5))
        for n, (key, value) in enumerate([("language", 7), ("url", True), ("followers", 2**70)]):
            bad_id = fake.add(f"odd post {n}", _now(4 - n))
            status = next(p for p in fake.posts if p["id"] == bad_id)
            if key == "followers":
                status["account"]["followers_count"] = value
                odd_followers = bad_id
            else:
                status[key] = value
        with open_store(tmp_path / "t.duckdb") as store:
            for batch in spec.module.fetch(_ctx(spec, fake), None):
                store.ingest("my-mastodon", batch.mentions, batch.rejected, batch.cursor)
            stored = store.con.execute(
                "SELECT external_id, author_followers FROM items ORDER BY external_id"
            ).fetchall()
            reasons = sorted(
                r[0] for r in store.con.execute("SELECT reason FROM quarantine").fetchall()
            )
    # A follower count that is not one is unknown, not a reason to lose the post.
    assert sorted(stored) == sorted([(good, 42), (odd_followers, None)])
    assert len(reasons) == 2
    assert any("language is int, not text" in r for r in reasons), reasons
    assert any("url is bool, not text" in r for r in reasons), reasons


def test_a_lone_surrogate_in_a_post_is_stored_not_fatal_to_the_batch(
    spec: Spec, fake: Any, tmp_path: Path
) -> None:
    # JSON may escape half of an emoji ("\ud83d"); Python's json decodes it to a lone surrogate,
    # which cannot be encoded: the post is stored with U+FFFD instead of failing its batch.
    broken = spec.add(fake, "broken emoji \ud83d in an otherwise fine post", _now(3))
    fine = spec.add(fake, "a perfectly fine post", _now(4))
    with open_store(tmp_path / "t.duckdb") as store:
        for batch in spec.module.fetch(_ctx(spec, fake), None):
            store.ingest(f"my-{spec.name}", batch.mentions, batch.rejected, batch.cursor)
        texts = dict(store.con.execute("SELECT external_id, text FROM items").fetchall())
    assert set(texts) == {broken, fine}
    assert "broken emoji \ufffd in an otherwise fine post" in texts[broken]


def test_oversize_text_is_truncated_not_dropped(spec: Spec, fake: Any) -> None:
    ext = spec.add(fake, "long " + "x" * 30_000, _now(3))
    mentions, _, _ = _fetch(spec, _ctx(spec, fake), None)
    (m,) = [m for m in mentions if m.external_id == ext]
    assert m.text.endswith(TRUNCATION_MARKER) and len(m.text) == 20_000


# What check() must report about the one post and the settings each test sets up.
CHECK_SAYS: dict[str, Callable[[str], str]] = {
    "hackernews": lambda _: "search 'nimbus' reachable: 1 hits",
    "x": lambda _: "token accepted; query 'nimbus -is:retweet' matches 1 recent posts",
    "reddit": lambda _: "token accepted; 2 streams (new:notetaking, comments:notetaking)",
    "mastodon": lambda _: "reachable as @brand; 2 streams",  # a hashtag and the mentions
    "bluesky": lambda _: "signed in as brand.bsky.social; 1 searches",
    "youtube": lambda _: "API key accepted; 1 streams (video:vid0001)",
    "discourse": lambda post_id: f"forum reachable with API key; latest post id {post_id}",
    "slack_community": lambda _: "accepted; 1 channels readable",
}


def test_check_reports_reachability(spec: Spec, fake: Any) -> None:
    ext = spec.add(fake, "post", _now(3))
    message = spec.module.check(_ctx(spec, fake))
    assert CHECK_SAYS[spec.name](ext) in message
    # The same check against the API when it is down is an error naming the source.
    fake.down = 500
    with pytest.raises(ConnectorError, match=f"my-{spec.name}"):
        spec.module.check(_ctx(spec, fake, max_retries=0))


def test_check_reports_unreachable_api() -> None:
    ctx = SourceContext(
        name="hn",
        settings={"query": "x", "base_url": "http://127.0.0.1:9", "max_retries": 0, "timeout": 1},
        base_dir=Path("."),
    )
    with pytest.raises(ConnectorError, match="hn.*ConnectError"):
        hackernews_mod.check(ctx)


def test_fake_base_is_generic() -> None:
    # The shared fake base refuses to serve without a subclass route: guards against a silent 200.
    with FakeApi() as api, pytest.raises(NotImplementedError):
        api.route(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- through the flow and the CLI
def _write_config(tmp_path: Path, sources: list[dict[str, Any]]) -> Path:
    cfg = tmp_path / "triage.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"database": str(tmp_path / "t.duckdb"), "outbox_dir": "outbox", "sources": sources}
        ),
        encoding="utf-8",
    )
    return cfg


def test_a_source_that_is_down_fails_alone_in_the_real_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prefect still retries the failing task as configured, without the seconds between tries.
    monkeypatch.setattr(
        flows_triage, "ingest_task", flows_triage.ingest_task.with_options(retry_delay_seconds=0)
    )
    with FakeHackerNews() as hn, FakeDiscourse() as forum:
        hn.add("nimbus notes crashes every time I open a shared notebook", _now(5))
        hn.add("nimbus notes is the best app I have used this year", _now(4))
        forum.down = 500  # every request, forever
        cfg = _write_config(
            tmp_path,
            [
                {
                    "name": "hn",
                    "type": "hackernews",
                    "query": "nimbus",
                    "base_url": f"{hn.url}/api/v1",
                },
                {
                    "name": "forum",
                    "type": "discourse",
                    "base_url": forum.url,
                    "max_retries": 1,
                    "retry_backoff": 0.01,
                },
            ],
        )
        # The run ends Failed naming the source; run_triage hands back its summary.
        summary = flows_triage.run_triage(config_path=str(cfg), deliver=False)
    assert set(summary["failed_sources"]) == {"forum"}
    assert "forum" in summary["failed_sources"]["forum"]
    assert "HTTP 500" in summary["failed_sources"]["forum"]
    assert summary["sources"]["hn"]["stored"] == 2
    assert summary["classify"]["classified"] == 2
    # The healthy source's cursor is stored; the failed one has none, so nothing is skipped later.
    with open_store(tmp_path / "t.duckdb") as store:
        assert store.get_cursor("hn")["since"]
        assert store.get_cursor("forum") is None


def test_sources_check_reports_a_refused_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeBluesky() as pds:
        cfg = _write_config(
            tmp_path,
            [
                {
                    "name": "bsky",
                    "type": "bluesky",
                    "handle": "brand.bsky.social",
                    "queries": ["nimbus"],
                    "base_url": pds.url,
                }
            ],
        )
        runner = CliRunner()
        monkeypatch.setenv("BLUESKY_APP_PASSWORD", "not-the-password")
        bad = runner.invoke(app, ["sources", "check", "bsky", "--config", str(cfg)])
        monkeypatch.setenv("BLUESKY_APP_PASSWORD", pds.password)
        good = runner.invoke(app, ["sources", "check", "bsky", "--config", str(cfg)])
    assert bad.exit_code == 1
    assert "bsky" in bad.output and "Bluesky refused the sign-in" in bad.output
    assert "not-the-password" not in bad.output  # secrets never reach the terminal
    assert good.exit_code == 0, good.output
    assert "OK" in good.output and "brand.bsky.social" in good.output


def test_sources_list_shows_the_social_connectors(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, [])
    result = CliRunner().invoke(app, ["sources", "list", "--config", str(cfg)])
    assert result.exit_code == 0
    for s in SPECS:
        assert f"{s.name}: not configured" in result.output


# ---------------------------------------------------------------- connector specifics
def test_watermark_keeps_same_second_items_and_skips_taken_ones() -> None:
    t = _now(10)
    mark = paging.Watermark.load(None, t)
    assert mark.is_new(t, "a") and not mark.older(t)
    mark.take(t, "a")
    mark.take(t, "b")
    again = paging.Watermark.load(mark.dump(), t - timedelta(days=9))
    assert not again.is_new(t, "a") and not again.is_new(t, "b")
    assert again.is_new(t, "c") and again.is_new(t + timedelta(seconds=1), "a")
    assert again.older(t - timedelta(seconds=1))


def test_spent_quota_waits_for_the_reset() -> None:
    waits: list[float] = []
    with FakeHackerNews() as hn:
        hn.add("nimbus", _now(1))

        ctx = SourceContext(
            name="hn", settings={"base_url": f"{hn.url}/api/v1"}, base_dir=Path(".")
        )
        api = sa.Api(ctx, "", sleep=waits.append)
        resp = httpx.Response(
            200, headers={"x-rate-limit-remaining": "0", "x-rate-limit-reset": "7"}
        )
        api._respect_quota(resp)
        api._respect_quota(httpx.Response(200, headers={"ratelimit-remaining": "12"}))
        api.close()
    assert waits == [7.0]
    assert (
        sa.reset_wait("2030-01-01T00:00:00Z", now=datetime(2030, 1, 1, tzinfo=UTC).timestamp() - 5)
        == 5
    )


def test_reddit_search_and_subreddit_find_a_post_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeReddit() as fake:
        post = fake.add("Nimbus notes vs the rest: worth switching?", _now(3))
        comment = fake.add("nimbus sync is broken again", _now(2), kind="t1")
        ctx = SourceContext(
            name="r",
            settings={
                "base_url": fake.url,
                "auth_url": fake.url,
                "queries": ["nimbus"],
                "subreddits": ["r/notetaking"],
                "user_agent": "test/1.0 (by /u/tester)",
            },
            base_dir=Path("."),
            secret={"REDDIT_CLIENT_ID": "app-id", "REDDIT_CLIENT_SECRET": "app-secret"}.get,
        )
        mentions, _, cursor = _fetch(SPECS_BY_NAME["reddit"], ctx, None)
        token_calls = fake.served("/api/v1/access_token")
    ids = [m.external_id for m in mentions]
    assert sorted(ids) == sorted([post, comment])
    by_id = {m.external_id: m for m in mentions}
    assert (
        by_id[comment].in_reply_to == "t3_parent" and by_id[comment].source_type == "reddit_comment"
    )
    assert by_id[post].url and by_id[post].url.startswith("https://www.reddit.com/r/notetaking/")
    assert set(cursor) == {"search:nimbus", "new:notetaking", "comments:notetaking"}
    assert len(token_calls) == 1


def test_mastodon_mentions_need_and_use_the_token() -> None:
    with FakeMastodon() as fake:
        sid = fake.add("@brand the export button does nothing", _now(2), mention=True)
        ctx = SourceContext(
            name="m",
            settings={"base_url": fake.url, "mentions": True},
            base_dir=Path("."),
            secret={"MASTODON_ACCESS_TOKEN": "masto-good"}.get,
        )
        mentions, _, cursor = _fetch(SPECS_BY_NAME["mastodon"], ctx, None)
        assert [m.external_id for m in mentions] == [sid]
        assert mentions[0].text.startswith("@brand the export button")  # HTML stripped
        assert "<p>" not in mentions[0].text and mentions[0].author.followers == 42
        assert set(cursor) == {"mentions"}
        anonymous = SourceContext(
            name="m", settings=ctx.settings, base_dir=Path("."), secret={}.get
        )
        with pytest.raises(ConnectorError, match="MASTODON_ACCESS_TOKEN"):
            _fetch(SPECS_BY_NAME["mastodon"], anonymous, None)


def test_youtube_reads_new_replies_and_keeps_the_key_out_of_urls() -> None:
    with FakeYouTube() as fake:
        thread = fake.add("does nimbus work offline?", _now(30))
        spec = SPECS_BY_NAME["youtube"]
        ctx = _ctx(spec, fake)
        first, _, cursor = _fetch(spec, ctx, None)
        reply = fake.reply(thread, "same question, also for sharing", _now(1))
        second, _, _ = _fetch(spec, ctx, cursor)
        keys_in_urls = [c for c in fake.calls if c.arg("key")]
    assert [m.external_id for m in first] == [thread]
    assert [m.external_id for m in second] == [reply]
    assert second[0].thread == thread and second[0].in_reply_to == thread
    assert keys_in_urls == []


def test_discourse_skips_system_posts_and_reads_anonymously() -> None:
    with FakeDiscourse() as fake:
        fake.add("Topic closed automatically", _now(4), post_type=3)
        real = fake.add("Sync keeps failing on Android 14", _now(3), topic=78)
        spec = SPECS_BY_NAME["discourse"]
        mentions, _, cursor = _fetch(spec, _ctx(spec, fake, secrets={}), None)
        assert all("api-key" not in c.headers for c in fake.calls)
        fake.login_required = True
        with pytest.raises(ConnectorError, match="HTTP 403"):
            _fetch(spec, _ctx(spec, fake, secrets={}), None)
    assert [m.external_id for m in mentions] == [real]
    assert mentions[0].text.startswith("Sync keeps failing\n\n")  # first post carries the title
    assert cursor == {"last_id": int(real)}


def test_x_first_run_stays_inside_recent_search_window() -> None:
    with FakeX() as fake:
        fake.add("nimbus notes please add a dark mode", _now(3))
        spec = SPECS_BY_NAME["x"]
        mentions, _, cursor = _fetch(spec, _ctx(spec, fake, backfill_days=30), None)
        starts = [c.arg("start_time") for c in fake.calls]
    assert len(mentions) == 1 and mentions[0].author.handle == "happycustomer"
    assert mentions[0].author.followers == 321
    assert starts and all(s for s in starts)
    assert cursor == {"since_id": mentions[0].external_id}


def test_slack_community_skips_joins_and_bots() -> None:
    with CommunitySlackServer() as fake:
        fake.state.add("joined #community", _now(4), subtype="channel_join")
        fake.state.add("Deploy finished", _now(3), bot_id="B1", subtype="bot_message")
        human = fake.add("is there an education discount for nimbus?", _now(2))
        spec = SPECS_BY_NAME["slack_community"]
        ctx = _ctx(spec, fake, workspace_url="https://community.slack.com")
        mentions, rejected, cursor = _fetch(spec, ctx, None)
        kept, _, _ = _fetch(spec, _ctx(spec, fake, include_bots=True), None)
    assert [m.external_id for m in mentions] == [human] and rejected == []
    assert mentions[0].url and mentions[0].url.startswith(
        "https://community.slack.com/archives/C0COMMUNITY/p"
    )
    assert cursor["C0COMMUNITY"]["ts"] == human.split(":", 1)[1]
    assert sorted(m.text for m in kept) == [
        "Deploy finished",
        "is there an education discount for nimbus?",
    ]


def test_a_stalled_request_times_out_and_is_retried() -> None:
    with FakeHackerNews() as fake:
        expected = fake.add("nimbus keeps logging me out", _now(2))
        # No answer until the client gives up (its 1 s timeout) and retries; 60 s only caps it.
        fake.fail_next(0, retry_after=60)
        spec = SPECS_BY_NAME["hackernews"]
        mentions, _, _ = _fetch(spec, _ctx(spec, fake, timeout=1), None)
    assert [m.external_id for m in mentions] == [expected]
    assert fake.statuses()[0] == 599 and fake.statuses()[-1] == 200


def test_paginator_stops_at_the_stored_id_and_quarantines_what_it_cannot_read() -> None:
    # Two id-ordered streams over the same posts, newest first, two per page (as Discourse pages).
    posts = [{"id": i, "text": f"post {i}"} for i in (9, 8, 7, 6, 5)] + [{"id": "bad"}]
    pages = {None: posts[:2], 8: posts[2:4], 6: posts[4:], 5: []}

    def get(path: str, params: dict[str, Any]) -> Any:
        return pages[params.get("before")]

    def entries(data: Any) -> list[paging.Entry]:
        return [paging.Entry(p, id=p["id"] if isinstance(p["id"], int) else None) for p in data]

    def parse(entry: paging.Entry, at: datetime) -> Mention:
        if entry.id is None:
            raise InvalidRecord("post has no numeric id")
        return Mention(
            source="s", external_id=str(entry.id), text=entry.record["text"], created_at=at
        )

    def order(value: Any) -> int | None:
        return value if isinstance(value, int) else None

    def stream(key: str, stored: int | None) -> paging.Stream:
        mark = paging.HighestId("last_id", stored, order)
        return paging.Stream(key, "/posts", {}, mark, paging.BeforeLowest("before", order), entries)

    ctx = SourceContext(name="s", settings={}, base_dir=Path("."))
    batches = list(paging.paginate(ctx, None, [stream("a", 6), stream("b", None)], get, parse))
    mentions = [m.external_id for b in batches for m in b.mentions]
    rejected = [r for b in batches for r in b.rejected]
    # Stream a stops at id 6 (stored) and never reads the third page; stream b reads them all,
    # and returns only what stream a did not (6 and 5), each post once.
    assert mentions == ["9", "8", "7", "6", "5"]
    assert [len(b.mentions) for b in batches] == [2, 1, 0, 1, 1, 0, 0]
    assert [(r.reason, r.external_id) for r in rejected] == [("post has no numeric id", None)]
    assert all(b.cursor is None for b in batches[:-1])
    assert batches[-1].cursor == {"a": {"last_id": 9}, "b": {"last_id": 9}}


# A broken record with an id far above the real ones, as each id-ordered API would carry it.
BOGUS_HIGH_IDS: dict[str, Callable[[Any], None]] = {
    "discourse": lambda f: f.add_raw({"id": 10**12, "created_at": "soon", "post_type": 1}),
    "slack_community": lambda f: f.state.add_raw(
        {"type": "message", "user": "U1", "ts": "9999999999.000000", "text": "from 2286"}
    ),
    "x": lambda f: f.add_raw({"id": "9" * 19, "text": "no date on this one"}),
    "mastodon": lambda f: f.add_raw(
        {"id": "9" * 19, "created_at": "last tuesday", "content": "<p>hi</p>", "account": {}}
    ),
}


@pytest.mark.parametrize("name", sorted(BOGUS_HIGH_IDS))
def test_a_broken_record_with_a_bogus_high_id_does_not_hide_later_posts(name: str) -> None:
    # The cursor keeps the highest id of what was read: had the broken record's id moved it,
    # every later post would sit below it and never be fetched (Slack's oldest, X's since_id).
    spec = SPECS_BY_NAME[name]
    with spec.make_fake() as fake:
        first = spec.add(fake, "sync broke again after the update", _now(5))
        BOGUS_HIGH_IDS[name](fake)
        ctx = _ctx(spec, fake)
        got, rejected, cursor = _fetch(spec, ctx, None)
        later = spec.add(fake, "how much is the team plan for 12 seats?", _now(1))
        again, rejected_again, _ = _fetch(spec, ctx, cursor)
    assert [m.external_id for m in got] == [first] and len(rejected) == 1
    assert [m.external_id for m in again] == [later]
    # Read again, as it is still above the cursor; the store keeps one copy (same key).
    assert [r.reason for r in rejected_again] == [r.reason for r in rejected]


def test_a_slack_message_dated_far_ahead_is_quarantined_for_its_date() -> None:
    # The reason must say what is wrong: the time is out of range, not that it is unreadable.
    ctx = SourceContext(name="my-slack", settings={}, base_dir=Path("."), secret=lambda _: None)
    msg = {"type": "message", "user": "U1", "ts": "9999999999.000000", "text": "hello"}
    with pytest.raises(InvalidRecord) as caught:
        slack_community_mod._message(ctx, "C1", msg, datetime.now(UTC))
    assert "not a Slack timestamp" not in str(caught.value)
    assert "ahead" in str(caught.value) or "range" in str(caught.value), str(caught.value)


# ------------------------------------------------------------------ one odd record or answer


def _tamper(
    fake: FakeApi,
    change: Callable[[Request, Any], Any] = lambda req, body: body,
    headers: dict[str, str] | None = None,
) -> None:
    """Pass the strict fake's 200 answers through ``change`` (and add ``headers``): a broken
    server or proxy in front of it. The fake itself, and its paging, stay as they are."""
    route = fake.route

    def tampered(req: Request) -> Any:
        status, body, sent = route(req)
        if status != 200:
            return status, body, sent
        return status, change(req, body), {**sent, **(headers or {})}

    fake.route = tampered  # type: ignore[method-assign]


# A record whose type field is a JSON array or object once raised TypeError (unhashable) while
# its page was split into entries, outside the per-record quarantine: the page was lost.
ODD_TYPE_FIELDS: dict[str, tuple[Callable[[Any], None], str]] = {
    "discourse": (
        lambda f: f.add_raw(
            {"created_at": _iso(4), "raw": "odd post", "username": "x", "post_type": [1]}
        ),
        "post_type is list",
    ),
    "slack_community": (
        lambda f: f.state.add_raw(
            {
                "type": "message",
                "user": "U1",
                "ts": f"{int(_now(4).timestamp())}.000100",
                "text": "hi",
                "subtype": {"x": 1},
            }
        ),
        "message subtype is dict",
    ),
}


@pytest.mark.parametrize("name", sorted(ODD_TYPE_FIELDS))
def test_a_type_field_of_the_wrong_type_is_quarantined_and_its_page_stored(name: str) -> None:
    spec = SPECS_BY_NAME[name]
    add_odd, reason = ODD_TYPE_FIELDS[name]
    with spec.make_fake() as fake:
        older = spec.add(fake, "sync keeps failing on android 14", _now(5))
        add_odd(fake)
        newer = spec.add(fake, "export to PDF loses images", _now(3))
        got, rejected, cursor = _fetch(spec, _ctx(spec, fake), None)
    assert sorted(m.external_id for m in got) == sorted([older, newer])
    assert len(rejected) == 1 and rejected[0].reason.startswith(reason)
    assert cursor is not None


def test_mastodon_an_id_that_cannot_be_sent_back_does_not_steer_paging() -> None:
    # A lone surrogate is valid JSON ("\ud800"). As the page's lowest id it became max_id, which
    # cannot be encoded into a URL: UnicodeEncodeError failed the source on every run.
    spec = SPECS_BY_NAME["mastodon"]
    with FakeMastodon() as fake:
        ids = [fake.add(f"post {i}", _now(10 - i)) for i in range(5)]
        odd = {"id": "\ud800", "created_at": _iso(9.5), "content": "<p>odd</p>", "account": {}}
        _tamper(fake, lambda req, body: body if req.arg("max_id") else [*body, odd])
        ctx = _ctx(spec, fake, mentions=False, page_size=2)
        got, _, cursor = _fetch(spec, ctx, None)
        max_ids = [c.arg("max_id") for c in fake.calls if c.arg("max_id")]
    assert set(ids) <= {m.external_id for m in got}
    assert list(cursor.values()) == [{"since_id": max(ids, key=int)}]
    assert max_ids and all(m in ids for m in max_ids)


@pytest.mark.parametrize("bad_id", ["\u00b2", "9" * 5000, "9" * 20])
def test_x_an_id_that_is_not_an_x_post_id_is_quarantined(bad_id: str) -> None:
    # "²".isdigit() is True and int() refuses it; 5,000 digits exceed int()'s limit: both once
    # raised ValueError in the paging loop and stopped the source. X ids are at most 19 digits.
    spec = SPECS_BY_NAME["x"]
    with FakeX() as fake:
        older = fake.add("good older post", _now(3))
        newer = fake.add("good newer post", _now(1))
        odd = {"id": bad_id, "text": "readable", "author_id": "1", "created_at": _iso(2)}
        _tamper(fake, lambda req, body: {**body, "data": [*body.get("data", []), odd]})
        first = _fetch(spec, _ctx(spec, fake), None)
        again = _fetch(spec, _ctx(spec, fake), {"since_id": older})
    assert sorted(m.external_id for m in first[0]) == sorted([older, newer])
    assert [m.external_id for m in again[0]] == [newer]
    for _, rejected, cursor in (first, again):
        assert [r.reason.split(":")[0] for r in rejected] == ["tweet id is not an X post id"]
        assert cursor == {"since_id": newer}


@pytest.mark.parametrize("includes", [5, "s", [1], {"users": 5}, {"users": {"a": 1}}])
def test_x_malformed_includes_cost_the_authors_not_the_posts(includes: Any) -> None:
    spec = SPECS_BY_NAME["x"]
    with FakeX() as fake:
        post = fake.add("nimbus notes please add a dark mode", _now(3))
        _tamper(fake, lambda req, body: {**body, "includes": includes})
        got, rejected, _ = _fetch(spec, _ctx(spec, fake), None)
    assert [m.external_id for m in got] == [post] and rejected == []
    assert got[0].author.handle is None


# A skipped record (a join, a bot's message, a moderator's post) with a bogus place, as each API
# would carry it: it used to move the cursor unchecked, past every later post.
SKIPPED_BOGUS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "slack-join": (
        "slack_community",
        lambda f: f.state.add_raw(
            {"type": "message", "subtype": "channel_join", "user": "U1", "ts": "9999999999.000000"}
        ),
    ),
    "slack-bot": (
        "slack_community",
        lambda f: f.state.add_raw(
            {
                "type": "message",
                "subtype": "bot_message",
                "bot_id": "B1",
                "ts": "9999999999.000000",
                "text": "deploy finished",
            }
        ),
    ),
    "discourse-small-action": ("discourse", lambda f: f.add_raw({"id": 10**12, "post_type": 3})),
    # Dated, but with an id no post of this forum can have yet.
    "discourse-small-action-dated": (
        "discourse",
        lambda f: f.add_raw({"id": 2 * 10**9, "post_type": 3, "created_at": _iso(4)}),
    ),
}


@pytest.mark.parametrize("case", sorted(SKIPPED_BOGUS))
def test_a_skipped_record_with_a_bogus_place_does_not_hide_later_posts(case: str) -> None:
    name, add_bogus = SKIPPED_BOGUS[case]
    spec = SPECS_BY_NAME[name]
    with spec.make_fake() as fake:
        first = spec.add(fake, "sync broke again after the update", _now(5))
        add_bogus(fake)
        ctx = _ctx(spec, fake)
        got, rejected, cursor = _fetch(spec, ctx, None)
        later = spec.add(fake, "how much is the team plan for 12 seats?", _now(1))
        again, _, _ = _fetch(spec, ctx, cursor)
    assert [m.external_id for m in got] == [first] and rejected == []
    assert [m.external_id for m in again] == [later]


def _masto_id(when: datetime, sequence: int = 1) -> str:
    """A Mastodon status id made at ``when``: milliseconds since the epoch << 16, plus sequence."""
    return str((int(when.timestamp() * 1000) << 16) | sequence)


def _masto_post(fake: FakeMastodon, sid: str, created: datetime) -> str:
    account = {"acct": "ana@example.social", "username": "ana"}
    content = "<p>sync keeps failing on android 14 #nimbusnotes</p>"
    created_at = created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    fake.add_raw({"id": sid, "created_at": created_at, "content": content, "account": account})
    return sid


def _forum_post(fake: FakeDiscourse, pid: int, created: datetime) -> str:
    fake.add_raw(
        {
            "id": pid,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "raw": "sync keeps failing on android 14",
            "username": "member",
            "post_type": 1,
            "topic_id": 77,
            "post_number": 9,
        }
    )
    return str(pid)


def _mention_with_id(fake: FakeMastodon, nid: str) -> str:
    fake.add("are you the nimbus notes people?", _now(5), mention=True)
    fake.notifications[-1]["id"] = nid
    return nid


# A post that reads well (a good date, text) but whose id cannot be real: as the highest id it
# became since_id or last_id, and every later post sat below it, never fetched. Per case: the
# connector, how to add it (returning its id), and the start of the quarantine reason.
READABLE_BOGUS_IDS: dict[str, tuple[str, Callable[[Any], str], str]] = {
    "mastodon-25-digits": (
        "mastodon",
        lambda f: _masto_post(f, "9" * 25, _now(5)),
        "status id is dated after the fetch",
    ),
    "mastodon-a-month-ahead": (
        "mastodon",
        lambda f: _masto_post(f, _masto_id(_now(-30 * 24 * 60)), _now(5)),
        "status id is dated after the fetch",
    ),
    "mastodon-mention": (
        "mastodon",
        lambda f: _mention_with_id(f, "9" * 19),
        "notification id is dated after the fetch",
    ),
    "discourse-10^12": (
        "discourse",
        lambda f: _forum_post(f, 10**12, _now(5)),
        "post id is beyond a Discourse post id",
    ),
    "discourse-2*10^9": (
        "discourse",
        lambda f: _forum_post(f, 2 * 10**9, _now(5)),
        "post id is far beyond the forum's others",
    ),
}


@pytest.mark.parametrize("case", sorted(READABLE_BOGUS_IDS))
def test_a_readable_post_with_an_id_that_cannot_be_real_does_not_hide_later_posts(
    case: str,
) -> None:
    name, add_bogus, reason = READABLE_BOGUS_IDS[case]
    spec = SPECS_BY_NAME[name]
    with spec.make_fake() as fake:
        older = spec.add(fake, "sync broke again after the update", _now(6))
        bogus = add_bogus(fake)
        newer = spec.add(fake, "export to PDF loses images", _now(4))
        ctx = _ctx(spec, fake)
        got, rejected, cursor = _fetch(spec, ctx, None)
        later = spec.add(fake, "how much is the team plan for 12 seats?", _now(1))
        again, rejected_again, _ = _fetch(spec, ctx, cursor)
    # Quarantined with the reason, like a record that cannot be read; the posts around it are
    # stored, the cursor stays at the newest of them, and the next run finds the later post.
    assert sorted(m.external_id for m in got) == sorted([older, newer])
    assert [(r.reason.split(":")[0], r.external_id) for r in rejected] == [(reason, bogus)]
    assert newer in json.dumps(cursor) and bogus not in json.dumps(cursor)
    assert [m.external_id for m in again] == [later]
    assert [r.reason for r in rejected_again] == [r.reason for r in rejected]


# README, discourse: an id more than twice the highest other id known plus a million is refused.
JUMP = 1_000_000
# The highest id each rule lets through, after genuine posts: (connector, the posts before it
# as a setup that returns their ids, how to add the top post with the id at the edge (False) or
# the first one past it (True), returning its id).
EDGE_IDS: dict[str, tuple[str, Callable[[Any], list[str]], Callable[[Any, bool], str]]] = {
    # A status dated 23 hours ahead (a server clock that runs ahead) has an id as far ahead; 25
    # hours is past the day allowed. A sequential id (a status from before Mastodon 2.0) reads
    # as a time in 1970.
    "mastodon-a-day-ahead": (
        "mastodon",
        lambda f: [f.add("an older post", _now(10)), _masto_post(f, "12345", _now(9))],
        lambda f, past: (
            _masto_post(f, _masto_id(_now(-25 * 60)), _now(2))
            if past
            else f.add("a post from a clock that runs ahead", _now(-23 * 60))
        ),
    ),
    # A new forum numbers its posts from 1; a million ahead of post 3 is still let through.
    "discourse-new-forum": (
        "discourse",
        lambda f: [_forum_post(f, i, _now(10 - i)) for i in (1, 2, 3)],
        lambda f, past: _forum_post(f, 2 * 3 + JUMP + past, _now(2)),
    ),
    # A busy forum, with ids in the millions.
    "discourse-busy-forum": (
        "discourse",
        lambda f: [_forum_post(f, 3_000_000 + i, _now(10 - i)) for i in (1, 2, 3)],
        lambda f, past: _forum_post(f, 2 * 3_000_003 + JUMP + past, _now(2)),
    ),
    # The posts.id column's largest value, after its neighbours.
    "discourse-top-of-the-column": (
        "discourse",
        lambda f: [_forum_post(f, 2**31 - 5 + i, _now(10 - i)) for i in (1, 2, 3)],
        lambda f, past: _forum_post(f, 2**31 - 1 + past, _now(2)),
    ),
}


@pytest.mark.parametrize("case", sorted(EDGE_IDS))
def test_genuine_ids_at_the_edge_of_the_id_rules_are_stored(case: str) -> None:
    name, add_before, add_top = EDGE_IDS[case]
    spec = SPECS_BY_NAME[name]
    runs = []
    for past in (False, True):
        with spec.make_fake() as fake:
            before = add_before(fake)
            top = add_top(fake, past)
            got, rejected, cursor = _fetch(spec, _ctx(spec, fake), None)
        runs.append((before, top, got, rejected, cursor))
    (before, top, got, rejected, cursor), (before2, past, got2, rejected2, cursor2) = runs
    assert sorted(m.external_id for m in got) == sorted([*before, top]) and rejected == []
    assert top in json.dumps(cursor)
    assert sorted(m.external_id for m in got2) == sorted(before2)
    assert [r.external_id for r in rejected2] == [past] and past not in json.dumps(cursor2)


def _ulid(when: datetime, tail: str = "7ZKAXG2QHXRVD1CM") -> str:
    """A ULID made at ``when``: 10 characters of Crockford base32 milliseconds, then 16 more."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    ms, head = int(when.timestamp() * 1000), ""
    for _ in range(10):
        ms, digit = divmod(ms, 32)
        head = alphabet[digit] + head
    return head + tail


def test_mastodon_ulid_ids_are_checked_by_the_time_they_encode() -> None:
    # GoToSocial serves the same API with ULIDs (first 10 characters: a 48-bit ms timestamp);
    # they cannot go through the fake, which orders ids as numbers, so the page is read here.
    ahead = {
        "23 hours ahead": (_ulid(_now(-23 * 60)), None),
        "lowercase, 2021": (_ulid(datetime(2021, 5, 1, tzinfo=UTC)).lower(), None),
        "25 hours ahead": (_ulid(_now(-25 * 60)), "status id is dated after the fetch"),
        "the highest ULID": ("7" + "Z" * 25, "status id is dated after the fetch"),
        # Not a ULID (an I, an L, an O), nor a number: an id form left unchecked, like
        # Pleroma's and Akkoma's flake ids.
        "26, not Crockford": ("ZZZZZZZZZZZZZZZZZZZZZZZZIL", None),
        "Pleroma flake id": ("AdFo9rHpXwKs3ZqYyq", None),
    }
    page = [{"id": sid, "content": "<p>hi</p>"} for sid, _ in ahead.values()]
    entries = mastodon_mod._entries(False)(page)
    got = {
        case: (e.doubt or ":").split(":")[0] or None for case, e in zip(ahead, entries, strict=True)
    }
    assert got == {case: reason for case, (_, reason) in ahead.items()}


def test_mastodon_a_server_whose_ids_all_read_ahead_is_read_as_it_is() -> None:
    # Pixelfed serves the same API, but its numeric ids read as times centuries ahead under
    # Mastodon's layout: judged by it, every post of such a server would be quarantined.
    spec = SPECS_BY_NAME["mastodon"]
    with spec.make_fake() as fake:
        posted = [_masto_post(fake, str(7 * 10**20 + n), _now(5 - n)) for n in range(3)]
        got, rejected, cursor = _fetch(spec, _ctx(spec, fake), None)
        later = _masto_post(fake, str(7 * 10**20 + 9), _now(1))
        again, _, _ = _fetch(spec, _ctx(spec, fake), cursor)
    assert sorted(m.external_id for m in got) == sorted(posted) and rejected == []
    assert [m.external_id for m in again] == [later]


def test_slack_a_join_after_the_last_post_still_moves_the_cursor() -> None:
    # A skipped message with a valid ts counts: a channel where only bots and joins follow the
    # last human post is not fetched again from that post on every run.
    spec = SPECS_BY_NAME["slack_community"]
    with CommunitySlackServer() as fake:
        human = fake.add("is there an education discount for nimbus?", _now(3))
        join = fake.state.add("joined #community", _now(2), subtype="channel_join")
        bot = fake.state.add("Deploy finished", _now(1), bot_id="B1", subtype="bot_message")
        got, _, cursor = _fetch(spec, _ctx(spec, fake), None)
    assert [m.external_id for m in got] == [human] and join < bot
    assert cursor == {"C0COMMUNITY": {"ts": bot.split(":", 1)[1]}}


@pytest.mark.parametrize("name", ["mastodon", "discourse"])
def test_a_broken_record_with_a_low_id_does_not_steer_paging(name: str) -> None:
    # The lowest id of every entry, quarantined ones included, set the next max_id/before: a
    # broken record with an out-of-order low id on the first page jumped past the posts in
    # between, and the cursor then moved to the newest post: they were lost for good.
    spec = SPECS_BY_NAME[name]
    with spec.make_fake() as fake:
        posts = 10 if name == "mastodon" else 60  # more than one page (Discourse's hold 50)
        ids = [spec.add(fake, f"post {i}", _now(90 - i)) for i in range(posts)]
        low = "5" if name == "mastodon" else 5
        broken: dict[str, Any] = {
            "id": low,
            "created_at": "last tuesday",
            "content": "<p>x</p>",
            "account": {},
        }
        bound = "max_id" if name == "mastodon" else "before"

        def first_page_carries_it(req: Request, body: Any) -> Any:
            if req.arg(bound):
                return body
            if isinstance(body, list):
                return [*body, broken]
            return {**body, "latest_posts": [*body["latest_posts"], {**broken, "post_type": 1}]}

        _tamper(fake, first_page_carries_it)
        page: dict[str, Any] = {"page_size": 3, "mentions": False} if name == "mastodon" else {}
        got, rejected, cursor = _fetch(spec, _ctx(spec, fake, **page), None)
    assert sorted(m.external_id for m in got) == sorted(ids)
    assert [r.external_id for r in rejected] == ["5"]
    position = cursor if name == "discourse" else next(iter(cursor.values()))
    assert str(next(iter(position.values()))) == max(ids, key=int)


def _run(spec: Spec, ctx: SourceContext, cursor: Any) -> tuple[list[str], list[str], Any]:
    ids: list[str] = []
    notes: list[str] = []
    for batch in spec.module.fetch(ctx, cursor):
        ids += [m.external_id for m in batch.mentions]
        notes += batch.notes
        cursor = batch.cursor
    return ids, notes, cursor


def test_max_pages_says_when_a_stream_was_cut_short() -> None:
    # Paged by page number (or token), what lies beyond max_pages cannot be read on later; the
    # run used to look complete. It now says so, and how to avoid it.
    spec = SPECS_BY_NAME["hackernews"]
    with FakeHackerNews() as fake:
        for i in range(25):
            spec.add(fake, f"post {i}", _now(30 - i))
        ids, notes, _ = _run(spec, _ctx(spec, fake, max_pages=2), None)
        full, quiet, _ = _run(spec, _ctx(spec, fake, max_pages=3), None)
    assert len(ids) == 20 and len(full) == 25 and quiet == []
    (note,) = notes
    assert "stopped at max_pages after 2 page(s)" in note and "raise max_pages" in note
    assert "not fetched" in note


@pytest.mark.parametrize("name", ["mastodon", "discourse"])
def test_a_stream_paged_by_id_reads_on_from_where_max_pages_stopped(name: str) -> None:
    # Paged by id, the gap below the last page read is bounded by ids: the stored id stays, the
    # next run reads the gap first, and only then moves the cursor to the newest post.
    spec = SPECS_BY_NAME[name]
    with spec.make_fake() as fake:
        old = spec.add(fake, "an older post", _now(300))
        ctx = _ctx(spec, fake, backfill_days=1)
        _, _, cursor = _run(spec, ctx, None)
        posts = 130 if name == "discourse" else 25  # Discourse pages hold 50 posts
        ids = [spec.add(fake, f"post {i}", _now(200 - i)) for i in range(posts)]
        limited = _ctx(spec, fake, backfill_days=1, max_pages=2, mentions=False)
        first, notes, cursor = _run(spec, limited, cursor)
        late = spec.add(fake, "posted while the gap was read", _now(1))
        second, quiet, cursor = _run(spec, limited, cursor)
        third, _, cursor = _run(spec, limited, cursor)
        fourth, _, _ = _run(spec, limited, cursor)
    assert len(first) == 2 * spec.page and len(notes) == 1 and "reads on" in notes[0]
    assert sorted(first + second) == sorted(ids) and quiet == []
    assert third == [late] and fourth == [] and old not in first + second + third


@pytest.mark.parametrize("name", ["hackernews", "mastodon"])
def test_an_answer_that_lies_about_its_encoding_fails_the_source_by_name(name: str) -> None:
    # Content-Encoding: gzip on a body that is not gzip raised httpx.DecodingError, unnamed.
    spec = SPECS_BY_NAME[name]
    batches: list[Any] = []
    with spec.make_fake() as fake:
        spec.add(fake, "a perfectly fine post", _now(3))
        _tamper(fake, headers={"Content-Encoding": "gzip"})
        match = rf"source 'my-{name}': GET .*the answer cannot be read \(DecodingError"
        with pytest.raises(ConnectorError, match=match):
            batches.extend(spec.module.fetch(_ctx(spec, fake), {"stored": "cursor"}))
    assert batches == []  # nothing stored, the cursor stays
