"""Discourse: new posts of a community forum, from ``/posts.json`` paged with ``before=<id>``.

There is no maintained official Python client (pydiscourse covers admin calls, not this paging),
and the endpoint is one GET with two headers, so httpx it is.
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


def _posts(data: Any) -> list[Any]:
    # A wrong key or username is a 403 (invalid_access): Api adds AUTH_HINT to that error.
    posts = data.get("latest_posts") if isinstance(data, dict) else None
    if not isinstance(posts, list):
        raise paging.BadAnswer("the answer has no latest_posts")
    return posts


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _entries(data: Any) -> list[paging.Entry]:
    entries = []
    for post in _posts(data):
        pid = _int(sa.obj(post).get("id"))
        # Moderator and "small action" posts are no one's voice. A post_type that is not a number
        # (a list, say) is not one of them: the post is read, and _post quarantines it.
        system = pid is not None and _int(post.get("post_type")) in SYSTEM_POST_TYPES
        # A skipped post moves the cursor only with a valid date, as a read post must have: a
        # bogus one (id 10^12, no date) would otherwise hide every later post.
        vouched = system and _dated(post)
        entries.append(paging.Entry(post, id=pid, skip=system, vouched=vouched))
    return entries


def _dated(post: dict[str, Any]) -> bool:
    try:
        parse_timestamp(post.get("created_at"))
    except InvalidRecord:
        return False
    return True


@record_parser
def _post(ctx: SourceContext, post: dict[str, Any], base: str, fetched_at: datetime) -> Mention:
    if not isinstance(post, dict) or not isinstance(post.get("id"), int):
        raise InvalidRecord("post has no numeric id")
    post_type = post.get("post_type")
    if post_type is not None and not isinstance(post_type, int):
        raise InvalidRecord(f"post_type is {type(post_type).__name__}, not a number")
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
        try:
            posts = _posts(api.get("/posts.json", {}))
        except paging.BadAnswer as exc:
            raise ConnectorError(f"source '{ctx.name}': /posts.json: {exc}") from None
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
    # /posts.json has no "since" filter: posts at or below last_id end the stream.
    mark = paging.HighestId("last_id", last_id, _int, start=sa.backfill_start(ctx))
    pager = paging.BeforeLowest("before", _int)
    stream = paging.Stream(None, "/posts.json", {}, mark, pager, _entries)
    with _api(ctx) as api:
        base = api.base
        yield from paging.paginate(
            ctx, cursor, [stream], api.get, lambda e, at: _post(ctx, e.record, base, at)
        )
