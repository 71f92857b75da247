"""A local fake of the GitHub REST API v3 issues endpoints (issues, comments, listing).

Faithful where our code depends on it: ``Authorization: Bearer``/``token`` (401 "Bad credentials"
otherwise), 404 for an unknown repository, 422 for an issue without a title, issues numbered per
repository with ``html_url``, label filtering and ``per_page``/``page`` pagination on listings, and
422 "is too long" for a body over 65,536 characters or a title over 256, the secondary rate
limit (an injected 403 or 429 with GitHub's message, ``Retry-After`` only when asked for), and
labels dropped silently from a new issue when the token's account lacks push access. Issues carry
``created_at``, ``closed_at``, ``state_reason`` (``completed`` / ``not_planned`` when closed) and their ``comments``
count; comments carry ``created_at`` and ``user``. :meth:`FakeGitHub.close` and
:meth:`FakeGitHub.maintainer_comment` act as the product team.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request

DOCS = "https://docs.github.com/rest"
# GitHub refuses an issue or comment body over 65,536 characters, and a title over 256.
MAX_BODY = 65_536
MAX_TITLE = 256


@dataclass
class FakeGitHub(FakeApi):
    """State of the fake: one repository's issues and comments."""

    token: str = "ghp_testtoken"
    repo: str = "acme/nimbus"
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    next_comment: int = 900
    # Whether the token's account has push access: without it GitHub keeps a new issue but
    # drops its labels, silently ("Only users with push access can set labels for new issues").
    push_access: bool = True

    @staticmethod
    def _iso(at: datetime | None = None) -> str:
        return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def close(self, number: int, at: datetime, reason: str = "completed") -> None:
        """A maintainer closes the issue as ``completed`` or ``not_planned``."""
        self.issues[number].update(state="closed", state_reason=reason, closed_at=self._iso(at))

    def maintainer_comment(self, number: int, at: datetime, body: str = "On our roadmap") -> None:
        """A maintainer's comment on the issue."""
        self.next_comment += 1
        self.comments[number].append(
            {
                "id": self.next_comment,
                "body": body,
                "created_at": self._iso(at),
                "user": {"login": "maintainer"},
            }
        )
        self.issues[number]["comments"] = len(self.comments[number])

    def rate_limited(self, failure: Failure) -> Reply:
        """GitHub's secondary rate limit as its docs describe it: a message, and a wait header
        only sometimes (``retry_after`` 0 here: none, and the client must wait a minute)."""
        return self._limited(429, failure)

    def injected(self, failure: Failure) -> Reply | None:
        """A 403 injected is the secondary rate limit too: GitHub answers it with 403 or 429."""
        if failure.status == 403:
            return self._limited(403, failure)
        return super().injected(failure)

    @staticmethod
    def _limited(status: int, failure: Failure) -> Reply:
        headers = {"Retry-After": str(int(failure.retry_after))} if failure.retry_after else {}
        message = (
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
            "again."
        )
        return status, {"message": message, "documentation_url": DOCS}, headers

    def authorized(self, req: Request) -> bool:
        """A token as ``Bearer`` or ``token``."""
        auth = req.headers.get("authorization", "")
        return auth in (f"Bearer {self.token}", f"token {self.token}")

    def unauthorized(self) -> Reply:
        """GitHub's answer to a bad token."""
        return 401, {"message": "Bad credentials", "documentation_url": DOCS}, {}

    def route(self, req: Request) -> Reply:
        """Route one request."""
        prefix = f"/repos/{self.repo}/issues"
        if not req.path.startswith(prefix):
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        rest = req.path[len(prefix) :]
        if rest == "" and req.method == "POST":
            return self._create(req.json or {})
        if rest == "" and req.method == "GET":
            return self._list(req.params)
        m = re.fullmatch(r"/(\d+)(/comments)?", rest)
        if not m or int(m.group(1)) not in self.issues:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        number = int(m.group(1))
        if m.group(2) and req.method == "POST":
            body = (req.json or {}).get("body")
            if not body:
                return self._invalid("body")
            if (too_long := self._too_long(req.json or {})) is not None:
                return too_long
            self.next_comment += 1
            comment = {
                "id": self.next_comment,
                "body": body,
                "created_at": self._iso(),
                "user": {"login": "triage-bot"},
                "html_url": f"{self._html(number)}#issuecomment-{self.next_comment}",
            }
            self.comments[number].append(comment)
            self.issues[number]["comments"] = len(self.comments[number])
            return 201, comment, {}
        if m.group(2) and req.method == "GET":
            return 200, self._page(self.comments[number], req.params), {}
        if req.method == "PATCH":
            patch = req.json or {}
            if (too_long := self._too_long(patch)) is not None:
                return too_long
            for key in ("title", "body", "state"):
                if key in patch:
                    self.issues[number][key] = patch[key]
            if patch.get("state") == "closed":
                reason = patch.get("state_reason") or "completed"
                self.issues[number].update(state_reason=reason, closed_at=self._iso())
            return 200, self.issues[number], {}
        if req.method == "GET":
            return 200, self.issues[number], {}
        return 404, {"message": "Not Found", "documentation_url": DOCS}, {}

    def _html(self, number: int) -> str:
        return f"https://github.test/{self.repo}/issues/{number}"

    @staticmethod
    def _invalid(field_name: str, code: str = "missing_field", message: str = "") -> Reply:
        error: dict[str, Any] = {"resource": "Issue", "code": code, "field": field_name}
        if message:
            error["message"] = message
        return (
            422,
            {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS},
            {},
        )

    @classmethod
    def _too_long(cls, data: dict[str, Any]) -> Reply | None:
        if len(str(data.get("body") or "")) > MAX_BODY:
            return cls._invalid(
                "body", "custom", f"body is too long (maximum is {MAX_BODY} characters)"
            )
        if len(str(data.get("title") or "")) > MAX_TITLE:
            return cls._invalid(
                "title", "custom", f"title is too long (maximum is {MAX_TITLE} characters)"
            )
        return None

    def _create(self, data: dict[str, Any]) -> Reply:
        if not data.get("title"):
            return self._invalid("title")
        if (too_long := self._too_long(data)) is not None:
            return too_long
        number = len(self.issues) + 1
        self.issues[number] = {
            "number": number,
            "title": data["title"],
            "body": data.get("body"),
            "state": "open",
            "labels": [{"name": str(n)} for n in data.get("labels") or [] if self.push_access],
            "comments": 0,
            "created_at": self._iso(),
            "closed_at": None,
            "state_reason": None,
            "html_url": self._html(number),
            "url": f"{self.url}/repos/{self.repo}/issues/{number}",
        }
        self.comments[number] = []
        return 201, self.issues[number], {}

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        return items[(page - 1) * per_page : page * per_page]

    def _list(self, query: dict[str, str]) -> Reply:
        state = query.get("state", "open")
        wanted = set(filter(None, query.get("labels", "").split(",")))
        found = [
            i
            for n, i in sorted(self.issues.items(), reverse=True)  # newest first, as GitHub does
            if (state == "all" or i["state"] == state)
            and wanted <= {lab["name"] for lab in i["labels"]}
        ]
        return 200, self._page(found, query), {}


def start_fake_github() -> FakeGitHub:
    """Start the fake on a random local port."""
    fake = FakeGitHub()
    fake.start()
    return fake
