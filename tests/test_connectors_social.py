"""Social and community connectors against local fakes of their APIs (random ports, real clients).

Every connector runs the same scenarios through a small per-connector spec: pagination, the stored
cursor (a second fetch returns only new items), 429 then success, 5xx then success, refused
credentials, malformed records to quarantine, oversize text truncated, and ``check()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from connectors import CONNECTORS, ConnectorError, SourceContext
from connectors import hackernews as hackernews_mod
from connectors import reddit as reddit_mod
from connectors import x as x_mod
from tests.fakes.base import FakeApi
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.reddit import FakeReddit
from tests.fakes.x import FakeX
from triage.models import TRUNCATION_MARKER, Mention, Rejected


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
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Credential tests run only for connectors that have credentials (Hacker News has none).
    if "spec" in metafunc.fixturenames:
        specs = SPECS
        if metafunc.function.__name__ in (
            "test_refused_credentials",
            "test_missing_credentials_named",
        ):
            specs = [s for s in SPECS if s.bad_secrets is not None]
        metafunc.parametrize("spec", specs, ids=[s.name for s in specs])


@pytest.fixture
def fake(spec: Spec) -> Iterator[Any]:
    server = spec.make_fake()
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
    total = 2 * spec.page + 3
    ids = {spec.add(fake, f"post number {i}", _now(5 + i)) for i in range(total)}
    # Older than the backfill window: the first run must not reach back this far.
    old = spec.add(fake, "an old post from last month", _now(60 * 24 * 30))
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


def test_oversize_text_is_truncated_not_dropped(spec: Spec, fake: Any) -> None:
    ext = spec.add(fake, "long " + "x" * 30_000, _now(3))
    mentions, _, _ = _fetch(spec, _ctx(spec, fake), None)
    (m,) = [m for m in mentions if m.external_id == ext]
    assert m.text.endswith(TRUNCATION_MARKER) and len(m.text) == 20_000


def test_check_reports_reachability(spec: Spec, fake: Any) -> None:
    spec.add(fake, "post", _now(3))
    message = spec.module.check(_ctx(spec, fake))
    assert isinstance(message, str) and message


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
