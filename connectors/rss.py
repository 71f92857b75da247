"""RSS and Atom feeds (blog comment feeds, forum feeds, review feeds), parsed with feedparser.

feedparser is the long-standing, well-kept parser for both formats and for the many broken feeds
out there; httpx does the fetching so that timeouts, conditional GET and Retry-After are ours.
"""

from __future__ import annotations

import calendar
import html
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
import httpx

from connectors import http
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.config import ConfigError
from triage.http import Backoff
from triage.keys import stable_key
from triage.models import (
    Author,
    InvalidRecord,
    Mention,
    clean_text,
    parse_timestamp,
)

SETTINGS = {
    "url": "feed URL (http/https) or a local file path relative to the config file (required)",
    "backfill_days": "on the first run, skip entries older than this many days (default: keep all)",
    "source_type": "source_type of the entries (default: blog_comment)",
    "timeout": "HTTP timeout in seconds (default 20)",
    "max_retries": "retries of 429/5xx/network errors (default 4)",
    "retry_backoff": "first backoff in seconds, doubled per retry (default 0.5)",
}


def validate(name: str, settings: dict[str, Any]) -> None:
    """Check the settings' values at configuration load."""
    if settings.get("url") in (None, ""):
        raise ConfigError(f"source '{name}': setting 'url' is required")
    for key in ("timeout", "retry_backoff", "backfill_days"):
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"source '{name}': {key} must be a number")
    retries = settings.get("max_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        raise ConfigError(f"source '{name}': max_retries must be a whole number")


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
    try:
        timeout = float(ctx.settings.get("timeout", 20))
        retries = max(0, min(20, int(ctx.settings.get("max_retries", 4))))
        backoff = float(ctx.settings.get("retry_backoff", 0.5))
    except (TypeError, ValueError):
        raise ConnectorError(
            f"source '{ctx.name}': timeout, max_retries and retry_backoff must be numbers"
        ) from None
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        try:
            policy = Backoff(retries=retries, first=backoff)
            resp = http.request(client, "GET", url, policy, headers=headers)
        except ConnectorError as exc:
            raise ConnectorError(f"source '{ctx.name}': {exc}") from None
    if resp.status_code == 304:
        return None, {}
    if resp.status_code >= 400:
        raise ConnectorError(f"source '{ctx.name}': GET {url} returned HTTP {resp.status_code}")
    validators = {
        "etag": resp.headers.get("etag"),
        "last_modified": resp.headers.get("last-modified"),
    }
    return resp.content, validators


# A numeric character reference as feedparser's lenient parser reads one (the ";" is optional).
_CHARREF = re.compile(rb"&#(?:[xX]([0-9A-Fa-f]+)|([0-9]+))")
_REPLACEMENT_REF = b"&#xFFFD"


def _charref_fixed(match: re.Match[bytes]) -> bytes:
    hexa, decimal = match.group(1), match.group(2)
    digits = (hexa or decimal).lstrip(b"0") or b"0"
    # Bounded before int(): a reference of thousands of digits names no character either.
    if len(digits) > 8:
        return _REPLACEMENT_REF
    value = int(digits, 16 if hexa else 10)
    if 0xD800 <= value <= 0xDFFF or value > 0x10FFFF:
        return _REPLACEMENT_REF
    return match.group(0)


def _parse(ctx: SourceContext, body: bytes) -> Any:
    """Parse a feed, its references to no Unicode character first turned into U+FFFD.

    feedparser raises on ``&#xD800;`` (a lone surrogate), ``&#x110000;`` or a 20-digit reference
    inside one entry, and the whole feed would be lost on every run while that entry is in it.
    Replaced in the raw bytes, the entry is read with U+FFFD where the reference was, as a lone
    surrogate from an API is stored. (A feed in UTF-16 or UTF-32 is not matched byte-wise; if
    feedparser still fails, the source fails by name, its cursor unchanged.)
    """
    try:
        return feedparser.parse(_CHARREF.sub(_charref_fixed, body))
    except (ValueError, OverflowError, RecursionError) as exc:  # UnicodeError is a ValueError
        raise ConnectorError(
            f"source '{ctx.name}': feedparser cannot read the feed: {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from None


def check(ctx: SourceContext) -> str:
    """Fetch and parse the feed once; report its title and entry count."""
    body, _ = _download(ctx, {})
    parsed = _parse(ctx, body or b"")
    if parsed.bozo and not parsed.entries:
        raise ConnectorError(f"source '{ctx.name}': not a feed ({parsed.bozo_exception})")
    title = parsed.feed.get("title", "untitled feed")
    return f"'{title}': {len(parsed.entries)} entries"


def _entry_time(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: feedparser's own get() maps a missing `updated` to `published` with a warning.
        value = dict.get(entry, key)
        if value:
            # Through parse_timestamp: a date out of range (year 9999) quarantines the entry
            # instead of overflowing or pushing the watermark past every later entry.
            return parse_timestamp(calendar.timegm(value))
    return None


def _entry_text(entry: Any) -> Any:
    content = entry.get("content")
    value = content[0].get("value") if content else entry.get("summary")
    if not isinstance(value, str):
        return value
    # feedparser already sanitised the HTML; we keep words, not markup.
    return html.unescape(_TAG.sub(" ", value)).strip()


_RAW_KEYS = ("id", "title", "link", "author", "published", "updated")


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)[:500]


@record_parser
def _mention(
    ctx: SourceContext, feed: Any, entry: Any, fetched_at: datetime, source_type: str
) -> Mention:
    link = entry.get("link")
    if not (entry.get("id") or link):
        raise InvalidRecord("entry has no id and no link")
    created = _entry_time(entry)
    if created is None:
        raise InvalidRecord("entry has no published or updated date")
    text = clean_text(_entry_text(entry))
    ext = entry.get("id") or _link_id(str(link), entry, text)
    raw = {k: dict.get(entry, k) for k in _RAW_KEYS}
    raw["text"] = text
    return Mention(
        source=ctx.name,
        external_id=str(ext),
        text=text,
        created_at=created,
        url=_opt_str(entry.get("link")),
        author=Author(handle=_opt_str(entry.get("author")), name=_opt_str(entry.get("author"))),
        fetched_at=fetched_at,
        thread=_opt_str(feed.get("link")),
        language=_opt_str(feed.get("language")),
        source_type=source_type,
        raw=raw,
    )


def _link_id(link: str, entry: Any, text: str) -> str:
    """The id of an RSS item without a ``<guid>``: its link, and what tells it from its siblings.

    A comment feed's items often all link to the post they comment on; by the link alone they
    were one item, and every comment after the first was lost without a word.
    """
    parts = (entry.get("published") or entry.get("updated"), entry.get("author"), entry.get("title"))
    return f"{link}#{stable_key(*(str(p or '') for p in parts), text, errors='surrogatepass')}"


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
    parsed = _parse(ctx, body)
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
        try:
            mention = _mention(ctx, parsed.feed, entry, fetched_at, default_type)
        except InvalidRecord as exc:
            raw = {k: dict.get(entry, k) for k in _RAW_KEYS} if isinstance(entry, dict) else entry
            ext = (entry.get("id") or entry.get("link")) if isinstance(entry, dict) else None
            batch.rejected.append(ctx.reject(str(exc), raw, ext))
            continue
        created = mention.created_at
        # Entries at exactly the watermark are re-read; stable ids make that harmless.
        if watermark is not None and created < watermark:
            continue
        batch.mentions.append(mention)
        if newest is None or created > newest:
            newest = created
    state.update({k: v for k, v in validators.items() if v})
    if newest is not None:
        # Never past the moment of the fetch: an entry dated hours ahead (a local time labelled
        # UTC, inside the day that is allowed for clock skew) would otherwise put every entry
        # published before that hour behind the watermark. It is read again until the clock
        # passes it, and its stable id keeps it stored once.
        state["watermark"] = min(newest, fetched_at).isoformat()
    batch.cursor = state
    yield batch


def sample(ctx: SourceContext, limit: int = 1000) -> FetchBatch:
    """Fetch and parse the whole feed (no watermark, no conditional GET), storing nothing.

    ``triage sources check`` uses this to say how many entries would be quarantined and why.
    """
    settings = {k: v for k, v in ctx.settings.items() if k != "backfill_days"}
    batch = next(fetch(replace(ctx, settings=settings), None), FetchBatch())
    batch.mentions = batch.mentions[:limit]
    batch.rejected = batch.rejected[: max(0, limit - len(batch.mentions))]
    return batch
