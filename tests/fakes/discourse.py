"""A local fake of a Discourse forum's ``GET /posts.json`` (latest posts).

Answers ``{"latest_posts": [...]}``, 50 posts at a time, newest first, posts with an id lower than
``before`` when given; each post has Discourse's fields (``id``, ``username``, ``created_at``,
``cooked``, ``raw``, ``post_number``, ``post_type``, ``topic_id``, ``topic_slug``, ``topic_title``,
``reply_to_post_number``). ``Api-Key``/``Api-Username`` headers are checked when sent (403
``invalid_access`` when wrong); ``login_required`` forums refuse anonymous reads the same way.
429 carries ``Retry-After`` and ``extras.wait_seconds`` as Discourse does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request

PAGE = 50  # Discourse's fixed page size for /posts.json


@dataclass
class FakeDiscourse(FakeApi):
    """One forum's posts."""

    api_key: str = "disc-good-key"
    api_username: str = "system"
    login_required: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 5000

    def add(self, text: str, created: datetime, topic: int = 77, post_type: int = 1) -> str:
        """Add a post to a topic; returns its id."""
        self._next += 1
        number = 1 + sum(1 for p in self.posts if p.get("topic_id") == topic)
        self.posts.append(
            {
                "id": self._next,
                "name": "Forum Member",
                "username": "member",
                "avatar_template": "/user_avatar/x/member/{size}/1.png",
                "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "cooked": f"<p>{text}</p>",
                "raw": text,
                "post_number": number,
                "post_type": post_type,
                "updated_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "reply_count": 0,
                "reply_to_post_number": None if number == 1 else 1,
                "topic_id": topic,
                "topic_slug": "sync-keeps-failing",
                "topic_title": "Sync keeps failing",
                "category_id": 4,
            }
        )
        return str(self._next)

    def add_raw(self, post: dict[str, Any]) -> None:
        """Add a post as given (e.g. malformed); it gets the next id unless it has one."""
        self._next += 1
        post.setdefault("id", self._next)
        self.posts.append(post)

    def rate_limited(self, failure: Failure) -> Reply:
        wait = int(failure.retry_after)
        body = {
            "errors": ["You’ve performed this action too many times. Please wait a few seconds."],
            "error_type": "rate_limit",
            "extras": {"wait_seconds": wait, "time_left": f"{wait} seconds"},
        }
        return 429, body, {"Retry-After": str(wait)}

    def route(self, req: Request) -> Reply:
        key, user = req.headers.get("api-key"), req.headers.get("api-username")
        denied = {
            "errors": [
                (
                    "You are not permitted to view the requested resource. "
                    "The API username or key is invalid."
                )
            ],
            "error_type": "invalid_access",
        }
        if key is not None and (key != self.api_key or user != self.api_username):
            return 403, denied, {}
        if key is None and self.login_required:
            return 403, denied, {}
        if req.path != "/posts.json":
            return (
                404,
                {
                    "errors": ["The requested URL or resource could not be found."],
                    "error_type": "not_found",
                },
                {},
            )
        posts = sorted(self.posts, key=lambda p: -int(p["id"]))
        before = req.arg("before")
        if before:
            posts = [p for p in posts if int(p["id"]) < int(before)]
        return 200, {"latest_posts": posts[:PAGE]}, {}
