"""Reddit: keyword search plus chosen subreddits' new posts and new comments, OAuth app-only.

praw is the standard client, but it raises on 429 instead of honouring ``Retry-After`` within a
bound we choose, retries 5xx only briefly, and its lazy listings hide the ``after`` fullname a
crash-safe cursor needs; the app-only flow is one token request, so httpx it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from connectors import paging
from connectors import social_api as sa
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

DEFAULT_BASE = "https://oauth.reddit.com"
DEFAULT_AUTH = "https://www.reddit.com"
WEB = "https://www.reddit.com"

SETTINGS = {
    "queries": "keywords to search across Reddit (list), e.g. ['nimbus notes']",
    "query": "one keyword search (the same as a one-item queries)",
    "subreddits": "subreddits whose new posts and comments are read (list, without r/)",
    "page_size": "items per page (max 100, default 100)",
    "user_agent": "User-Agent Reddit asks for: '<app>/<version> (by /u/<you>)'",
    "client_id_env": "env var of the app's client id (default REDDIT_CLIENT_ID)",
    "client_secret_env": "env var of the app's secret (default REDDIT_CLIENT_SECRET)",
    "base_url": f"API base URL (default {DEFAULT_BASE})",
    "auth_url": f"token endpoint base URL (default {DEFAULT_AUTH})",
    **sa.COMMON_SETTINGS,
}

AUTH_HINT = (
    "Reddit refused the app credentials: check REDDIT_CLIENT_ID / REDDIT_CLIENT_SECRET "
    "(a 'script' or 'web' app at reddit.com/prefs/apps)"
)


def _user_agent(ctx: SourceContext) -> str:
    return str(ctx.settings.get("user_agent") or "feedback-triage/0.1 (app-only)")


def _token(ctx: SourceContext) -> str:
    client_id = ctx.require_credential("client_id_env", "REDDIT_CLIENT_ID")
    client_secret = ctx.require_credential("client_secret_env", "REDDIT_CLIENT_SECRET")
    with sa.Api(
        ctx,
        DEFAULT_AUTH,
        headers={"User-Agent": _user_agent(ctx)},
        auth_hint=AUTH_HINT,
        base_key="auth_url",
    ) as auth:
        data = auth.json(
            "POST",
            "/api/v1/access_token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret),
        )
    token = data.get("access_token") if isinstance(data, dict) else None
    if not token:
        error = data.get("error") if isinstance(data, dict) else "no access_token"
        raise ConnectorError(f"source '{ctx.name}': token request failed ({error}); {AUTH_HINT}")
    return str(token)


def _api(ctx: SourceContext) -> sa.Api:
    return sa.Api(
        ctx,
        DEFAULT_BASE,
        headers={"Authorization": f"bearer {_token(ctx)}", "User-Agent": _user_agent(ctx)},
        auth_hint=AUTH_HINT,
    )


def _streams(ctx: SourceContext) -> list[tuple[str, str, dict[str, Any]]]:
    streams: list[tuple[str, str, dict[str, Any]]] = []
    for q in sa.as_list(ctx, "queries") + sa.as_list(ctx, "query"):
        streams.append((f"search:{q}", "/search", {"q": q, "sort": "new", "type": "link"}))
    for sub in sa.as_list(ctx, "subreddits"):
        name = quote(sub.removeprefix("r/").strip("/"), safe="")
        streams.append((f"new:{name}", f"/r/{name}/new", {}))
        streams.append((f"comments:{name}", f"/r/{name}/comments", {}))
    if not streams:
        raise ConnectorError(f"source '{ctx.name}': set 'queries' and/or 'subreddits'")
    return streams


@record_parser
def _thing(ctx: SourceContext, child: Any, fetched_at: datetime) -> Mention:
    if not isinstance(child, dict) or not isinstance(child.get("data"), dict):
        raise InvalidRecord("listing child has no data object")
    kind, data = child.get("kind"), child["data"]
    name = data.get("name") or (f"{kind}_{data['id']}" if data.get("id") else None)
    if not name:
        raise InvalidRecord("thing has no id")
    created = parse_timestamp(data.get("created_utc"))
    if kind == "t1":
        text = data.get("body")
        thread, parent = data.get("link_id"), data.get("parent_id")
    elif kind == "t3":
        title, body = data.get("title"), data.get("selftext")
        text = "\n\n".join(p for p in (title, body) if isinstance(p, str) and p.strip()) or None
        thread, parent = name, None
    else:
        raise InvalidRecord(f"unexpected thing kind {kind!r}")
    author = data.get("author")
    permalink = data.get("permalink")
    return Mention(
        source=ctx.name,
        external_id=str(name),
        text=clean_text(text),
        created_at=created,
        url=f"{WEB}{permalink}" if isinstance(permalink, str) else None,
        author=Author(
            handle=author,
            name=author,
            url=f"{WEB}/user/{author}" if author and author != "[deleted]" else None,
        ),
        fetched_at=fetched_at,
        thread=thread,
        in_reply_to=parent,
        source_type=str(
            ctx.settings.get("source_type") or ("reddit_comment" if kind == "t1" else "reddit_post")
        ),
        raw=child,
    )


def check(ctx: SourceContext) -> str:
    """Get a token and read one item of the first configured stream."""
    streams = _streams(ctx)
    _, path, params = streams[0]
    with _api(ctx) as api:
        data = api.json("GET", path, params={**params, "limit": 1, "raw_json": 1})
    if not isinstance(data, dict) or data.get("kind") != "Listing":
        raise ConnectorError(f"source '{ctx.name}': {path} did not answer with a listing")
    return f"token accepted; {len(streams)} streams ({', '.join(s[0] for s in streams)})"


def _children(data: Any) -> list[paging.Entry]:
    listing = data.get("data") if isinstance(data, dict) else None
    children = listing.get("children") if isinstance(listing, dict) else None
    if not isinstance(children, list):
        raise paging.BadAnswer("the answer is not a listing")
    return [paging.Entry(c, id=sa.obj(sa.obj(c).get("data")).get("name")) for c in children]


def _after(data: Any) -> Any:
    return sa.obj(sa.obj(data).get("data")).get("after")


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield new posts and comments of every stream, newest first, until each stream's watermark.

    Args:
        ctx: The configured source.
        cursor: ``{stream: {"since": iso, "ids": [...]}}`` or None (first run: ``backfill_days``).

    Yields:
        One batch per listing page with the old cursor, then an empty batch with the new one.
    """
    state = cursor if isinstance(cursor, dict) else {}
    start = sa.backfill_start(ctx)
    page_size = sa.int_setting(ctx, "page_size", 100, high=100)
    streams = [
        paging.Stream(
            key,
            path,
            {**params, "limit": page_size, "raw_json": 1},
            paging.Watermark.load(state.get(key), start),
            paging.NextToken("after", _after),
            _children,
        )
        for key, path, params in _streams(ctx)
    ]
    with _api(ctx) as api:
        yield from paging.paginate(
            ctx, cursor, streams, api.get, lambda e, at: _thing(ctx, e.record, at)
        )
