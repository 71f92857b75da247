"""Discourse: new posts of a community forum, from ``/posts.json`` paged with ``before=<id>``.

There is no maintained official Python client (pydiscourse covers admin calls, not this paging),
and the endpoint is one GET with two headers, so httpx it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def _entries_after(last_id: int | None) -> Callable[[Any], list[paging.Entry]]:
    """How to read a page of a stream whose stored position is ``last_id``."""

    def entries(data: Any) -> list[paging.Entry]:
        posts = _posts(data)
        ids = [_int(sa.obj(post).get("id")) for post in posts]
        # Each id is judged against the highest other id the stream knows; only the highest id
        # can be far above that, and its reference is the second highest.
        top = sorted([n for n in (last_id, *ids) if n is not None], reverse=True)[:2]
        second = top[1] if len(top) > 1 else None
        out = []
        for post, pid in zip(posts, ids, strict=True):
            # Moderator and "small action" posts are no one's voice. A post_type that is not a
            # number (a list, say) is not one of them: the post is read, and _post quarantines it.
            system = pid is not None and _int(post.get("post_type")) in SYSTEM_POST_TYPES
            # A skipped post moves the cursor only with a valid date, as a read post must have: a
            # bogus one (id 10^12, no date) would otherwise hide every later post.
            vouched = system and _dated(post)
            doubt = None if pid is None else _doubt(pid, second if pid == top[0] else None)
            out.append(paging.Entry(post, id=pid, skip=system, vouched=vouched, doubt=doubt))
        return out

    return entries


# Post ids cannot be checked against a clock: Discourse numbers posts 1, 2, 3... from one sequence
# in the order they are written. They are bounded twice over instead.
# The posts.id column is a Postgres integer (the schema notes in app/models/post.rb): no post has
# a higher id.
MAX_POST_ID = 2**31 - 1
# /posts.json answers the latest posts, newest first, so the ids of one page lie close together.
# An id above twice the highest other id the stream knows (its stored last_id, the rest of the
# page), plus a million, would need more posts written between two that the page shows than the
# forum had before, and a million more. Posts hidden from the reader (private categories,
# messages, deleted posts) leave gaps far smaller; a new forum (ids in the tens) and a busy one
# (ids in the millions) pass alike, and after a bulk import the page's other posts are as far on.
# Should a genuine post ever be refused so, it is stored once a newer post tops it.
JUMP = 1_000_000


def _doubt(pid: int, known: int | None) -> str | None:
    """Why post id ``pid`` cannot be real, given the highest other id ``known``; else None."""
    if pid > MAX_POST_ID:
        return f"post id is beyond a Discourse post id: {pid} is above {MAX_POST_ID}"
    if known is not None and pid > 2 * known + JUMP:
        # Without ``known`` in it: the quarantine keeps one copy per record and reason, and the
        # record is read again on every run while the forum's ids grow.
        return (
            f"post id is far beyond the forum's others: {pid} is above twice the highest other "
            f"id known plus {JUMP:,}"
        )
    return None


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
    stream = paging.Stream(None, "/posts.json", {}, mark, pager, _entries_after(_int(last_id)))
    with _api(ctx) as api:
        base = api.base
        yield from paging.paginate(
            ctx, cursor, [stream], api.get, lambda e, at: _post(ctx, e.record, base, at)
        )
