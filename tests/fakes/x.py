"""A local fake of X API v2 recent search (``GET /2/tweets/search/recent``).

Checks the bearer token (401 problem JSON as X sends it), ``query`` required, ``max_results``
between 10 and 100 (400 otherwise), ``start_time`` no older than 7 days; honours ``since_id`` and
``next_token``; answers with ``data``, ``includes.users`` and ``meta`` (``newest_id``, ``oldest_id``,
``result_count``, ``next_token``); 429 carries ``x-rate-limit-*`` headers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": "about:blank", "status": status}


@dataclass
class FakeX(FakeApi):
    """The fake index of posts; add posts with :meth:`add`."""

    token: str = "x-bearer-good"
    tweets: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 0

    def add(self, text: str, created: datetime) -> str:
        """Index a post; its id is a snowflake of its creation time, as X's are."""
        self._next += 1
        epoch_ms = int(created.timestamp() * 1000) - 1_288_834_974_657
        tid = str((epoch_ms << 22) | (self._next % 4096))
        self.tweets.append(
            {
                "id": tid,
                "text": text,
                "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "author_id": "2244994945",
                "conversation_id": tid,
                "lang": "en",
                "edit_history_tweet_ids": [tid],
            }
        )
        return tid

    def add_raw(self, tweet: dict[str, Any]) -> str:
        """Index a post as given (a malformed one); it gets a current snowflake id unless it has one."""
        self._next += 1
        epoch_ms = int(time.time() * 1000) - 1_288_834_974_657
        tweet.setdefault("id", str((epoch_ms << 22) | (self._next % 4096)))
        self.tweets.append(tweet)
        return str(tweet["id"])

    def rate_limited(self, failure: Failure) -> Reply:
        reset = int(time.time() + failure.retry_after)
        return (
            429,
            _problem(429, "Too Many Requests", "Too Many Requests"),
            {
                "x-rate-limit-limit": "450",
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(reset),
            },
        )

    def route(self, req: Request) -> Reply:
        if req.path != "/2/tweets/search/recent":
            return 404, _problem(404, "Not Found Error", "no such endpoint"), {}
        if req.headers.get("authorization") != f"Bearer {self.token}":
            return 401, _problem(401, "Unauthorized", "Unauthorized"), {}
        query = req.arg("query")
        if not query:
            return (
                400,
                {"errors": [{"message": "query is required"}], "title": "Invalid Request"},
                {},
            )
        max_results = int(req.arg("max_results") or 10)
        if not 10 <= max_results <= 100:
            msg = (
                f"The `max_results` query parameter value [{max_results}] is not between 10 and 100"
            )
            return 400, {"errors": [{"message": msg}], "title": "Invalid Request"}, {}
        start = req.arg("start_time")
        if start:
            when = datetime.fromisoformat(start)
            if when < datetime.now(UTC) - timedelta(days=7):
                msg = "Invalid 'start_time':'...'. 'start_time' must be within the last 7 days"
                return 400, {"errors": [{"message": msg}], "title": "Invalid Request"}, {}
        hits = sorted(self.tweets, key=lambda t: -int(t["id"]))
        if start:
            hits = [t for t in hits if str(t.get("created_at") or "9") >= start[:19]]
        since = req.arg("since_id")
        if since:
            hits = [t for t in hits if int(t["id"]) > int(since)]
        offset = int(req.arg("next_token") or 0)
        page = hits[offset : offset + max_results]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta.update({"newest_id": page[0]["id"], "oldest_id": page[-1]["id"]})
        if offset + max_results < len(hits):
            meta["next_token"] = str(offset + max_results)
        body: dict[str, Any] = {"meta": meta}
        if page:
            body["data"] = page
            body["includes"] = {
                "users": [
                    {
                        "id": "2244994945",
                        "name": "Happy Customer",
                        "username": "happycustomer",
                        "public_metrics": {"followers_count": 321, "following_count": 10},
                    }
                ]
            }
        return 200, body, {"x-rate-limit-remaining": "449", "x-rate-limit-limit": "450"}
