"""RSS and Atom feeds (blog comment feeds, forum feeds, review feeds), parsed with feedparser.

feedparser is the long-standing, well-kept parser for both formats and for the many broken feeds
out there; httpx does the fetching so that timeouts, conditional GET and Retry-After are ours.
"""

from __future__ import annotations

import calendar
import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
import httpx

from connectors import http
from connectors.base import ConnectorError, FetchBatch, SourceContext
from triage.models import Author, InvalidRecord, Mention, Rejected, clean_text

SETTINGS = {
    "url": "feed URL (http/https) or a local file path relative to the config file (required)",
    "backfill_days": "on the first run, skip entries older than this many days (default: keep all)",
    "source_type": "source_type of the entries (default: blog_comment)",
    "timeout": "HTTP timeout in seconds (default 20)",
}

_TAG = re.compile(r"<[^>]+>")


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _download(ctx: SourceContext, cursor: dict[str, Any]) -> tuple[bytes | None, dict[str, Any]]:
    url = str(ctx.require("url"))
    if not _is_remote(url):
        path = ctx.path("url")
        if not path.exists():
            raise ConnectorError(f"source '{ctx.name}': feed file {path} does not exist")
        return path.read_bytes(), {}
    headers = {"User-Agent": http.USER_AGENT}
    # Conditional GET: an unchanged feed costs the publisher (and us) a 304 and no body.
    if cursor.get("etag"):
        headers["If-None-Match"] = cursor["etag"]
    if cursor.get("last_modified"):
        headers["If-Modified-Since"] = cursor["last_modified"]
    timeout = float(ctx.settings.get("timeout", 20))
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        resp = http.request(client, "GET", url, headers=headers)
    if resp.status_code == 304:
        return None, {}
    if resp.status_code >= 400:
        raise ConnectorError(f"source '{ctx.name}': GET {url} returned HTTP {resp.status_code}")
    validators = {
        "etag": resp.headers.get("etag"),
        "last_modified": resp.headers.get("last-modified"),
    }
    return resp.content, validators


def check(ctx: SourceContext) -> str:
    """Fetch and parse the feed once; report its title and entry count."""
    body, _ = _download(ctx, {})
    parsed = feedparser.parse(body or b"")
    if parsed.bozo and not parsed.entries:
        raise ConnectorError(f"source '{ctx.name}': not a feed ({parsed.bozo_exception})")
    title = parsed.feed.get("title", "untitled feed")
    return f"'{title}': {len(parsed.entries)} entries"


def _entry_time(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
    return None


def _entry_text(entry: Any) -> Any:
    content = entry.get("content")
    value = content[0].get("value") if content else entry.get("summary")
    if not isinstance(value, str):
        return value
    # feedparser already sanitised the HTML; we keep words, not markup.
    return html.unescape(_TAG.sub(" ", value)).strip()


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Fetch the feed and yield entries newer than the stored watermark.

    Args:
        ctx: The configured source.
        cursor: ``{"watermark": iso, "etag": ..., "last_modified": ...}`` or None.

    Yields:
        One batch (feeds are small) with the advanced cursor.
    """
    state: dict[str, Any] = dict(cursor or {})
    body, validators = _download(ctx, state)
    if body is None:
        return
    parsed = feedparser.parse(body)
    if parsed.bozo and not parsed.entries:
        raise ConnectorError(f"source '{ctx.name}': could not parse feed: {parsed.bozo_exception}")
    watermark = datetime.fromisoformat(state["watermark"]) if state.get("watermark") else None
    if watermark is None and ctx.settings.get("backfill_days"):
        watermark = datetime.now(UTC) - timedelta(days=float(ctx.settings["backfill_days"]))
    fetched_at = datetime.now(UTC)
    default_type = str(ctx.settings.get("source_type", "blog_comment"))
    batch = FetchBatch()
    newest = watermark
    for entry in parsed.entries:
        created = _entry_time(entry)
        # Entries at exactly the watermark are re-read; stable ids make that harmless.
        if created is not None and watermark is not None and created < watermark:
            continue
        ext = entry.get("id") or entry.get("link")
        raw = {k: entry.get(k) for k in ("id", "title", "link", "author", "published", "updated")}
        try:
            if not ext:
                raise InvalidRecord("entry has no id and no link")
            if created is None:
                raise InvalidRecord("entry has no published or updated date")
            text = clean_text(_entry_text(entry))
        except InvalidRecord as exc:
            batch.rejected.append(
                Rejected(source=ctx.name, reason=str(exc), raw=str(raw), external_id=ext)
            )
            continue
        raw["text"] = text
        batch.mentions.append(
            Mention(
                source=ctx.name,
                external_id=str(ext),
                text=text,
                created_at=created,
                url=entry.get("link"),
                author=Author(handle=entry.get("author"), name=entry.get("author")),
                fetched_at=fetched_at,
                thread=(parsed.feed.get("link") or None),
                language=parsed.feed.get("language"),
                source_type=default_type,
                raw=raw,
            )
        )
        if newest is None or created > newest:
            newest = created
    state.update({k: v for k, v in validators.items() if v})
    if newest is not None:
        state["watermark"] = newest.isoformat()
    batch.cursor = state
    yield batch
