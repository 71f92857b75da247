"""Mastodon: hashtag timelines and the account's mentions on one instance (REST API v1).

Mastodon.py is well kept and accepts ``api_base_url``, but it converts every date inside a page and
fails the whole page on one bad value (we quarantine that one record instead), and it does not
retry 5xx answers; the three GET endpoints we need are simple over httpx.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

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


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Yield statuses newer than each stream's stored ``since_id``, newest first.

    Args:
        ctx: The configured source.
        cursor: ``{stream: {"since_id": str}}`` or None (first run: ``backfill_days`` back).

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one.
    """
    streams = _streams(ctx)
    state: dict[str, Any] = dict(cursor) if isinstance(cursor, dict) else {}
    start = sa.backfill_start(ctx)
    max_pages = sa.int_setting(ctx, "max_pages", sa.DEFAULT_MAX_PAGES)
    seen: set[str] = set()
    with _api(ctx, bool(ctx.settings.get("mentions"))) as api:
        for key, path, params, size in streams:
            since = (state.get(key) or {}).get("since_id")
            newest = since
            max_id: str | None = None
            for _ in range(max_pages):
                query: dict[str, Any] = {**params, "limit": size}
                if since:
                    query["since_id"] = since
                if max_id:
                    query["max_id"] = max_id
                page = api.json("GET", path, params=query)
                if not isinstance(page, list):
                    raise ConnectorError(f"source '{ctx.name}': {path} did not answer a list")
                batch = FetchBatch(cursor=cursor)
                fetched_at = datetime.now(UTC)
                past_window = False
                for entry in page:
                    eid = (
                        str(entry.get("id"))
                        if isinstance(entry, dict) and entry.get("id")
                        else None
                    )
                    if eid and (newest is None or _id_key(eid) > _id_key(newest)):
                        newest = eid
                    status = entry.get("status") if key == "mentions" and eid else entry
                    try:
                        mention = _status(ctx, status, fetched_at)
                    except InvalidRecord as exc:
                        batch.rejected.append(sa.reject(ctx, str(exc), entry, eid))
                        continue
                    if since is None and mention.created_at < start:
                        past_window = True
                        continue
                    if mention.external_id not in seen:
                        seen.add(mention.external_id)
                        batch.mentions.append(mention)
                yield batch
                ids = [str(e["id"]) for e in page if isinstance(e, dict) and e.get("id")]
                # An empty page is the end; short pages happen mid-stream when the server filters.
                if past_window or not ids:
                    break
                max_id = min(ids, key=_id_key)
            if newest:
                state[key] = {"since_id": newest}
    yield FetchBatch(cursor=state)
