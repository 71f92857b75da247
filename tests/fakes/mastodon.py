"""A local fake of a Mastodon instance's REST API (v1).

Serves ``/api/v1/instance``, ``/api/v1/accounts/verify_credentials``, ``/api/v1/timelines/tag/:tag``
and ``/api/v1/notifications`` (``types[]`` filter) with Mastodon's Status, Account and Notification
JSON; pages newest first with ``max_id``/``since_id``/``limit`` (40 for statuses, 80 for
notifications, larger values are clamped) and a ``Link`` header; answers a missing or wrong token
with 401 ``{"error": ...}``, and sends ``X-RateLimit-*`` headers (reset as an ISO timestamp).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class FakeMastodon(FakeApi):
    """One instance: statuses by hashtag and mention notifications of the token's account."""

    token: str = "masto-good"
    # Public hashtag timelines need no token unless the instance says so.
    tag_needs_auth: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 0

    def _id(self, when: datetime | None = None) -> str:
        # Mastodon ids are time-ordered: milliseconds since the epoch shifted left 16 bits + a sequence.
        self._next += 1
        ms = int((when or datetime.now(UTC)).timestamp() * 1000)
        return str((ms << 16) | (self._next & 0xFFFF))

    def add(
        self, text: str, created: datetime, tag: str = "nimbusnotes", mention: bool = False
    ) -> str:
        """Publish a status with a hashtag (or as a mention notification); returns the status id."""
        sid = self._id(created)
        status = {
            "id": sid,
            "created_at": _iso(created),
            "in_reply_to_id": None,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": "public",
            "language": "en",
            "uri": f"https://example.social/users/ana/statuses/{sid}",
            "url": f"https://example.social/@ana/{sid}",
            "content": f'<p>{text} <a href="https://example.social/tags/{tag}">#{tag}</a></p>',
            "account": {
                "id": "1",
                "username": "ana",
                "acct": "ana@example.social",
                "display_name": "Ana",
                "url": "https://example.social/@ana",
                "followers_count": 42,
            },
            "tags": [{"name": tag, "url": f"https://example.social/tags/{tag}"}],
        }
        if mention:
            self.notifications.append(
                {
                    "id": self._id(created),
                    "type": "mention",
                    "created_at": _iso(created),
                    "account": status["account"],
                    "status": status,
                }
            )
        else:
            self.posts.append(status)
        return sid

    def add_raw(self, status: dict[str, Any], tag: str = "nimbusnotes") -> None:
        """Publish a status as given (e.g. malformed); it gets an id and the tag."""
        status.setdefault("id", self._id())
        status.setdefault("tags", [{"name": tag}])
        self.posts.append(status)

    def rate_limited(self, failure: Failure) -> Reply:
        reset = _iso(datetime.now(UTC) + timedelta(seconds=failure.retry_after))
        return (
            429,
            {"error": "Too many requests"},
            {
                "X-RateLimit-Limit": "300",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": reset,
            },
        )

    def _authorized(self, req: Request) -> bool:
        return req.headers.get("authorization") == f"Bearer {self.token}"

    def route(self, req: Request) -> Reply:
        has_auth = "authorization" in req.headers
        if has_auth and not self._authorized(req):
            return 401, {"error": "The access token is invalid"}, {}
        path = req.path
        if path == "/api/v1/instance":
            return 200, {"uri": "example.social", "title": "Example Social", "version": "4.2.0"}, {}
        if path == "/api/v1/accounts/verify_credentials":
            if not has_auth:
                return 401, {"error": "The access token is invalid"}, {}
            return 200, {"id": "1", "acct": "brand", "username": "brand"}, {}
        if path.startswith("/api/v1/timelines/tag/"):
            if self.tag_needs_auth and not has_auth:
                return 422, {"error": "This method requires an authenticated user"}, {}
            tag = path.rsplit("/", 1)[-1].lower()
            items = [
                s
                for s in self.posts
                if any(str(t.get("name", "")).lower() == tag for t in s.get("tags") or [])
            ]
            cap = 40
        elif path == "/api/v1/notifications":
            if not has_auth:
                return 401, {"error": "The access token is invalid"}, {}
            types = req.query.get("types[]")
            items = [n for n in self.notifications if not types or n["type"] in types]
            cap = 80
        else:
            return 404, {"error": "Record not found"}, {}
        items = sorted(items, key=lambda s: int(s["id"]), reverse=True)
        for name, keep in (("max_id", lambda i, v: i < v), ("since_id", lambda i, v: i > v)):
            value = req.arg(name)
            if value:
                items = [s for s in items if keep(int(s["id"]), int(value))]
        limit = min(int(req.arg("limit") or 20), cap)
        page = items[:limit]
        headers = {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": "299",
            "X-RateLimit-Reset": _iso(datetime.now(UTC) + timedelta(minutes=5)),
        }
        if page:
            base = f"{self.url}{path}"
            headers["Link"] = (
                f'<{base}?max_id={page[-1]["id"]}>; rel="next", '
                f'<{base}?min_id={page[0]["id"]}>; rel="prev"'
            )
        return 200, page, headers
