"""YouTube comment threads on the company's videos or channel (Data API v3, API key).

google-api-python-client is the official client, but it brings the discovery machinery and
google-auth for what is one GET with a key, and its retries cannot honour our bounds; httpx it is.
The key goes in the ``X-Goog-Api-Key`` header rather than the query string, so it never appears
in a URL that an error message or a proxy log could echo.
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

DEFAULT_BASE = "https://www.googleapis.com/youtube/v3"

SETTINGS = {
    "video_ids": "video ids whose comment threads are read (list)",
    "channel_id": "or: a channel id, for threads on all of its videos",
    "page_size": "threads per page (1-100, default 100)",
    "key_env": "env var of the API key (default YOUTUBE_API_KEY)",
    "base_url": f"API base URL (default {DEFAULT_BASE})",
    **sa.COMMON_SETTINGS,
}

AUTH_HINT = (
    "YouTube refused the API key (YOUTUBE_API_KEY): create one in the Google Cloud console with "
    "the YouTube Data API v3 enabled (a 403 can also mean the daily quota is spent)"
)


def _api(ctx: SourceContext) -> sa.Api:
    key = ctx.require_credential("key_env", "YOUTUBE_API_KEY")
    return sa.Api(ctx, DEFAULT_BASE, headers={"X-Goog-Api-Key": key}, auth_hint=AUTH_HINT)


def _streams(ctx: SourceContext) -> list[tuple[str, dict[str, str]]]:
    streams = [(f"video:{v}", {"videoId": v}) for v in sa.as_list(ctx, "video_ids")]
    channel = ctx.settings.get("channel_id")
    if channel:
        streams.append((f"channel:{channel}", {"allThreadsRelatedToChannelId": str(channel)}))
    if not streams:
        raise ConnectorError(f"source '{ctx.name}': set 'video_ids' and/or 'channel_id'")
    return streams


def _get(api: sa.Api, params: dict[str, Any]) -> Any:
    try:
        return api.json("GET", "/commentThreads", params=params)
    except ConnectorError as exc:
        # An invalid key is a 400 with reason keyInvalid, not a 401: say so plainly.
        if "keyInvalid" in str(exc) or "API key not valid" in str(exc):
            raise ConnectorError(f"source '{api.ctx.name}': {AUTH_HINT}") from None
        raise


@record_parser
def _comment(ctx: SourceContext, comment: Any, thread_id: str, fetched_at: datetime) -> Mention:
    if not isinstance(comment, dict) or not isinstance(comment.get("snippet"), dict):
        raise InvalidRecord("comment has no snippet")
    ext = comment.get("id")
    if not ext:
        raise InvalidRecord("comment has no id")
    snip = comment["snippet"]
    created = parse_timestamp(snip.get("publishedAt"))
    # textOriginal is plain but only guaranteed for the author; textDisplay is HTML for everyone.
    text = snip.get("textOriginal") or sa.strip_html(snip.get("textDisplay"))
    video = snip.get("videoId")
    channel = snip.get("authorChannelId")
    return Mention(
        source=ctx.name,
        external_id=str(ext),
        text=clean_text(text),
        created_at=created,
        url=f"https://www.youtube.com/watch?v={video}&lc={ext}" if video else None,
        author=Author(
            handle=(channel or {}).get("value") if isinstance(channel, dict) else None,
            name=snip.get("authorDisplayName"),
            url=snip.get("authorChannelUrl"),
        ),
        fetched_at=fetched_at,
        thread=thread_id,
        in_reply_to=snip.get("parentId"),
        source_type=str(ctx.settings.get("source_type") or "youtube_comment"),
        raw=comment,
    )


def check(ctx: SourceContext) -> str:
    """Read one thread of the first configured stream to prove the key and the ids are good."""
    streams = _streams(ctx)
    with _api(ctx) as api:
        data = _get(api, {"part": "snippet", "maxResults": 1, **streams[0][1]})
    if not isinstance(data, dict) or data.get("kind") != "youtube#commentThreadListResponse":
        raise ConnectorError(f"source '{ctx.name}': commentThreads gave an unexpected answer")
    return f"API key accepted; {len(streams)} streams ({', '.join(s[0] for s in streams)})"


def _threads(data: Any) -> list[paging.Entry]:
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise paging.BadAnswer("the answer has no items")
    entries = []
    for thread in items:
        tid = thread.get("id") if isinstance(thread, dict) else None
        snip = thread.get("snippet") if isinstance(thread, dict) else None
        top = snip.get("topLevelComment") if isinstance(snip, dict) else None
        replies = sa.obj(sa.obj(thread).get("replies")).get("comments") if tid else []
        if not isinstance(replies, list):
            replies = []  # an odd shape: read the top-level comment, do not crash
        for comment in [top, *replies]:
            is_top = comment is top
            entries.append(
                paging.Entry(
                    (comment, str(tid)),
                    id=comment.get("id") if isinstance(comment, dict) else tid,
                    raw=thread if comment is None or is_top else comment,
                    # Threads are ordered by their top comment: an old reply does not end paging.
                    ends=is_top,
                )
            )
    return entries


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield new comments (top-level and the replies included in each thread), newest first.

    Args:
        ctx: The configured source.
        cursor: ``{stream: {"since": iso, "ids": [...]}}`` or None (first run: ``backfill_days``).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one.
    """
    state = cursor if isinstance(cursor, dict) else {}
    start = sa.backfill_start(ctx)
    page_size = sa.int_setting(ctx, "page_size", 100, high=100)
    streams = [
        paging.Stream(
            key,
            "/commentThreads",
            {
                "part": "snippet,replies",
                "order": "time",
                "textFormat": "plainText",
                "maxResults": page_size,
                **ids,
            },
            paging.Watermark.load(state.get(key), start),
            paging.NextToken("pageToken", lambda data: data.get("nextPageToken")),
            _threads,
        )
        for key, ids in _streams(ctx)
    ]
    with _api(ctx) as api:
        yield from paging.paginate(
            ctx,
            cursor,
            streams,
            lambda _, params: _get(api, params),
            lambda e, at: _comment(ctx, e.record[0], e.record[1], at),
        )
