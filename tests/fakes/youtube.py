"""A local fake of the YouTube Data API v3 ``commentThreads.list`` endpoint.

Checks the API key (``key`` parameter or ``X-Goog-Api-Key`` header; a bad key is 400 ``keyInvalid``
and no key is 403 as Google answers), requires ``part`` and exactly one filter (``videoId`` or
``allThreadsRelatedToChannelId``), limits ``maxResults`` to 1..100, pages with ``pageToken``/
``nextPageToken`` and answers ``youtube#commentThreadListResponse`` with ``youtube#commentThread``
items (snippet.topLevelComment and replies.comments). Rate limiting is a 429 like Google's frontend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(code: int, message: str, reason: str, status: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


@dataclass
class FakeYouTube(FakeApi):
    """Comment threads of a channel's videos."""

    key: str = "AIza-good-key"
    channel: str = "UCnimbus"
    threads: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 0

    def _comment(
        self, text: str, created: datetime, video: str, parent: str | None
    ) -> dict[str, Any]:
        self._next += 1
        cid = f"Ugz{self._next:06d}" if parent is None else f"{parent}.R{self._next:04d}"
        snippet: dict[str, Any] = {
            "channelId": self.channel,
            "videoId": video,
            "textDisplay": text.replace("&", "&amp;").replace("<", "&lt;"),
            "textOriginal": text,
            "authorDisplayName": "@viewer",
            "authorProfileImageUrl": "https://yt3.ggpht.com/x",
            "authorChannelUrl": "http://www.youtube.com/@viewer",
            "authorChannelId": {"value": "UCviewer"},
            "canRate": True,
            "viewerRating": "none",
            "likeCount": 0,
            "publishedAt": _iso(created),
            "updatedAt": _iso(created),
        }
        if parent:
            snippet["parentId"] = parent
        return {"kind": "youtube#comment", "etag": "e", "id": cid, "snippet": snippet}

    def add(self, text: str, created: datetime, video: str = "vid0001") -> str:
        """Start a thread on a video; returns the top-level comment id."""
        top = self._comment(text, created, video, None)
        self.threads.append(
            {
                "kind": "youtube#commentThread",
                "etag": "e",
                "id": top["id"],
                "snippet": {
                    "channelId": self.channel,
                    "videoId": video,
                    "topLevelComment": top,
                    "canReply": True,
                    "totalReplyCount": 0,
                    "isPublic": True,
                },
            }
        )
        return str(top["id"])

    def reply(self, thread_id: str, text: str, created: datetime) -> str:
        """Reply in a thread; the reply shows in the thread's ``replies.comments``."""
        thread = next(t for t in self.threads if t["id"] == thread_id)
        comment = self._comment(text, created, thread["snippet"]["videoId"], thread_id)
        thread.setdefault("replies", {"comments": []})["comments"].append(comment)
        thread["snippet"]["totalReplyCount"] += 1
        return str(comment["id"])

    def add_raw(self, thread: dict[str, Any]) -> None:
        """Add a thread exactly as given (e.g. malformed)."""
        self.threads.append(thread)

    def rate_limited(self, failure: Failure) -> Reply:
        body = _error(
            429,
            "Resource has been exhausted (e.g. check quota).",
            "rateLimitExceeded",
            "RESOURCE_EXHAUSTED",
        )
        return 429, body, {"Retry-After": str(int(failure.retry_after))}

    def server_error(self, status: int) -> Reply:
        return status, _error(status, "Backend Error", "backendError", "UNAVAILABLE"), {}

    def route(self, req: Request) -> Reply:
        if req.path != "/youtube/v3/commentThreads":
            return 404, _error(404, "Not Found", "notFound", "NOT_FOUND"), {}
        key = req.arg("key") or req.headers.get("x-goog-api-key")
        if not key:
            msg = (
                "Method doesn't allow unregistered callers (callers without established identity)."
            )
            return 403, _error(403, msg, "forbidden", "PERMISSION_DENIED"), {}
        if key != self.key:
            return (
                400,
                _error(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    "keyInvalid",
                    "INVALID_ARGUMENT",
                ),
                {},
            )
        if not req.arg("part"):
            return (
                400,
                _error(
                    400,
                    "No filter selected. Expected one of: part",
                    "missingRequiredParameter",
                    "INVALID_ARGUMENT",
                ),
                {},
            )
        video, channel = req.arg("videoId"), req.arg("allThreadsRelatedToChannelId")
        if bool(video) == bool(channel):
            return (
                400,
                _error(
                    400,
                    "Incompatible parameters specified in the request.",
                    "incompatibleParameters",
                    "INVALID_ARGUMENT",
                ),
                {},
            )
        limit = int(req.arg("maxResults") or 20)
        if not 1 <= limit <= 100:
            return (
                400,
                _error(400, "Invalid value for maxResults.", "invalidValue", "INVALID_ARGUMENT"),
                {},
            )
        items = [
            t
            for t in self.threads
            if (channel and (t.get("snippet") or {}).get("channelId") == channel)
            or (video and (t.get("snippet") or {}).get("videoId") == video)
        ]

        def when(t: dict[str, Any]) -> str:
            top = (t.get("snippet") or {}).get("topLevelComment") or {}
            return str((top.get("snippet") or {}).get("publishedAt") or "")

        items.sort(key=when, reverse=True)
        parts = set((req.arg("part") or "").split(","))
        offset = int((req.arg("pageToken") or "P0")[1:])
        page = []
        for t in items[offset : offset + limit]:
            t2 = dict(t)
            if "replies" not in parts:
                t2.pop("replies", None)
            page.append(t2)
        body: dict[str, Any] = {
            "kind": "youtube#commentThreadListResponse",
            "etag": "e",
            "pageInfo": {"totalResults": len(page), "resultsPerPage": limit},
            "items": page,
        }
        if offset + limit < len(items):
            body["nextPageToken"] = f"P{offset + limit}"
        return 200, body, {}
