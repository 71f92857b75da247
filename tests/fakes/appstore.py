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
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGE_SIZE = 50
PACIFIC = timezone(timedelta(hours=-7))
MAX_PAGE = 10
_PATH = re.compile(
    r"^/(?P<country>[a-z]{2})/rss/customerreviews/page=(?P<page>\d+)/id=(?P<app>\d+)"
    r"/sortby=mostrecent/json$"
)


@dataclass
class FakeCall:
    """One request the fake received."""

    path: str
    status: int
    at: float
    user_agent: str | None


@dataclass
class FakeAppStore:
    """Reviews per (country, app id), newest first; start with :func:`start_fake_appstore`."""

    reviews: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[FakeCall] = field(default_factory=list)
    failures: list[tuple[int, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def add_reviews(self, country: str, app_id: str, entries: list[dict[str, Any]]) -> None:
        """Add entries (any order); the feed serves them most recent first."""
        with self.lock:
            items = self.reviews.setdefault((country, app_id), [])
            items.extend(entries)
            items.sort(key=lambda e: str(e.get("updated", {}).get("label", "")), reverse=True)

    def fail_next(
        self, status: int, retry_after: float = 1, times: int = 1, body: str = ""
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (0 = a 200 with a non-JSON body)."""
        with self.lock:
            self.failures.extend([(status, retry_after, body)] * times)

    def pages_requested(self) -> list[int]:
        """Page numbers of every successful request, in order."""
        out = []
        for c in self.calls:
            m = _PATH.match(c.path)
            if m and c.status == 200:
                out.append(int(m.group("page")))
        return out


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


def _handler(state: FakeAppStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str]) -> None:
            with state.lock:
                state.calls.append(
                    FakeCall(self.path, status, time.monotonic(), self.headers.get("User-Agent"))
                )
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            with state.lock:
                failure = state.failures.pop(0) if state.failures else None
            if failure is not None:
                status, retry_after, body = failure
                if status == 0:
                    html = body or "<html><body>Service Unavailable</body></html>"
                    self._send(200, html.encode(), "text/html", {})
                elif status == 429:
                    self._send(429, b"", "text/plain", {"Retry-After": str(int(retry_after))})
                else:
                    self._send(status, b"error", "text/plain", {})
                return
            m = _PATH.match(self.path)
            if not m:
                self._send(404, b"not found", "text/plain", {})
                return
            page = int(m.group("page"))
            if not 1 <= page <= MAX_PAGE:
                # Apple refuses pages beyond its 10-page window.
                self._send(
                    400, b"CustomerReviews RSS page depth is limited to 10", "text/plain", {}
                )
                return
            with state.lock:
                items = list(state.reviews.get((m.group("country"), m.group("app")), []))
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
                    {"attributes": {"rel": "self", "href": state.url + self.path}},
                ],
                "id": {"label": state.url + self.path},
            }
            if len(chunk) == 1:
                feed["entry"] = chunk[0]  # the feed's quirk: one entry is not wrapped in a list
            elif chunk:
                feed["entry"] = chunk
            body = json.dumps({"feed": feed}).encode()
            self._send(200, body, "text/javascript; charset=utf-8", {})

    return Handler


def start_fake_appstore() -> tuple[FakeAppStore, ThreadingHTTPServer]:
    """Start the fake on 127.0.0.1 with a random port; the caller shuts it down."""
    state = FakeAppStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state, server
