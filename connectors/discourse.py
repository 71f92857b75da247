"""Discourse: new posts of a community forum, from ``/posts.json`` paged with ``before=<id>``.

There is no maintained official Python client (pydiscourse covers admin calls, not this paging),
and the endpoint is one GET with two headers, so httpx it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from connectors import social_api as sa
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

SETTINGS = {
    "base_url": "the forum, e.g. https://community.example.com (required)",
    "api_username": "user the API key acts as (with a key; e.g. system)",
    "key_env": "env var of the API key (default DISCOURSE_API_KEY; public forums need none)",
    **sa.COMMON_SETTINGS,
}

AUTH_HINT = (
    "the forum refused the API key (DISCOURSE_API_KEY) or api_username: create a read-only key "
    "under Admin > API"
)
# post_type 2 and 3 are moderator actions and "small actions" (closed, pinned...): no one's voice.
SYSTEM_POST_TYPES = {2, 3}


def _api(ctx: SourceContext) -> sa.Api:
    ctx.require("base_url")
    headers: dict[str, str] = {}
    key = ctx.credential("key_env", "DISCOURSE_API_KEY")
    if key:
        headers = {"Api-Key": key, "Api-Username": str(ctx.require("api_username"))}
    return sa.Api(ctx, "", headers=headers, auth_hint=AUTH_HINT)


def _get(api: sa.Api, params: dict[str, Any]) -> list[Any]:
    # A wrong key or username is a 403 (invalid_access): Api adds AUTH_HINT to that error.
    data = api.json("GET", "/posts.json", params=params)
    posts = data.get("latest_posts") if isinstance(data, dict) else None
    if not isinstance(posts, list):
        raise ConnectorError(f"source '{api.ctx.name}': /posts.json answer has no latest_posts")
    return posts


@record_parser
def _post(ctx: SourceContext, post: dict[str, Any], base: str, fetched_at: datetime) -> Mention:
    created = parse_timestamp(post.get("created_at"))
    raw_text = post.get("raw")
    text = (
        raw_text
        if isinstance(raw_text, str) and raw_text.strip()
        else sa.strip_html(post.get("cooked"))
    )
    username = post.get("username")
    topic = post.get("topic_id")
    number = post.get("post_number")
    slug = post.get("topic_slug") or "-"
    reply_to = post.get("reply_to_post_number")
    title = post.get("topic_title")
    # The first post of a topic carries its title, which is often half the message.
    if number == 1 and isinstance(title, str) and isinstance(text, str):
        text = f"{title}\n\n{text}"
    return Mention(
        source=ctx.name,
        external_id=str(post["id"]),
        text=clean_text(text),
        created_at=created,
        url=f"{base}/t/{slug}/{topic}/{number}" if topic and number else None,
        author=Author(
            handle=username,
            name=post.get("name") or username,
            url=f"{base}/u/{username}" if username else None,
        ),
        fetched_at=fetched_at,
        thread=str(topic) if topic else None,
        in_reply_to=f"{topic}#{reply_to}" if topic and reply_to else None,
        source_type=str(ctx.settings.get("source_type") or "forum"),
        raw=post,
    )


def check(ctx: SourceContext) -> str:
    """Read the latest posts once."""
    with _api(ctx) as api:
        posts = _get(api, {})
    auth = "with API key" if "Api-Key" in api.client.headers else "anonymously"
    return f"forum reachable {auth}; latest post id {max((p.get('id') or 0 for p in posts), default=0)}"


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield posts with ids above the stored one, newest first, paging with ``before``.

    Args:
        ctx: The configured source.
        cursor: ``{"last_id": int}`` or None (first run: ``backfill_days`` back).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one.
    """
    last_id = cursor.get("last_id") if isinstance(cursor, dict) else None
    start = sa.backfill_start(ctx)
    max_pages = sa.int_setting(ctx, "max_pages", sa.DEFAULT_MAX_PAGES)
    newest = last_id
    params: dict[str, Any] = {}
    with _api(ctx) as api:
        base = api.base
        for _ in range(max_pages):
            posts = _get(api, params)
            batch = FetchBatch(cursor=cursor)
            fetched_at = datetime.now(UTC)
            done = not posts
            ids: list[int] = []
            for post in posts:
                pid = post.get("id") if isinstance(post, dict) else None
                if not isinstance(pid, int):
                    batch.rejected.append(sa.reject(ctx, "post has no numeric id", post))
                    continue
                ids.append(pid)
                if last_id is not None and pid <= last_id:
                    done = True
                    continue
                newest = pid if newest is None or pid > newest else newest
                if post.get("post_type") in SYSTEM_POST_TYPES:
                    continue
                try:
                    mention = _post(ctx, post, base, fetched_at)
                except InvalidRecord as exc:
                    batch.rejected.append(sa.reject(ctx, str(exc), post, pid))
                    continue
                if last_id is None and mention.created_at < start:
                    done = True
                    continue
                batch.mentions.append(mention)
            yield batch
            if done or not ids:
                break
            params = {"before": min(ids)}
    yield FetchBatch(cursor={"last_id": newest} if newest is not None else cursor)
