"""A local fake of Reddit's OAuth API for an app-only client.

``POST /api/v1/access_token`` checks HTTP Basic client credentials and ``grant_type`` and answers
``{"access_token", "token_type": "bearer", "expires_in", "scope"}`` (401 for bad credentials, as
Reddit does). Listings (``/search``, ``/r/{sub}/new``, ``/r/{sub}/comments``) need the bearer token
and a User-Agent, cap ``limit`` at 100, page with ``after`` fullnames, and answer
``{"kind": "Listing", "data": {"after", "before", "dist", "children": [{"kind", "data"}]}}`` with
``x-ratelimit-used/remaining/reset`` headers.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request


@dataclass
class FakeReddit(FakeApi):
    """One fake Reddit: posts and comments by subreddit; add them with :meth:`add`."""

    client_id: str = "app-id"
    client_secret: str = "app-secret"
    things: list[dict[str, Any]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    _next: int = 1000

    def add(self, text: str, created: datetime, sub: str = "notetaking", kind: str = "t3") -> str:
        """Add a post (t3) or comment (t1); returns its fullname."""
        self._next += 1
        tid = f"k{self._next:x}"
        data: dict[str, Any] = {
            "id": tid,
            "name": f"{kind}_{tid}",
            "author": f"redditor{self._next}",
            "subreddit": sub,
            "created_utc": created.timestamp(),
            "permalink": f"/r/{sub}/comments/{tid}/",
            "score": 1,
        }
        if kind == "t3":
            data.update({"title": text, "selftext": "", "num_comments": 0})
        else:
            data.update({"body": text, "link_id": "t3_parent", "parent_id": "t3_parent"})
        self.things.append({"kind": kind, "data": data})
        return data["name"]

    def add_raw(self, thing: dict[str, Any]) -> None:
        """Add a listing child as given (e.g. a malformed one)."""
        self.things.append(thing)

    def rate_limited(self, failure: Failure) -> Reply:
        headers = {
            "x-ratelimit-used": "100",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(failure.retry_after)),
        }
        return 429, {"message": "Too Many Requests", "error": 429}, headers

    def _token(self, req: Request) -> Reply:
        auth = req.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if auth != f"Basic {expected}":
            return 401, {"message": "Unauthorized", "error": 401}, {}
        if req.form().get("grant_type") != "client_credentials":
            return 200, {"error": "unsupported_grant_type"}, {}
        token = secrets.token_hex(8)
        self.tokens.add(token)
        body = {"access_token": token, "token_type": "bearer", "expires_in": 86400, "scope": "*"}
        return 200, body, {}

    def route(self, req: Request) -> Reply:
        if req.path == "/api/v1/access_token" and req.method == "POST":
            return self._token(req)
        if not req.headers.get("user-agent"):
            return 429, {"message": "Too Many Requests", "error": 429}, {}
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or auth[7:] not in self.tokens:
            return 401, {"message": "Unauthorized", "error": 401}, {}
        parts = req.path.strip("/").split("/")
        if parts == ["search"]:
            if not req.arg("q"):
                return 400, {"message": "Bad Request", "error": 400}, {}
            q = (req.arg("q") or "").lower()
            items = [
                t
                for t in self.things
                if t["kind"] == "t3" and q in str(t["data"].get("title", "")).lower()
            ]
        elif len(parts) == 3 and parts[0] == "r" and parts[2] in ("new", "comments"):
            kind = "t3" if parts[2] == "new" else "t1"
            items = [
                t
                for t in self.things
                if t.get("kind") == kind and t.get("data", {}).get("subreddit") == parts[1]
            ]
        else:
            return 404, {"message": "Not Found", "error": 404}, {}
        items.sort(key=lambda t: -float(t["data"].get("created_utc") or 0))
        limit = min(int(req.arg("limit") or 25), 100)
        start = 0
        after = req.arg("after")
        if after:
            names = [t["data"].get("name") for t in items]
            start = names.index(after) + 1 if after in names else len(items)
        page = items[start : start + limit]
        more = start + limit < len(items)
        body = {
            "kind": "Listing",
            "data": {
                "after": page[-1]["data"].get("name") if more and page else None,
                "before": None,
                "dist": len(page),
                "modhash": None,
                "children": page,
            },
        }
        headers = {
            "x-ratelimit-used": "1",
            "x-ratelimit-remaining": "99",
            "x-ratelimit-reset": "60",
        }
        return 200, body, headers
