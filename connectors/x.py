"""X (Twitter) API v2 recent search with an app bearer token.

tweepy is the usual client, but its rate-limit wait sleeps until the 15-minute window resets with
no way to bound it, and ``since_id`` plus ``next_token`` are two query parameters: one endpoint
over httpx is simpler.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors import paging
from connectors import social_api as sa
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

DEFAULT_BASE = "https://api.twitter.com"
SEARCH = "/2/tweets/search/recent"

SETTINGS = {
    "query": "search query in X's query language (required), e.g. '\"nimbus notes\" -is:retweet'",
    "page_size": "max_results per page (10-100, default 100)",
    "token_env": "env var holding the bearer token (default X_BEARER_TOKEN)",
    "base_url": f"API base URL (default {DEFAULT_BASE})",
    **sa.COMMON_SETTINGS,
}

FIELDS = {
    "tweet.fields": "created_at,author_id,conversation_id,lang,referenced_tweets,in_reply_to_user_id",
    "expansions": "author_id",
    "user.fields": "username,name,public_metrics",
}


def _api(ctx: SourceContext) -> sa.Api:
    token = ctx.require_credential("token_env", "X_BEARER_TOKEN")
    return sa.Api(
        ctx,
        DEFAULT_BASE,
        headers={"Authorization": f"Bearer {token}"},
        auth_hint="X refused the bearer token (X_BEARER_TOKEN): create one in the developer portal",
    )


@record_parser
def _tweet(ctx: SourceContext, tweet: Any, users: dict[str, Any], fetched_at: datetime) -> Mention:
    if not isinstance(tweet, dict):
        raise InvalidRecord(f"tweet is a {type(tweet).__name__}, not an object")
    ext = tweet.get("id")
    if not ext:
        raise InvalidRecord("tweet has no id")
    if _digits(ext) is None:
        # Stored, an id that is not an X id would be a key no later run can match or order.
        raise InvalidRecord(f"tweet id is not an X post id: {str(ext)[:40]!r}")
    created = parse_timestamp(tweet.get("created_at"))
    user = users.get(str(tweet.get("author_id"))) or {}
    handle = user.get("username")
    metrics = user.get("public_metrics") or {}
    followers = metrics.get("followers_count")
    replied = next(
        (
            r.get("id")
            for r in tweet.get("referenced_tweets") or []
            if isinstance(r, dict) and r.get("type") == "replied_to"
        ),
        None,
    )
    return Mention(
        source=ctx.name,
        external_id=str(ext),
        text=clean_text(tweet.get("text")),
        created_at=created,
        url=f"https://x.com/{handle or 'i/web'}/status/{ext}",
        author=Author(
            handle=handle,
            name=user.get("name"),
            url=f"https://x.com/{handle}" if handle else None,
            followers=followers if isinstance(followers, int) else None,
        ),
        fetched_at=fetched_at,
        thread=tweet.get("conversation_id"),
        in_reply_to=str(replied) if replied else None,
        language=tweet.get("lang"),
        source_type=str(ctx.settings.get("source_type") or "x_post"),
        raw={"tweet": tweet, "author": user},
    )


def check(ctx: SourceContext) -> str:
    """Run the search once with the smallest page to prove the token and the query are accepted."""
    query = str(ctx.require("query"))
    with _api(ctx) as api:
        data = api.json("GET", SEARCH, params={"query": query, "max_results": 10})
    count = (data.get("meta") or {}).get("result_count") if isinstance(data, dict) else None
    if count is None:
        raise ConnectorError(f"source '{ctx.name}': unexpected answer from recent search")
    return f"token accepted; query '{query}' matches {count} recent posts on the first page"


# Post ids are decimal strings that grow with time, 64-bit snowflakes: at most 19 digits. ASCII
# digits only: str.isdigit() also accepts "²", which int() refuses.
_ID = re.compile(r"[0-9]{1,19}")


def _digits(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return int(text) if _ID.fullmatch(text) else None


def _tweets(data: Any) -> list[paging.Entry]:
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        raise paging.BadAnswer("the answer has no 'meta'")
    tweets = data.get("data") or []
    # Authors are extras: malformed includes cost their handles, not the posts.
    users_list = sa.obj(data.get("includes")).get("users")
    users = {
        str(u.get("id")): u
        for u in (users_list if isinstance(users_list, list) else [])
        if isinstance(u, dict)
    }
    # Every post's id moves the cursor, a rejected one's too: a bad post is not refetched forever.
    entries = []
    for tweet in tweets if isinstance(tweets, list) else [tweets]:
        tid = sa.obj(tweet).get("id")
        position = str(tid) if tid else None
        entries.append(paging.Entry((tweet, users), id=tid, position=position, raw=tweet))
    return entries


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield posts newer than the stored ``since_id``, following ``next_token`` pages.

    Args:
        ctx: The configured source.
        cursor: ``{"since_id": str}`` or None (first run: ``backfill_days`` back, at most the
            7 days recent search covers).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new ``since_id``.
    """
    query = str(ctx.require("query"))
    page_size = sa.int_setting(ctx, "page_size", 100, low=10, high=100)
    since_id = cursor.get("since_id") if isinstance(cursor, dict) else None
    params: dict[str, Any] = {"query": query, "max_results": page_size, **FIELDS}
    if since_id:
        params["since_id"] = since_id
    else:
        # Recent search refuses a start_time older than 7 days; stay a minute inside the window.
        floor = datetime.now(UTC) - timedelta(days=7) + timedelta(minutes=1)
        start = max(sa.backfill_start(ctx), floor)
        params["start_time"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    mark = paging.HighestId("since_id", since_id or None, _digits)
    token = paging.NextToken("next_token", lambda data: data["meta"].get("next_token"))
    stream = paging.Stream(None, SEARCH, params, mark, token, _tweets)
    with _api(ctx) as api:
        yield from paging.paginate(
            ctx, cursor, [stream], api.get, lambda e, at: _tweet(ctx, e.record[0], e.record[1], at)
        )
