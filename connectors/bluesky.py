"""Bluesky post search through the AT Protocol (``app.bsky.feed.searchPosts``).

The ``atproto`` SDK accepts ``base_url`` but pulls in pydantic models for the whole lexicon,
cryptography, websockets and a native CBOR library, and parses each response into lexicon models
(one post that does not fit fails the response); two XRPC calls over httpx keep the install small
and let us quarantine just the odd post.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from connectors import paging
from connectors import social_api as sa
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

DEFAULT_BASE = "https://bsky.social"
SEARCH = "/xrpc/app.bsky.feed.searchPosts"

SETTINGS = {
    "queries": "search terms (list, required), e.g. ['nimbus notes']",
    "query": "one search term (the same as a one-item queries)",
    "handle": "account handle used to sign in, e.g. brand.bsky.social (required)",
    "password_env": "env var of an app password (default BLUESKY_APP_PASSWORD)",
    "lang": "only posts in this language (optional, e.g. en)",
    "page_size": "posts per page (1-100, default 100)",
    "base_url": f"PDS / service URL (default {DEFAULT_BASE})",
    **sa.COMMON_SETTINGS,
}

AUTH_HINT = (
    "Bluesky refused the sign-in: check 'handle' and BLUESKY_APP_PASSWORD "
    "(Settings > Privacy and security > App passwords)"
)


def _session(ctx: SourceContext) -> sa.Api:
    handle = str(ctx.require("handle")).lstrip("@")
    password = ctx.require_credential("password_env", "BLUESKY_APP_PASSWORD")
    api = sa.Api(ctx, DEFAULT_BASE, auth_hint=AUTH_HINT)
    try:
        data = api.json(
            "POST",
            "/xrpc/com.atproto.server.createSession",
            json={"identifier": handle, "password": password},
        )
    except ConnectorError:
        api.close()
        raise
    token = data.get("accessJwt") if isinstance(data, dict) else None
    if not token:
        api.close()
        raise ConnectorError(f"source '{ctx.name}': createSession gave no accessJwt; {AUTH_HINT}")
    api.client.headers["Authorization"] = f"Bearer {token}"
    return api


def _queries(ctx: SourceContext) -> list[str]:
    queries = sa.as_list(ctx, "queries") + sa.as_list(ctx, "query")
    if not queries:
        raise ConnectorError(f"source '{ctx.name}': setting 'queries' is required")
    return queries


@record_parser
def _post(ctx: SourceContext, post: Any, fetched_at: datetime) -> tuple[Mention, datetime]:
    if not isinstance(post, dict):
        raise InvalidRecord(f"post is a {type(post).__name__}, not an object")
    uri = post.get("uri")
    record = post.get("record")
    if not uri or not isinstance(record, dict):
        raise InvalidRecord("post has no uri or no record")
    created = parse_timestamp(record.get("createdAt"))
    indexed = parse_timestamp(post["indexedAt"]) if post.get("indexedAt") else created
    # searchPosts' `since` compares "sortAt", the earlier of the two (createdAt can lie).
    sort_at = min(created, indexed)
    author = sa.obj(post.get("author"))
    handle = author.get("handle")
    reply = sa.obj(record.get("reply"))
    langs = record.get("langs")
    mention = Mention(
        source=ctx.name,
        external_id=str(uri),
        text=clean_text(record.get("text")),
        created_at=created,
        url=(
            f"https://bsky.app/profile/{handle or author.get('did')}/post/{str(uri).rsplit('/', 1)[-1]}"
        ),
        author=Author(
            handle=handle,
            name=author.get("displayName") or handle,
            url=f"https://bsky.app/profile/{handle}" if handle else None,
        ),
        fetched_at=fetched_at,
        thread=(reply.get("root") or {}).get("uri") if reply else None,
        in_reply_to=(reply.get("parent") or {}).get("uri") if reply else None,
        language=langs[0] if isinstance(langs, list) and langs else None,
        source_type=str(ctx.settings.get("source_type") or "bluesky_post"),
        raw=post,
    )
    return mention, sort_at


def check(ctx: SourceContext) -> str:
    """Sign in and run the first search once."""
    queries = _queries(ctx)
    with _session(ctx) as api:
        data = api.json("GET", SEARCH, params={"q": queries[0], "limit": 1})
    if not isinstance(data, dict) or not isinstance(data.get("posts"), list):
        raise ConnectorError(f"source '{ctx.name}': searchPosts gave an unexpected answer")
    return f"signed in as {ctx.settings['handle']}; {len(queries)} searches"


def _cursor(data: Any) -> Any:
    # An empty page ends the search even if it carries a cursor.
    return data.get("cursor") if data.get("posts") else None


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield posts newer than each query's watermark, newest first, following search cursors.

    Args:
        ctx: The configured source.
        cursor: ``{query: {"since": iso, "ids": [...]}}`` or None (first run: ``backfill_days``).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one.
    """
    queries = _queries(ctx)
    state = cursor if isinstance(cursor, dict) else {}
    start = sa.backfill_start(ctx)
    page_size = sa.int_setting(ctx, "page_size", 100, high=100)
    streams = []
    for q in queries:
        mark = paging.Watermark.load(state.get(q), start)
        params: dict[str, Any] = {
            "q": q,
            "sort": "latest",
            "limit": page_size,
            "since": mark.since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if ctx.settings.get("lang"):
            params["lang"] = str(ctx.settings["lang"])
        pager = paging.NextToken("cursor", _cursor)
        streams.append(paging.Stream(q, SEARCH, params, mark, pager, paging.listed("posts", "uri")))
    with _session(ctx) as api:
        # The watermark orders by sortAt, the earlier of createdAt and indexedAt (see _post).
        yield from paging.paginate(
            ctx, cursor, streams, api.get, lambda e, at: _post(ctx, e.record, at)
        )
