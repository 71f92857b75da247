"""A local fake of the Zendesk Support Tickets API (the parts the support handoff uses).

Faithful where our code depends on it: basic auth ``{email}/token:{api_token}`` (401 otherwise),
``{"ticket": {...}}`` envelopes, a required first comment, the four priorities, ``external_id``
filtering on the ticket list, ``Idempotency-Key`` on creation (the same key and payload returns the
first ticket with ``x-idempotency-lookup: hit``; the same key with another payload is a 400),
comments appended by ``PUT`` (which keeps the ticket's status unless the update sets one: an
agent's API update does not reopen a ticket by itself; ``new`` cannot be set again once left), and
422 for updates to closed tickets, comments over 64 KB and a 5,001st comment, ``updated_at`` on
every change and ``safe_update`` with ``updated_stamp`` (a 409 ``UpdateConflict``, the update
refused whole, when the ticket changed after that stamp). A requester e-mail
that is not a plain address is a 422 ``RecordInvalid`` with the error under
``details.requester``. The comments list is paged as documented (at most 100 a page, oldest
first): cursor pagination with ``page[size]`` (``meta.has_more``, ``meta.after_cursor``,
``links.next``; ``page[after]`` and ``page[before]`` not together) and, without ``page[size]``,
offset pagination (``page``, ``per_page``, ``next_page``; past the first 10,000 records a 400).
The 400 bodies for bad pagination parameters are this fake's own: the docs do not show them.
For the read-back: ``GET /api/v2/tickets/show_many.json?ids=`` (at most 100 ids,
unknown ids simply absent) with the ``metric_sets`` sideload (``include=metric_sets``): each
ticket's ``solved_at`` and ``reply_time_in_minutes`` (calendar and business minutes to the first
public agent reply). :meth:`FakeZendesk.agent_reply` and :meth:`FakeZendesk.solve` act as an agent.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.base import FakeApi, Reply, Request

PRIORITIES = {"low", "normal", "high", "urgent"}
# A comment is limited by size (64 KB) and a ticket holds at most 5,000 comments (then 422).
MAX_COMMENT_BYTES = 64 * 1024
MAX_COMMENTS = 5000
MAX_SHOW_MANY = 100
AGENT_ID = 7001
TYPES = {"problem", "incident", "question", "task"}
STATUSES = {"new", "open", "pending", "hold", "solved", "closed"}
# Comments list: at most 100 a page, whichever pagination; offset pagination stops at 10,000.
MAX_PAGE = 100
MAX_OFFSET_RECORDS = 10_000
# A plain addr-spec, as a mail system would take it: one "@", nothing a display name or a comment
# adds (spaces, <>, parentheses, quotes...), and a host name with a dot in it.
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\".]+")


@dataclass
class FakeZendesk(FakeApi):
    """State of the fake account."""

    email: str = "agent@example.test"
    token: str = "zd-test-token"
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, int]] = field(default_factory=dict)
    next_id: int = 100
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    # Called with the ticket id after a ticket is read (GET): a test's agent acting in between.
    after_read: Callable[[int], None] | None = None

    @staticmethod
    def _iso(at: datetime) -> str:
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def agent_reply(self, tid: int, at: datetime, body: str = "Thanks, looking into it") -> None:
        """An agent's public reply (the first one sets the reply-time metric)."""
        n = len(self.comments[tid])
        self.comments[tid].append(
            {
                "id": tid * 1000 + n,
                "body": body,
                "public": True,
                "author_id": AGENT_ID,
                "created_at": self._iso(at),
            }
        )
        metric = self.metrics[tid]
        if metric["reply_time_in_minutes"]["calendar"] is None:
            created = datetime.fromisoformat(self.tickets[tid]["created_at"])
            minutes = int((at - created).total_seconds() // 60)
            metric["reply_time_in_minutes"] = {"calendar": minutes, "business": minutes}
        metric["replies"] += 1
        if self.tickets[tid]["status"] == "new":
            self.tickets[tid]["status"] = "open"

    def solve(self, tid: int, at: datetime, status: str = "solved") -> None:
        """An agent solves (or closes) the ticket."""
        self.tickets[tid]["status"] = status
        self.metrics[tid]["solved_at"] = self._iso(at)
        self._touch(tid)

    def _touch(self, tid: int) -> None:
        """The ticket changed: ``updated_at`` moves on (at least a second: it has no finer grain)."""
        before = self.tickets[tid].get("updated_at")
        now = datetime.now(UTC).replace(microsecond=0)
        if before is not None:
            last = datetime.fromisoformat(before)
            now = max(now, last + timedelta(seconds=1))
        self.tickets[tid]["updated_at"] = self._iso(now)

    def authorized(self, req: Request) -> bool:
        """Basic auth with ``email/token`` and the API token."""
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        return user == f"{self.email}/token" and secret == self.token

    def unauthorized(self) -> Reply:
        """Zendesk's answer to bad credentials."""
        return 401, {"error": "Couldn't authenticate you"}, {}

    def _ticket_json(self, tid: int) -> dict[str, Any]:
        t = self.tickets[tid]
        return {**t, "url": f"{self.url}/api/v2/tickets/{tid}.json"}

    def route(self, req: Request) -> Reply:
        """Route one request."""
        path = req.path
        if req.method == "POST" and path == "/api/v2/tickets.json":
            return self._create(req)
        if req.method == "GET" and path == "/api/v2/tickets.json":
            found = [
                self._ticket_json(t)
                for t in sorted(self.tickets)
                if "external_id" not in req.query
                or self.tickets[t]["external_id"] == req.arg("external_id")
            ]
            return 200, {"tickets": found, "count": len(found), "next_page": None}, {}
        if req.method == "GET" and path == "/api/v2/tickets/show_many.json":
            return self._show_many(req)
        m = re.fullmatch(r"/api/v2/tickets/(\d+)\.json", path)
        if m and req.method == "PUT":
            return self._update(int(m.group(1)), req)
        if m and req.method == "GET":
            tid = int(m.group(1))
            if tid not in self.tickets:
                return 404, {"error": "RecordNotFound", "description": "Not found"}, {}
            shown = self._ticket_json(tid)
            if self.after_read is not None:
                self.after_read(tid)  # a test's agent acts between our read and our update
            return 200, {"ticket": shown}, {}
        m = re.fullmatch(r"/api/v2/tickets/(\d+)/comments\.json", path)
        if m and req.method == "GET":
            tid = int(m.group(1))
            if tid not in self.tickets:
                return 404, {"error": "RecordNotFound", "description": "Not found"}, {}
            return self._list_comments(tid, req)
        return 404, {"error": "InvalidEndpoint", "description": "Not found"}, {}

    def _show_many(self, req: Request) -> Reply:
        raw = [i for i in (req.arg("ids") or "").split(",") if i]
        if not raw or len(raw) > MAX_SHOW_MANY or not all(i.isdigit() for i in raw):
            return 400, {"error": "InvalidValue", "description": "ids: 1 to 100 ticket ids"}, {}
        ids = [int(i) for i in dict.fromkeys(raw) if int(i) in self.tickets]
        body: dict[str, Any] = {"tickets": [self._ticket_json(t) for t in ids], "count": len(ids)}
        if "metric_sets" in (req.arg("include") or "").split(","):
            body["metric_sets"] = [self.metrics[t] for t in ids]
        return 200, body, {}

    def _list_comments(self, tid: int, req: Request) -> Reply:
        items = self.comments[tid]
        path = f"{self.url}/api/v2/tickets/{tid}/comments.json"
        if "page[size]" in req.query:
            return self._comments_by_cursor(items, path, req)
        # Offset pagination (what a request without page[size] gets).
        try:
            page = int(req.arg("page") or 1)
            per_page = min(int(req.arg("per_page") or MAX_PAGE), MAX_PAGE)
        except ValueError:
            return self._bad_page("page and per_page must be integers")
        if page < 1 or per_page < 1:
            return self._bad_page("page and per_page must be positive")
        start = (page - 1) * per_page
        if start >= MAX_OFFSET_RECORDS:
            return self._bad_page("offset pagination is limited to the first 10,000 records")
        body: dict[str, Any] = {
            "comments": items[start : start + per_page],
            "count": len(items),
            "next_page": (
                f"{path}?page={page + 1}&per_page={per_page}"
                if start + per_page < len(items)
                else None
            ),
            "previous_page": f"{path}?page={page - 1}&per_page={per_page}" if page > 1 else None,
        }
        return 200, body, {}

    def _comments_by_cursor(self, items: list[dict[str, Any]], path: str, req: Request) -> Reply:
        try:
            size = min(int(req.arg("page[size]") or ""), MAX_PAGE)
        except ValueError:
            return self._bad_page("page[size] must be an integer")
        if size < 1:
            return self._bad_page("page[size] must be positive")
        after, before = req.arg("page[after]"), req.arg("page[before]")
        if after and before:
            return self._bad_page("page[after] and page[before] can't be used together")
        ids = [int(c["id"]) for c in items]
        if after:
            mark = self._uncursor(after)
            start = next((i for i, cid in enumerate(ids) if cid > mark), len(ids))
            page = items[start : start + size]
            more = start + size < len(items)
        elif before:
            mark = self._uncursor(before)
            end = next((i for i, cid in enumerate(ids) if cid >= mark), len(ids))
            page = items[max(0, end - size) : end]
            more = end - size > 0
        else:
            page = items[:size]
            more = size < len(items)
        first = self._cursor(page[0]["id"]) if page else None
        last = self._cursor(page[-1]["id"]) if page else None
        body = {
            "comments": page,
            "meta": {"has_more": more, "after_cursor": last, "before_cursor": first},
            "links": {
                "next": f"{path}?page[size]={size}&page[after]={last}" if last else None,
                "prev": f"{path}?page[size]={size}&page[before]={first}" if first else None,
            },
        }
        return 200, body, {}

    @staticmethod
    def _cursor(comment_id: int) -> str:
        return base64.urlsafe_b64encode(f"c{comment_id}".encode()).decode()

    @staticmethod
    def _uncursor(cursor: str) -> int:
        # An unreadable cursor is a ValueError: the server's 400.
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("c"))

    @staticmethod
    def _bad_page(description: str) -> Reply:
        return 400, {"error": "InvalidPaginationParameter", "description": description}, {}

    def _invalid(self, details: str, field: str = "base") -> Reply:
        return (
            422,
            {
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": {field: [{"description": details}]},
            },
            {},
        )

    def _create(self, req: Request) -> Reply:
        data = req.json or {}
        ticket = data.get("ticket")
        if not isinstance(ticket, dict):
            return 400, {"error": "InvalidValue", "description": "ticket is required"}, {}
        key = req.headers.get("idempotency-key")
        fingerprint = json.dumps(data, sort_keys=True)
        if key and key in self.idempotency:
            seen, tid = self.idempotency[key]
            if seen != fingerprint:
                return (
                    400,
                    {
                        "error": "IdempotentRequestError",
                        "description": "Request parameters differ from the original",
                    },
                    {},
                )
            return 201, {"ticket": self._ticket_json(tid)}, {"x-idempotency-lookup": "hit"}
        comment = ticket.get("comment") or {}
        if not (comment.get("body") or comment.get("html_body") or ticket.get("description")):
            return self._invalid("Description: cannot be blank")
        if len(str(comment.get("body") or "").encode()) > MAX_COMMENT_BYTES:
            return self._invalid("Comment: is too long (maximum is 64 KB)")
        if ticket.get("priority") is not None and ticket["priority"] not in PRIORITIES:
            return self._invalid(f"Priority: {ticket['priority']} is not valid")
        if ticket.get("type") is not None and ticket["type"] not in TYPES:
            return self._invalid(f"Type: {ticket['type']} is not valid")
        requester = ticket.get("requester")
        if requester is not None:
            if not requester.get("name"):
                return self._invalid("Requester: Name: is too short", "requester")
            email = requester.get("email")
            if email is not None and not _ADDRESS.fullmatch(str(email)):
                return self._invalid(f"Requester: Email: {email} is not valid", "requester")
        self.next_id += 1
        tid = self.next_id
        now = self._iso(datetime.now(UTC))
        self.metrics[tid] = {
            "id": tid + 50_000,
            "ticket_id": tid,
            "created_at": now,
            "solved_at": None,
            "replies": 0,
            "reply_time_in_minutes": {"calendar": None, "business": None},
        }
        self.tickets[tid] = {
            "created_at": now,
            "id": tid,
            "subject": ticket.get("subject"),
            "description": comment.get("body"),
            "priority": ticket.get("priority"),
            "type": ticket.get("type"),
            "status": "new",
            "external_id": ticket.get("external_id"),
            "tags": sorted(set(ticket.get("tags") or [])),
            "requester": requester,
        }
        self._touch(tid)
        self.comments[tid] = [
            {"id": tid * 1000, "body": comment.get("body"), "public": comment.get("public", True)}
        ]
        if key:
            self.idempotency[key] = (fingerprint, tid)
        return 201, {"ticket": self._ticket_json(tid)}, {}

    def _update(self, tid: int, req: Request) -> Reply:
        if tid not in self.tickets:
            return 404, {"error": "RecordNotFound", "description": "Not found"}, {}
        ticket = (req.json or {}).get("ticket") or {}
        current = self.tickets[tid]["status"]
        if current == "closed":
            return self._invalid("Status: closed prevents ticket update")
        if ticket.get("safe_update"):
            # Protection against update collisions: refused whole when the ticket changed after
            # the updated_stamp the client read it at.
            stamp = ticket.get("updated_stamp")
            if not stamp:
                return self._invalid("Updated stamp: is required for a safe update")
            if stamp != self.tickets[tid]["updated_at"]:
                return (
                    409,
                    {
                        "error": "UpdateConflict",
                        "description": "The ticket was updated since you read it",
                    },
                    {},
                )
        status = ticket.get("status")
        if status is not None and status not in STATUSES:
            return self._invalid(f"Status: {status} is not valid", "status")
        if status == "new" and current != "new":
            return self._invalid("Status: new cannot be set once the ticket has left it", "status")
        comment = ticket.get("comment")
        if comment:
            if not comment.get("body"):
                return self._invalid("Comment: body cannot be blank")
            if len(str(comment["body"]).encode()) > MAX_COMMENT_BYTES:
                return self._invalid("Comment: is too long (maximum is 64 KB)")
            if len(self.comments[tid]) >= MAX_COMMENTS:
                return self._invalid("Comment: a ticket can hold at most 5000 comments")
            n = len(self.comments[tid])
            self.comments[tid].append(
                {
                    "id": tid * 1000 + n,
                    "body": comment["body"],
                    "public": comment.get("public", True),
                }
            )
        # An agent's update through the API changes the status only when it sets one.
        if status is not None:
            self.tickets[tid]["status"] = status
        self._touch(tid)
        return 200, {"ticket": self._ticket_json(tid)}, {}


def start_fake_zendesk() -> FakeZendesk:
    """Start the fake on a random local port."""
    fake = FakeZendesk()
    fake.start()
    return fake
