"""Support handoffs as Zendesk tickets (Tickets API), with repeat complaints joined as comments.

Requests go to ``{base_url}/api/v2/...`` with basic auth ``{email}/token:{api_token}``. A new ticket
carries the delivery key as its ``external_id`` and as the ``Idempotency-Key`` header, so a retried
create returns the first ticket instead of a second one, and ``lookup`` finds it with
``GET /api/v2/tickets.json?external_id=KEY``. A complaint from an author who already has a ticket
from the last ``join_window_hours`` about the same problem (similar words) becomes an internal
comment on that ticket (``PUT /api/v2/tickets/{id}.json``), which reopens it when it was pending, on
hold or solved; the comment carries the key, which is how ``lookup`` recognises it (reading every
page of the ticket's comments). The requester is set only when the author's handle is an e-mail
address (:mod:`triage.destinations.requester`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from triage.config import Config, DestinationConfig
from triage.destinations.base import DeliveryError, Destination
from triage.destinations.handoff import (
    HandoffDestination,
    describe,
    fail,
    http_client,
)
from triage.destinations.preview import build as preview
from triage.destinations.requester import author_email, author_name, source_connector
from triage.limits import ZENDESK_COMMENT_BYTES, clip, utf8_len
from triage.models import DeliveryItem
from triage.secrets import secret
from triage.similarity import COMPLAINT_THRESHOLD, jaccard, signature

# Words that make a service issue urgent or high priority (case-insensitive substrings).
URGENT_WORDS = ("outage", "data loss", "lost all", "hacked", "breach", "security", "phishing")
HIGH_WORDS = (
    "charged twice",
    "double charged",
    "refund",
    "can't log in",
    "cannot log in",
    "locked out",
    "down",
    "crash",
    "not working",
)
PRIORITIES = ("low", "normal", "high", "urgent")
# A comment added through the API by an agent leaves the ticket's status as it was unless the
# update sets one (Zendesk help: "Why is a requester's reply not changing the ticket status to
# open?"), so a repeat complaint joined onto a ticket in these states reopens it explicitly.
REOPEN = frozenset({"pending", "hold", "solved"})
# Lists are paged, at most 100 comments a page, oldest first. A ticket holds at most 5,000
# comments, so 50 pages read all of it: the bound only stops a server that never says "no more".
# A join read, then refused because the ticket changed in between (409), is tried this often.
JOIN_ATTEMPTS = 3
COMMENT_PAGE_SIZE = 100
MAX_COMMENT_PAGES = 50


def urgency(
    text: str,
    followers: int | None = None,
    urgent_words: tuple[str, ...] = URGENT_WORDS,
    high_words: tuple[str, ...] = HIGH_WORDS,
) -> tuple[str, str]:
    """Zendesk priority of an item and why: keywords first, then confidence and reach.

    Returns:
        ``(priority, reason)`` with priority one of ``urgent``, ``high``, ``normal``.
    """
    text = text.lower()
    for priority, words in (("urgent", urgent_words), ("high", high_words)):
        for word in words:
            # Whole words with common endings: "crash" matches "crashes", "down" not "download".
            if re.search(r"(?<!\w)" + re.escape(word) + r"(?:s|es|ed|ing)?(?!\w)", text):
                return priority, f"mentions '{word}'"
    followers = followers or 0
    if followers >= 10_000:
        return "high", f"author has {followers} followers"
    return "normal", "no urgency signal"


def _subject(text: str) -> str:
    line = " ".join(text.split())
    return "Customer feedback: " + (line if len(line) <= 80 else line[:77] + "...")


class ZendeskDestination(HandoffDestination):
    """Creates or joins a Zendesk ticket per support handoff."""

    system = "zendesk"

    def __init__(self, dest: DestinationConfig, config: Config, email: str, token: str) -> None:
        """Build the client for ``base_url`` (or ``https://{subdomain}.zendesk.com``)."""
        super().__init__(dest, config)
        self.base_url = zendesk_url(dest.settings).rstrip("/")
        self._client = http_client(
            self.base_url,
            dest.settings,
            auth=(f"{email}/token", token),
            headers={"Accept": "application/json"},
        )
        self.window = timedelta(hours=float(dest.settings.get("join_window_hours", 72)))
        self.join_threshold = float(dest.settings.get("join_similarity", COMPLAINT_THRESHOLD))
        self.tags = [str(t) for t in dest.settings.get("tags") or ["feedback-triage"]]
        self.urgent_words = tuple(
            str(w).lower() for w in dest.settings.get("urgent_keywords") or URGENT_WORDS
        )
        self.high_words = tuple(
            str(w).lower() for w in dest.settings.get("high_keywords") or HIGH_WORDS
        )

    def agent_url(self, ticket_id: str) -> str:
        """Where an agent opens the ticket."""
        return f"{self.base_url}/agent/tickets/{ticket_id}"

    def _body(self, key: str, item: DeliveryItem, priority: str, reason: str) -> str:
        lines = ["", *describe(item), f"Urgency: {priority} ({reason})"]
        # The key makes a comment findable again after a crash (see lookup): it must survive the
        # cut, so the text (the only unbounded part) is cut to what the rest leaves.
        lines.append(f"triage-key: {key}")
        tail = "\n" + "\n".join(clip(line, 2000) for line in lines)
        budget = ZENDESK_COMMENT_BYTES - utf8_len(tail)
        return clip(item.text, budget, size=utf8_len) + tail

    def _join_target(self, item: DeliveryItem, who: str) -> dict[str, Any] | None:
        created = item.created_at
        if not isinstance(created, datetime):
            return None
        sig = signature(item.text)
        # Both directions: the outbox does not promise to send an author's items in time order.
        tickets = self.store.recent_tickets(
            self.name, who, created - self.window, created + self.window
        )
        for ticket in tickets:
            if jaccard(sig, signature(str(ticket["text"]))) >= self.join_threshold:
                return ticket
        return None

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Open a ticket, or comment on the author's recent ticket about the same problem."""
        earlier = self.seen_before(key, item)
        if earlier:
            return earlier
        who = item.author_key
        priority, reason = urgency(
            item.text, item.author.followers, self.urgent_words, self.high_words
        )
        body = self._body(key, item, priority, reason)
        ref = self.store.handoff_ref(key)
        target = (
            {"target_id": ref["target_id"], "url": ref["url"]}
            if ref and ref["action"] == "join"
            else self._join_target(item, who)
        )
        if target is not None:
            tid = str(target["target_id"])
            self.store.begin_handoff(
                key,
                item.id,
                self.name,
                self.system,
                "join",
                target_id=tid,
                url=target["url"],
                author_key=who,
            )
            for _ in range(JOIN_ATTEMPTS):
                state = self._state(tid)
                if state is None or state[0] == "closed":
                    break
                status, stamp = state
                update: dict[str, Any] = {"comment": {"body": body, "public": False}}
                # The status is read first rather than "open" always sent: a ticket still "new"
                # (nobody has looked at it yet) stays in the agents' new-ticket queue, since new
                # can never be set again once left. Joins are rare, so the extra GET is cheap.
                if status in REOPEN:
                    update["status"] = "open"
                if stamp:
                    # An agent who solves the ticket between our read and our update would
                    # otherwise leave the new complaint on a solved ticket: the update is refused
                    # whole (409) if the ticket changed since, and is made again on a fresh read.
                    update.update(safe_update=True, updated_stamp=stamp)
                resp = self.call(
                    "PUT",
                    f"/api/v2/tickets/{tid}.json",
                    json={"ticket": update},
                    idempotent=False,
                )
                if resp.status_code == 200:
                    return self.finish(key, tid, self.agent_url(tid))
                if resp.status_code == 409:
                    continue
                if resp.status_code not in (404, 422):
                    raise fail(f"zendesk {self.name}", resp)
                break
            else:
                raise DeliveryError(
                    f"zendesk {self.name}: ticket {tid} changed under each of {JOIN_ATTEMPTS} "
                    "updates; the complaint is joined on a later attempt"
                )
            # Closed or deleted since: a closed ticket takes no comments, so open a new one.
        self.store.begin_handoff(key, item.id, self.name, self.system, "create", author_key=who)
        ticket: dict[str, Any] = {
            "subject": _subject(item.text),
            "comment": {"body": body, "public": False},
            "priority": priority,
            "type": "problem" if priority in ("urgent", "high") else "question",
            "external_id": key,
            "tags": [*self.tags, f"label_{item.label}", f"source_{item.source}"],
        }
        # Only a real address: Zendesk refuses a malformed requester e-mail with a 422 (the
        # ticket would never be created), and a fediverse handle is nobody's mailbox.
        found = author_email(item, source_connector(self.config, item.source))
        if found is not None:
            ticket["requester"] = {"name": author_name(item, found), "email": found.email}
        resp = self.call(
            "POST",
            "/api/v2/tickets.json",
            json={"ticket": ticket},
            headers={"Idempotency-Key": key},
        )
        if resp.status_code != 201 and resp.status_code != 200:
            raise fail(f"zendesk {self.name}", resp)
        tid = str(resp.json()["ticket"]["id"])
        return self.finish(key, tid, self.agent_url(tid))

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Find the ticket (by ``external_id``) or the comment (by its key) an attempt left."""
        ref = self.store.handoff_ref(key)
        if ref and ref["state"] == "done":
            return self.reference(ref)
        if ref and ref["action"] == "join":
            tid = str(ref["target_id"])
            if self._has_comment(tid, key):
                return self.finish(key, tid, self.agent_url(tid))
            return None
        resp = self.call("GET", "/api/v2/tickets.json", params={"external_id": key})
        if resp.status_code != 200:
            raise fail(f"zendesk {self.name}", resp)
        tickets = resp.json().get("tickets") or []
        if not tickets:
            return None
        if ref is None:
            self.store.begin_handoff(
                key, item.id, self.name, self.system, "create", author_key=item.author_key
            )
        tid = str(tickets[0]["id"])
        return self.finish(key, tid, self.agent_url(tid))

    def _state(self, tid: str) -> tuple[str, str | None] | None:
        """The ticket's status (``new`` ... ``closed``) and ``updated_at``; None when it is gone."""
        resp = self.call("GET", f"/api/v2/tickets/{tid}.json")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise fail(f"zendesk {self.name}", resp)
        ticket = resp.json()["ticket"]
        return str(ticket.get("status") or ""), ticket.get("updated_at") or None

    def _has_comment(self, tid: str, key: str) -> bool:
        """Whether a comment on the ticket carries ``key``, reading every page of comments.

        Cursor pagination: the next page is asked for with ``meta.after_cursor`` on our own
        path, not by following ``links.next``, so the credentials only ever go to ``base_url``.

        Raises:
            DeliveryError: Still more pages after :data:`MAX_COMMENT_PAGES` (transient: the
                delivery is retried, then dead-lettered with this message, rather than risk
                posting the comment twice).
        """
        marker = f"triage-key: {key}"
        params: dict[str, str | int] = {"page[size]": COMMENT_PAGE_SIZE}
        for _ in range(MAX_COMMENT_PAGES):
            resp = self.call("GET", f"/api/v2/tickets/{tid}/comments.json", params=params)
            if resp.status_code == 404:
                return False
            if resp.status_code != 200:
                raise fail(f"zendesk {self.name}", resp)
            data = resp.json()
            if any(marker in str(c.get("body", "")) for c in data.get("comments") or []):
                return True
            meta = data.get("meta") or {}
            cursor = meta.get("after_cursor")
            if not meta.get("has_more") or not cursor:
                return False
            params = {"page[size]": COMMENT_PAGE_SIZE, "page[after]": str(cursor)}
        raise DeliveryError(
            f"zendesk {self.name}: ticket {tid} still had more comments after "
            f"{MAX_COMMENT_PAGES} pages of {COMMENT_PAGE_SIZE}; stopped looking for {key} "
            "(not posting it again blindly)"
        )


def zendesk_url(settings: dict[str, Any]) -> str:
    """The account's base URL from ``base_url`` or ``subdomain``."""
    if settings.get("base_url"):
        return str(settings["base_url"])
    if settings.get("subdomain"):
        return f"https://{settings['subdomain']}.zendesk.com"
    raise DeliveryError("zendesk: set 'subdomain' or 'base_url'", permanent=True)


def credentials(settings: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(email, api_token)`` from env vars / Secret blocks named in the settings."""
    email = secret(settings, "email_env", "ZENDESK_EMAIL", "email_secret") or settings.get("email")
    token = secret(settings, "token_env", "ZENDESK_API_TOKEN", "token_secret")
    return (str(email) if email else None), token


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``zendesk`` destination (JSON previews without an agent e-mail and API token)."""
    email, token = credentials(dest.settings)
    if not email or not token:
        return preview(dest, config)
    return ZendeskDestination(dest, config, email, token)
