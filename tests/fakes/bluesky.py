"""A local fake of a Bluesky PDS for ``com.atproto.server.createSession`` and ``app.bsky.feed.searchPosts``.

createSession takes ``{"identifier", "password"}`` and answers ``accessJwt``/``refreshJwt``/``did``/
``handle`` or 401 ``{"error": "AuthenticationRequired", "message": "Invalid identifier or password"}``.
searchPosts needs the bearer JWT, requires ``q``, limits ``limit`` to 1..100 (400 ``InvalidRequest``
otherwise), honours ``since`` (inclusive, on sortAt), ``sort=latest`` and an opaque ``cursor``, and
answers ``{"posts": [PostView], "cursor"}`` with ``ratelimit-*`` headers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class FakeBluesky(FakeApi):
    """One PDS with one account and a search index of posts."""

    handle: str = "brand.bsky.social"
    password: str = "abcd-efgh-ijkl-mnop"
    posts: list[dict[str, Any]] = field(default_factory=list)
    jwts: set[str] = field(default_factory=set)
    _next: int = 0

    def add(self, text: str, created: datetime) -> str:
        """Index a post; returns its at:// uri."""
        self._next += 1
        rkey = f"3k{self._next:011d}"
        uri = f"at://did:plc:author{self._next % 3}/app.bsky.feed.post/{rkey}"
        self.posts.append(
            {
                "uri": uri,
                "cid": f"bafyrei{rkey}",
                "author": {
                    "did": f"did:plc:author{self._next % 3}",
                    "handle": f"fan{self._next % 3}.bsky.social",
                    "displayName": "A Fan",
                },
                "record": {
                    "$type": "app.bsky.feed.post",
                    "text": text,
                    "createdAt": _iso(created),
                    "langs": ["en"],
                },
                "replyCount": 0,
                "repostCount": 0,
                "likeCount": 0,
                "indexedAt": _iso(created),
            }
        )
        return uri

    def add_raw(self, post: dict[str, Any]) -> None:
        """Index a post view as given (e.g. malformed)."""
        self.posts.append(post)

    def rate_limited(self, failure: Failure) -> Reply:
        reset = int(datetime.now(UTC).timestamp() + failure.retry_after)
        headers = {
            "ratelimit-limit": "3000",
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(reset),
            "ratelimit-policy": "3000;w=300",
            "Retry-After": str(int(failure.retry_after)),
        }
        return 429, {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}, headers

    def server_error(self, status: int) -> Reply:
        return status, {"error": "InternalServerError", "message": "Internal Server Error"}, {}

    def route(self, req: Request) -> Reply:
        if req.path == "/xrpc/com.atproto.server.createSession" and req.method == "POST":
            body = req.json or {}
            if not body.get("identifier") or not body.get("password"):
                return (
                    400,
                    {
                        "error": "InvalidRequest",
                        "message": 'Input must have the property "identifier"',
                    },
                    {},
                )
            if body["identifier"] != self.handle or body["password"] != self.password:
                return (
                    401,
                    {
                        "error": "AuthenticationRequired",
                        "message": "Invalid identifier or password",
                    },
                    {},
                )
            jwt = secrets.token_hex(12)
            self.jwts.add(jwt)
            return (
                200,
                {
                    "accessJwt": jwt,
                    "refreshJwt": secrets.token_hex(12),
                    "handle": self.handle,
                    "did": "did:plc:brand",
                    "active": True,
                },
                {},
            )
        if req.path != "/xrpc/app.bsky.feed.searchPosts":
            return 404, {"error": "MethodNotImplemented", "message": "Method Not Implemented"}, {}
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.jwts:
            return (
                401,
                {"error": "AuthenticationRequired", "message": "Authentication Required"},
                {},
            )
        q = (req.arg("q") or "").lower()
        if not q:
            return (
                400,
                {"error": "InvalidRequest", "message": 'Error: Params must have the property "q"'},
                {},
            )
        limit = int(req.arg("limit") or 25)
        if not 1 <= limit <= 100:
            return (
                400,
                {"error": "InvalidRequest", "message": "Error: limit can not be greater than 100"},
                {},
            )

        def sort_at(p: dict[str, Any]) -> str:
            rec = p.get("record") or {}
            return min(str(rec.get("createdAt") or "9"), str(p.get("indexedAt") or "9"))

        hits = [
            p
            for p in self.posts
            if q.split()[0] in str((p.get("record") or {}).get("text", "")).lower()
            or "malformed" in str(p.get("uri", ""))
        ]
        since = req.arg("since")
        if since:
            hits = [p for p in hits if sort_at(p) >= since[:23]]
        hits.sort(key=sort_at, reverse=True)
        offset = int(req.arg("cursor") or 0)
        page = hits[offset : offset + limit]
        body: dict[str, Any] = {"posts": page, "hitsTotal": len(hits)}
        if offset + limit < len(hits):
            body["cursor"] = str(offset + limit)
        headers = {
            "ratelimit-limit": "3000",
            "ratelimit-remaining": "2999",
            "ratelimit-policy": "3000;w=300",
        }
        return 200, body, headers
