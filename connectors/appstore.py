"""App Store reviews: Apple's public customer-reviews feed (JSON) for one app in one country.

There is no maintained client library for this feed (it is a plain JSON document, no auth), so it is
read with httpx through ``connectors.http``, which brings timeouts, Retry-After and backoff.

The feed lists the most recent reviews first, 50 per page, at most 10 pages. The cursor is the
newest review seen (its ``updated`` time and id). Because pages run newest to oldest, the cursor can
only move once every new page has been read: the run yields one batch at the end, so a crash
half-way repeats the pages next time instead of skipping the older ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors import http
from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.records import record_parser
from triage.http import Backoff
from triage.models import Author, InvalidRecord, Mention, clean_text, parse_timestamp

SETTINGS = {
    "app_id": "numeric App Store id of the app, the digits after 'id' in its URL (required)",
    "country": "two-letter store country code (default us)",
    "base_url": "feed base URL (default Apple's public iTunes host; tests point it at a fake)",
    "max_pages": "pages to read, 1-10, 50 reviews each (default 10, Apple's limit)",
    "backfill_days": "first run only: skip reviews older than this many days (default: all pages)",
    "source_type": "source_type of the reviews (default app_review)",
    "timeout": "HTTP timeout in seconds (default 20)",
    "retries": "extra attempts after a 429, 5xx or network error (default 4)",
}

DEFAULT_BASE_URL = "https://itunes.apple.com"
MAX_PAGES = 10


def _label(node: Any, *path: str) -> Any:
    """Walk Apple's ``{"x": {"label": ...}}`` nesting; None when any step is missing."""
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _page_url(ctx: SourceContext, page: int) -> str:
    app_id = str(ctx.require("app_id")).strip()
    if not app_id.isdigit():
        raise ConnectorError(f"source '{ctx.name}': app_id must be the numeric id, not {app_id!r}")
    country = str(ctx.settings.get("country", "us")).strip().lower()
    if len(country) != 2 or not country.isalpha():
        raise ConnectorError(f"source '{ctx.name}': country must be a two-letter code")
    return f"/{country}/rss/customerreviews/page={page}/id={app_id}/sortby=mostrecent/json"


def _client(ctx: SourceContext) -> httpx.Client:
    base = str(ctx.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    return httpx.Client(
        base_url=base,
        timeout=float(ctx.settings.get("timeout", 20)),
        headers={"User-Agent": http.USER_AGENT, "Accept": "application/json"},
        follow_redirects=True,
    )


def _get_page(ctx: SourceContext, client: httpx.Client, page: int) -> list[Any]:
    """Return the entries of one page; an empty list past the last page."""
    url = _page_url(ctx, page)
    try:
        retries = int(ctx.settings.get("retries", 4))
    except (TypeError, ValueError):
        raise ConnectorError(f"source '{ctx.name}': retries must be a number") from None
    try:
        resp = http.request(client, "GET", url, Backoff(retries=retries))
    except ConnectorError as exc:
        refused = re.search(r"HTTP 40[13]", str(exc))
        if refused:
            # The feed takes no credentials: a refusal means the store, the app or we are blocked.
            raise ConnectorError(
                f"source '{ctx.name}': GET {url}: {refused.group(0)} refused by Apple; the "
                f"feed needs no key, so check that app_id is sold in country "
                f"'{ctx.settings.get('country', 'us')}' and that this host may reach the feed"
            ) from None
        raise ConnectorError(f"source '{ctx.name}': {exc}") from None
    if resp.status_code == 404:
        raise ConnectorError(f"source '{ctx.name}': GET {url}: HTTP 404 (check app_id and country)")
    if resp.status_code >= 400:
        # Apple answers pages past its limit with a client error; anything else is a real failure.
        if page > 1 and resp.status_code == 400:
            return []
        raise ConnectorError(f"source '{ctx.name}': GET {url}: HTTP {resp.status_code}")
    try:
        data = resp.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        # An HTML error page from a proxy or CDN: fail the source so the cursor does not move.
        raise ConnectorError(
            f"source '{ctx.name}': GET {url}: response is not JSON "
            f"({resp.headers.get('content-type', 'no content type')})"
        ) from None
    feed = data.get("feed") if isinstance(data, dict) else None
    if not isinstance(feed, dict):
        raise ConnectorError(f"source '{ctx.name}': GET {url}: JSON has no 'feed' object")
    entries = feed.get("entry")
    if entries is None:
        return []
    # With exactly one entry the feed gives an object instead of a one-element list.
    return entries if isinstance(entries, list) else [entries]


def check(ctx: SourceContext) -> str:
    """Read the first page and say how many reviews it holds."""
    with _client(ctx) as client:
        entries = _get_page(ctx, client, 1)
    reviews = [e for e in entries if not _is_app_entry(e)]
    if not reviews:
        return "feed reachable but empty (no reviews yet, or a wrong app_id/country)"
    return f"feed reachable: {len(reviews)} review(s) on the first page"


def _is_app_entry(entry: Any) -> bool:
    # Older versions of the feed put the app itself first on page 1: it has a name, no rating.
    return isinstance(entry, dict) and "im:name" in entry and "im:rating" not in entry


@record_parser
def to_mention(
    ctx: SourceContext, entry: Any, fetched_at: datetime, app_id: str, country: str
) -> Mention:
    """Turn one feed entry into a mention.

    Args:
        ctx: The configured source.
        entry: One element of ``feed.entry``.
        fetched_at: When the run fetched it.
        app_id: The app's id (kept as the thread).
        country: The store country (kept in raw).

    Returns:
        The mention; title and review body form the text, the rating is kept in raw.

    Raises:
        InvalidRecord: When the id, date, rating or text is missing or malformed.
    """
    if not isinstance(entry, dict):
        raise InvalidRecord(f"entry is a {type(entry).__name__}, not an object")
    review_id = _label(entry, "id", "label")
    if not isinstance(review_id, str | int) or not str(review_id).strip():
        raise InvalidRecord("review has no id.label")
    created = parse_timestamp(_label(entry, "updated", "label"))
    rating_raw = _label(entry, "im:rating", "label")
    try:
        rating = int(str(rating_raw))
    except ValueError:
        raise InvalidRecord(f"im:rating.label is not a number: {rating_raw!r}") from None
    if not 1 <= rating <= 5:
        raise InvalidRecord(f"im:rating.label out of range 1-5: {rating}")
    title = _label(entry, "title", "label")
    body = _label(entry, "content", "label")
    if not isinstance(body, str):
        raise InvalidRecord("review has no content.label text")
    title_s = title.strip() if isinstance(title, str) else ""
    text = clean_text(f"{title_s}\n\n{body}" if title_s else body)
    link = _label(entry, "link", "attributes", "href")
    version = _label(entry, "im:version", "label")
    author_name = _label(entry, "author", "name", "label")
    author_uri = _label(entry, "author", "uri", "label")
    return Mention(
        source=ctx.name,
        external_id=str(review_id),
        text=text,
        created_at=created,
        url=link if isinstance(link, str) else None,
        author=Author(
            handle=author_name if isinstance(author_name, str) else None,
            name=author_name if isinstance(author_name, str) else None,
            url=author_uri if isinstance(author_uri, str) else None,
        ),
        fetched_at=fetched_at,
        thread=f"app:{app_id}",
        language=None,
        source_type=str(ctx.settings.get("source_type", "app_review")),
        raw={
            "id": str(review_id),
            "app_id": app_id,
            "country": country,
            "rating": rating,
            "version": version if isinstance(version, str) else None,
            "title": title_s,
            "updated": _label(entry, "updated", "label"),
        },
    )


def fetch(ctx: SourceContext, cursor: Any) -> Iterator[FetchBatch]:
    """Read pages newest first until reviews already seen (or older than the backfill) appear.

    Args:
        ctx: The configured source.
        cursor: ``{"updated": iso, "id": str}`` of the newest review stored, or None.

    Yields:
        At most one batch, with the new newest review as its cursor.
    """
    state = dict(cursor or {})
    watermark = parse_timestamp(state["updated"]) if state.get("updated") else None
    if watermark is None and ctx.settings.get("backfill_days") is not None:
        watermark = datetime.now(UTC) - timedelta(days=float(ctx.settings["backfill_days"]))
    newest_id = state.get("id")
    try:
        max_pages = max(1, min(MAX_PAGES, int(ctx.settings.get("max_pages", MAX_PAGES))))
    except (TypeError, ValueError):
        raise ConnectorError(f"source '{ctx.name}': max_pages must be a number") from None
    app_id = str(ctx.require("app_id")).strip()
    country = str(ctx.settings.get("country", "us")).strip().lower()
    fetched_at = datetime.now(UTC)
    batch = FetchBatch()
    newest: tuple[datetime, str] | None = None
    seen: set[str] = set()
    with _client(ctx) as client:
        for page in range(1, max_pages + 1):
            entries = _get_page(ctx, client, page)
            if not entries:
                break
            reached_old = False
            for entry in entries:
                if _is_app_entry(entry):
                    continue
                try:
                    mention = to_mention(ctx, entry, fetched_at, app_id, country)
                except InvalidRecord as exc:
                    ext = _label(entry, "id", "label")
                    ext = ext if isinstance(ext, str | int) else None
                    batch.rejected.append(ctx.reject(f"page {page}: {exc}", entry, ext))
                    continue
                if mention.external_id == newest_id or (
                    watermark is not None and mention.created_at < watermark
                ):
                    reached_old = True
                    continue
                if mention.external_id in seen:
                    # Reviews shift between pages while we read; one copy is enough.
                    continue
                seen.add(mention.external_id)
                batch.mentions.append(mention)
                key = (mention.created_at, mention.external_id)
                if newest is None or key > newest:
                    newest = key
            if reached_old:
                break
    if newest is not None:
        at, ident = newest
        if at > fetched_at:
            # Dated ahead (inside the day allowed for clock skew): a watermark at its time would
            # put every review written before that hour behind it, and its id would stop the
            # next run at the top of the first page. Held at now, without an id, the review is
            # read again until the clock passes it, and its stable id keeps it stored once.
            state = {"updated": fetched_at.isoformat(), "id": None}
        else:
            state = {"updated": at.isoformat(), "id": ident}
    batch.cursor = state
    if batch.mentions or batch.rejected or state != (cursor or {}):
        yield batch
