"""A local fake of Apple's customer-reviews JSON feed.

Serves ``/{country}/rss/customerreviews/page={n}/id={app_id}/sortby=mostrecent/json`` with the
real document shape (``feed.entry[]`` of ``{"label": ...}`` nodes, 50 reviews a page, pages 1-10,
no ``entry`` key past the last page, a single entry as an object rather than a list), records
every call, and can be told to answer the next calls with 429 + Retry-After, a 5xx, a 403, or a
body that is not JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request

PAGE_SIZE = 50
PACIFIC = timezone(timedelta(hours=-7))
MAX_PAGE = 10
_PATH = re.compile(
    r"^/(?P<country>[a-z]{2})/rss/customerreviews/page=(?P<page>\d+)/id=(?P<app>\d+)"
    r"/sortby=mostrecent/json$"
)


@dataclass
class FakeAppStore(FakeApi):
    """Reviews per (country, app id), newest first; ``FakeAppStore().start()`` serves them."""

    reviews: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def add_reviews(self, country: str, app_id: str, entries: list[dict[str, Any]]) -> None:
        """Add entries (any order); the feed serves them most recent first."""
        with self.lock:
            items = self.reviews.setdefault((country, app_id), [])
            items.extend(entries)
            items.sort(key=lambda e: str(e.get("updated", {}).get("label", "")), reverse=True)

    def fail_next(  # type: ignore[override]
        self, status: int, retry_after: float = 1, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (0 = a 200 with a non-JSON body)."""
        super().fail_next(status, retry_after, times)

    def pages_requested(self) -> list[int]:
        """Page numbers of every successful request, in order."""
        out = []
        for c in self.calls:
            m = _PATH.match(c.path)
            if m and c.status == 200:
                out.append(int(m.group("page")))
        return out

    def injected(self, failure: Failure) -> Reply:
        """Apple's CDN answers: an HTML page with a 200, a bare 429, or a plain error."""
        if failure.status == 0:
            html = b"<html><body>Service Unavailable</body></html>"
            return 200, html, {"Content-Type": "text/html"}
        if failure.status == 429:
            headers = {"Content-Type": "text/plain", "Retry-After": str(int(failure.retry_after))}
            return 429, b"", headers
        return failure.status, b"error", {"Content-Type": "text/plain"}

    def route(self, req: Request) -> Reply:
        """One page of the feed."""
        plain = {"Content-Type": "text/plain"}
        if req.method != "GET":
            return 405, b"method not allowed", {**plain, "Allow": "GET"}
        m = _PATH.match(req.path)
        if not m:
            return 404, b"not found", plain
        page = int(m.group("page"))
        if not 1 <= page <= MAX_PAGE:
            # Apple refuses pages beyond its 10-page window.
            return 400, b"CustomerReviews RSS page depth is limited to 10", plain
        items = list(self.reviews.get((m.group("country"), m.group("app")), []))
        chunk = items[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        feed: dict[str, Any] = {
            "author": {
                "name": {"label": "iTunes Store"},
                "uri": {"label": "http://www.apple.com/uk/itunes/"},
            },
            "updated": {"label": datetime.now(PACIFIC).replace(microsecond=0).isoformat()},
            "rights": {"label": "Copyright 2008 Apple Inc."},
            "title": {"label": "iTunes Store: Customer Reviews"},
            "icon": {"label": "http://itunes.apple.com/favicon.ico"},
            "link": [
                {
                    "attributes": {
                        "rel": "alternate",
                        "type": "text/html",
                        "href": "https://apps.apple.com/",
                    }
                },
                {"attributes": {"rel": "self", "href": self.url + req.path}},
            ],
            "id": {"label": self.url + req.path},
        }
        if len(chunk) == 1:
            feed["entry"] = chunk[0]  # the feed's quirk: one entry is not wrapped in a list
        elif chunk:
            feed["entry"] = chunk
        body = json.dumps({"feed": feed}).encode()
        return 200, body, {"Content-Type": "text/javascript; charset=utf-8"}


def review(
    review_id: int,
    updated: datetime,
    *,
    rating: Any = 4,
    title: str = "Nice app",
    content: Any = "Works well for me.",
    author: str = "reviewer",
) -> dict[str, Any]:
    """One entry in the feed's shape."""
    entry: dict[str, Any] = {
        "author": {
            "uri": {"label": f"https://itunes.apple.com/us/reviews/id{review_id + 7000}"},
            "name": {"label": author},
            "label": "",
        },
        # Apple stamps reviews in US Pacific time with an explicit offset.
        "updated": {"label": updated.astimezone(PACIFIC).isoformat()},
        "im:rating": {"label": str(rating)},
        "im:version": {"label": "3.2.1"},
        "id": {"label": str(review_id)},
        "title": {"label": title},
        "content": {"label": content, "attributes": {"type": "text"}},
        "link": {
            "attributes": {
                "rel": "related",
                "href": f"https://itunes.apple.com/us/review?id={review_id}&type=Purple%20Software",
            }
        },
        "im:voteSum": {"label": "0"},
        "im:contentType": {"attributes": {"term": "Application", "label": "Application"}},
        "im:voteCount": {"label": "0"},
    }
    if content is None:
        del entry["content"]
    return entry


def reviews_every_hour(first_id: int, count: int, newest: datetime) -> list[dict[str, Any]]:
    """``count`` reviews an hour apart, ids rising with time like Apple's."""
    return [
        review(
            first_id + i,
            newest - timedelta(hours=count - 1 - i),
            content=f"Review number {i}: sync works great",
        )
        for i in range(count)
    ]
