"""Hacker News stories and comments that match keywords, through the public Algolia HN search API.

There is no official HN client library worth the name for search; the API is plain JSON over
HTTPS without credentials, so httpx (through ``connectors.social_api``) is all it takes.
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

DEFAULT_BASE = "https://hn.algolia.com/api/v1"
ITEM_URL = "https://news.ycombinator.com/item?id="
USER_URL = "https://news.ycombinator.com/user?id="

SETTINGS = {
    "query": "keywords to search (required), e.g. your product's name",
    "tags": "Algolia tags filter (default: (story,comment))",
    "page_size": "hits per page (default 100, max 1000)",
    "base_url": f"API base URL (default {DEFAULT_BASE})",
    **sa.COMMON_SETTINGS,
}


@record_parser
def _hit(ctx: SourceContext, hit: Any, fetched_at: datetime) -> Mention:
    if not isinstance(hit, dict):
        raise InvalidRecord(f"hit is a {type(hit).__name__}, not an object")
    ext = hit.get("objectID")
    if not ext:
        raise InvalidRecord("hit has no objectID")
    created = parse_timestamp(hit.get("created_at_i", hit.get("created_at")))
    if hit.get("comment_text"):
        text = sa.strip_html(hit["comment_text"])
        kind = "comment"
    else:
        # A story's words are its title plus, for Ask/Show HN, its body.
        parts = [hit.get("title"), sa.strip_html(hit.get("story_text"))]
        text = "\n\n".join(p for p in parts if isinstance(p, str) and p.strip()) or None
        kind = "story"
    author = hit.get("author")
    parent = hit.get("parent_id")
    story = hit.get("story_id")
    return Mention(
        source=ctx.name,
        external_id=str(ext),
        text=clean_text(text),
        created_at=created,
        url=f"{ITEM_URL}{ext}",
        author=Author(
            handle=str(author) if author else None,
            name=str(author) if author else None,
            url=f"{USER_URL}{author}" if author else None,
        ),
        fetched_at=fetched_at,
        thread=str(story) if story else str(ext),
        in_reply_to=str(parent) if parent and kind == "comment" else None,
        source_type=str(ctx.settings.get("source_type") or f"hackernews_{kind}"),
        raw=hit,
    )


def check(ctx: SourceContext) -> str:
    """Run the configured search once and report how many hits it has."""
    query = str(ctx.require("query"))
    with sa.Api(ctx, DEFAULT_BASE) as api:
        data = api.json("GET", "/search_by_date", params={"query": query, "hitsPerPage": 1})
    if not isinstance(data, dict) or "nbHits" not in data:
        raise ConnectorError(f"source '{ctx.name}': unexpected answer from the search API")
    return f"search '{query}' reachable: {data['nbHits']} hits in total"


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield hits newer than the stored watermark, newest first, page by page.

    Args:
        ctx: The configured source.
        cursor: ``{"since": iso, "ids": [...]}`` or None (first run: ``backfill_days`` back).

    Yields:
        One batch per page with the old cursor, then an empty batch carrying the new cursor.
    """
    query = str(ctx.require("query"))
    mark = paging.Watermark.load(cursor, sa.backfill_start(ctx))
    page_size = sa.int_setting(ctx, "page_size", 100, high=1000)
    # created_at_i is whole seconds; >= keeps same-second hits, the watermark drops repeats.
    params: dict[str, Any] = {
        "query": query,
        "tags": str(ctx.settings.get("tags") or "(story,comment)"),
        "numericFilters": f"created_at_i>={int(mark.since.timestamp())}",
        "hitsPerPage": page_size,
        "page": 0,
    }
    stream = paging.Stream(
        None,
        "/search_by_date",
        params,
        mark,
        paging.PageNumber(),
        paging.listed("hits", "objectID"),
    )
    with sa.Api(ctx, DEFAULT_BASE) as api:
        yield from paging.paginate(
            ctx, cursor, [stream], api.get, lambda e, at: _hit(ctx, e.record, at)
        )
