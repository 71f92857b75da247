"""Mastodon: hashtag timelines and the account's mentions on one instance (REST API v1).

Mastodon.py is well kept and accepts ``api_base_url``, but it converts every date inside a page and
fails the whole page on one bad value (we quarantine that one record instead), and it does not
retry 5xx answers; the three GET endpoints we need are simple over httpx.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from connectors import paging
from connectors import social_api as sa
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

SETTINGS = {
    "base_url": "the instance, e.g. https://mastodon.social (required)",
    "hashtags": "hashtags to follow (list, without #)",
    "mentions": "true: also read the account's mention notifications (needs a token)",
    "page_size": "statuses per page (max 40; notifications up to 80; default 40)",
    "token_env": "env var of the access token (default MASTODON_ACCESS_TOKEN)",
    **sa.COMMON_SETTINGS,
}

AUTH_HINT = (
    "the instance refused the access token (MASTODON_ACCESS_TOKEN): create one under "
    "Preferences > Development with read:statuses and read:notifications"
)


def _id_key(value: str) -> tuple[int, str]:
    # Mastodon ids are numeric strings that grow with time; compare them as numbers.
    return (len(value), value)


def _api(ctx: SourceContext, need_token: bool) -> sa.Api:
    ctx.require("base_url")
    headers: dict[str, str] = {}
    if need_token or ctx.credential("token_env", "MASTODON_ACCESS_TOKEN"):
        token = ctx.require_credential("token_env", "MASTODON_ACCESS_TOKEN")
        headers["Authorization"] = f"Bearer {token}"
    return sa.Api(ctx, "", headers=headers, auth_hint=AUTH_HINT)


def _streams(ctx: SourceContext) -> list[tuple[str, str, dict[str, Any], int]]:
    size = sa.int_setting(ctx, "page_size", 40, high=80)
    streams: list[tuple[str, str, dict[str, Any], int]] = [
        (f"tag:{t.lstrip('#')}", f"/api/v1/timelines/tag/{quote(t.lstrip('#'), safe='')}", {}, 40)
        for t in sa.as_list(ctx, "hashtags")
    ]
    if ctx.settings.get("mentions"):
        streams.append(("mentions", "/api/v1/notifications", {"types[]": "mention"}, 80))
    if not streams:
        raise ConnectorError(f"source '{ctx.name}': set 'hashtags' and/or 'mentions: true'")
    return [(key, path, params, min(size, cap)) for key, path, params, cap in streams]


@record_parser
def _status(ctx: SourceContext, status: Any, fetched_at: datetime) -> Mention:
    if not isinstance(status, dict):
        raise InvalidRecord("status is missing or not an object")
    ext = status.get("id")
    if not ext:
        raise InvalidRecord("status has no id")
    created = parse_timestamp(status.get("created_at"))
    body = sa.strip_html(status.get("content"))
    warning = status.get("spoiler_text")
    # A content warning is part of what the author said (often the topic itself).
    text = f"{warning}\n\n{body}" if warning and isinstance(body, str) else body
    account = sa.obj(status.get("account"))
    followers = account.get("followers_count")
    return Mention(
        source=ctx.name,
        external_id=str(ext),
        text=clean_text(text),
        created_at=created,
        url=status.get("url") or status.get("uri"),
        author=Author(
            handle=account.get("acct"),
            name=account.get("display_name") or account.get("username"),
            url=account.get("url"),
            followers=followers if isinstance(followers, int) else None,
        ),
        fetched_at=fetched_at,
        in_reply_to=status.get("in_reply_to_id"),
        language=status.get("language"),
        source_type=str(ctx.settings.get("source_type") or "mastodon_post"),
        raw=status,
    )


def check(ctx: SourceContext) -> str:
    """Read the instance's description and, when a token is needed, verify it."""
    need_token = bool(ctx.settings.get("mentions"))
    streams = _streams(ctx)
    with _api(ctx, need_token) as api:
        instance = api.json("GET", "/api/v1/instance")
        who = ""
        if "Authorization" in api.client.headers:
            me = api.json("GET", "/api/v1/accounts/verify_credentials")
            who = f" as @{me.get('acct')}" if isinstance(me, dict) else ""
    title = instance.get("title") if isinstance(instance, dict) else None
    return f"instance '{title or ctx.settings['base_url']}' reachable{who}; {len(streams)} streams"


def _entries(mentions: bool, since: str | None = None) -> Callable[[Any], list[paging.Entry]]:
    kind = "notification" if mentions else "status"
    # A stored position that itself reads as a time ahead was a genuine id of this server (it was
    # checked when it was read): the server lays its ids out another way.
    other_layout = since is not None and _doubt(since, kind, datetime.now(UTC)) is not None

    def entries(page: Any) -> list[paging.Entry]:
        if not isinstance(page, list):
            raise paging.BadAnswer("the answer is not a list")
        fetched = datetime.now(UTC)
        out = []
        for entry in page:
            eid = str(entry["id"]) if isinstance(entry, dict) and entry.get("id") else None
            # A mention notification wraps its status; its own id is the stream's position.
            status = entry.get("status") if mentions and eid else entry
            doubt = _doubt(eid, kind, fetched)
            out.append(paging.Entry(status, id=eid, raw=entry, doubt=doubt))
        timed = [e for e in out if e.id is not None and _id_order(e.id) and _id_ms(e.id) is not None]
        if other_layout or (len(timed) > 1 and all(e.doubt for e in timed)):
            # Several ids of the page, or the stored one, read as times ahead: this server lays
            # its ids out another way (Pixelfed's read as centuries ahead), and Mastodon's layout
            # says nothing about them. One id ahead among ids that read true is the one refused.
            for e in timed:
                e.doubt = None
        return out

    return entries


# Mastodon ids are decimal; Pleroma, Akkoma and GoToSocial, which serve the same API, use
# base62 flake ids or ULIDs. Anything else (a lone surrogate, a 5,000-character id) is not an id to
# order by nor to send back as max_id or since_id: it could not even be encoded into the URL.
_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def _id_order(value: Any) -> tuple[int, str] | None:
    return _id_key(value) if isinstance(value, str) and _ID.fullmatch(value) else None


# Ids are positions, so one that cannot be real must not become since_id: a status id that
# encodes a time after the fetch would put every later post below it. A day covers a server clock
# that runs ahead, as it does for dates (README, "Records").
_AHEAD = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_DIGITS = re.compile(r"[0-9]+")
# GoToSocial's ids are ULIDs: 26 characters of Crockford's base32 (no I, L, O or U), the first
# 10 of them a 48-bit count of milliseconds since the epoch (github.com/ulid/spec).
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}", re.IGNORECASE)


def _id_ms(value: str) -> int | None:
    """The creation time an id encodes, in ms since the epoch; None for a form that has none."""
    if _DIGITS.fullmatch(value):
        # Mastodon (since 2.0): milliseconds since the epoch shifted left 16 bits, plus 16 bits
        # of sequence (lib/mastodon/snowflake.rb); the server takes its own clock, or a past
        # created_at, never a future one. Sequential ids (statuses from before 2.0, notifications,
        # Pleroma's oldest objects) read as times in 1970 and pass.
        return int(value) >> 16
    if _ULID.fullmatch(value):
        ms = 0
        for char in value[:10].upper():
            ms = ms * 32 + _CROCKFORD.index(char)
        return ms
    # Pleroma's and Akkoma's flake ids (base62 of a 128-bit flake whose top 64 bits are
    # milliseconds) are left unchecked: a base62 id of 18 characters is not known to be one.
    return None


def _doubt(place: str | None, kind: str, fetched: datetime) -> str | None:
    """Why ``place`` cannot be a real id of this instance, or None when it may be."""
    if place is None or _id_order(place) is None:
        return None  # not a position at all: nothing orders by it or sends it back
    ms = _id_ms(place)
    # Not compared with the post's created_at: Mastodon gives a post it stores with
    # override_timestamps the id of that moment, so a genuine id may be far later than its post's
    # date, though never later than the server's clock.
    if ms is None or ms <= _ms(fetched + _AHEAD):
        return None
    when = "a time after the year 9999"
    if ms <= _MAX_MS:
        when = f"{_EPOCH + timedelta(milliseconds=ms):%Y-%m-%d %H:%M} UTC"
    return f"{kind} id is dated after the fetch: {place[:40]!r} encodes {when}"


def _ms(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(milliseconds=1)


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield statuses newer than each stream's stored ``since_id``, newest first.

    Args:
        ctx: The configured source.
        cursor: ``{stream: {"since_id": str}}`` or None (first run: ``backfill_days`` back).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one.
    """
    state = cursor if isinstance(cursor, dict) else {}
    start = sa.backfill_start(ctx)
    streams = []
    for key, path, params, size in _streams(ctx):
        since = (state.get(key) or {}).get("since_id")
        query: dict[str, Any] = {**params, "limit": size}
        if since:
            query["since_id"] = since
        mark = paging.HighestId("since_id", since or None, _id_order, start=start)
        pager = paging.BeforeLowest("max_id", _id_order)
        parse = _entries(key == "mentions", since or None)
        streams.append(paging.Stream(key, path, query, mark, pager, parse))
    with _api(ctx, bool(ctx.settings.get("mentions"))) as api:
        yield from paging.paginate(
            ctx, cursor, streams, api.get, lambda e, at: _status(ctx, e.record, at)
        )
