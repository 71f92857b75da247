"""What every handoff destination shares: HTTP with retries, its records in the store, thread notes.

A handoff is one outbox delivery to a department's own tool. The outbox already guarantees that a
delivery is marked ``sending`` before the call and reconciled with ``lookup`` after a crash; the
pieces here add what external APIs need on top:

* :func:`call` retries 429 (honouring ``Retry-After``), 5xx and timeouts with exponential backoff and
  jitter. Requests that are not idempotent at the server (GitHub has no idempotency keys) are not
  retried after a timeout, because the server may have acted: the delivery fails instead, and the
  next attempt looks the key up first (:meth:`HandoffDestination.seen_before`).
* Every handoff records what it created or joined (``handoff_refs``), so the ticket id and url are
  stored and a retry after a crash can tell "attempted" from "never tried".
* A short note ("handed to support: #123") goes into the item's Slack review thread, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from slack_sdk.errors import SlackApiError

from triage.config import Config, DestinationConfig
from triage.destinations.base import DeliveryError, Destination
from triage.destinations.slack import SlackDestination
from triage.http import RETRY_STATUS, USER_AGENT, Backoff, GaveUp, retry_after_seconds, send
from triage.models import DeliveryItem
from triage.privacy.policy import PrivacyPolicy
from triage.slack.client import find_by_key, post, thread_root
from triage.store import Store

log = logging.getLogger("triage.handoffs")

# 4xx answers that mean the request itself is wrong: retrying the same request cannot succeed.
PERMANENT_STATUS = {400, 401, 403, 404, 405, 409, 410, 413, 422}
# GitHub: after a rate limit that says no wait of its own, "wait for at least one minute".
RATE_LIMIT_WAIT = 60.0


def _rate_limited(response: httpx.Response) -> bool:
    """A 403 that is GitHub's rate limit, not refused credentials.

    GitHub answers its secondary rate limit (content created too fast) with 403 or 429: with
    ``Retry-After``, with ``x-ratelimit-remaining: 0``, or with neither and only its message
    saying so. Read as refused credentials, the last dead-lettered every handoff of a busy minute.
    """
    if response.status_code != 403:
        return False
    if "retry-after" in response.headers or response.headers.get("x-ratelimit-remaining") == "0":
        return True
    return _says_rate_limit(response)


def _says_rate_limit(response: httpx.Response) -> bool:
    """A 403 or 429 whose JSON ``message`` names the rate limit (GitHub's only sign at times)."""
    if response.status_code not in (403, 429):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    return "rate limit" in message.lower()


def _transient(response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUS or _rate_limited(response)


def _asked(response: httpx.Response) -> float | None:
    """The wait an answer asks for; a rate limit that names none, GitHub's documented minute."""
    asked = retry_after_seconds(response, None)
    return RATE_LIMIT_WAIT if asked is None and _says_rate_limit(response) else asked


def call(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    what: str,
    idempotent: bool = True,
    retries: int = 4,
    backoff: float = 0.5,
    max_wait: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> httpx.Response:
    """Send one API request through the shared retry helper (``triage.http``).

    Args:
        client: The destination's client (base URL, auth and timeouts).
        method: HTTP method.
        url: Path relative to the client's base URL.
        what: Names the destination in error messages (never the credentials).
        idempotent: False for requests that would act twice if repeated; their timeouts are not
            retried here (see the module docstring).
        retries: Extra attempts after the first.
        backoff: First wait in seconds; doubles per attempt, with jitter.
        max_wait: Upper bound of one wait, including a server's ``Retry-After``.
        sleep: Injected by tests.
        **kwargs: Passed to ``client.request``.

    Returns:
        The response, 2xx or a 4xx the caller handles (404, 409 or 422 on a join, for example).

    Raises:
        DeliveryError: Permanent for refused credentials; transient when retries ran out.
    """
    policy = Backoff(retries=retries, first=backoff, cap=max_wait, jitter=1.0, sleep=sleep)
    try:
        response = send(
            client,
            method,
            url,
            policy,
            retry_transport=idempotent,
            retryable=_transient,
            asked=_asked,
            **kwargs,
        )
    except httpx.TransportError as exc:  # only a request that is not idempotent gets here
        raise DeliveryError(
            f"{what}: {method} {url}: {type(exc).__name__}: {exc} (will look up, then retry)"
        ) from exc
    except GaveUp as exc:
        raise DeliveryError(f"{what}: {method} {url}: gave up after {exc}") from None
    if response.status_code in (401, 403):
        raise DeliveryError(
            f"{what}: {method} {url}: HTTP {response.status_code}: credentials refused "
            "(check the token and its scopes)",
            permanent=True,
        )
    return response


def fail(what: str, response: httpx.Response) -> DeliveryError:
    """The error for an answer the caller did not expect: permanent for a request that is wrong."""
    body = response.text[:300].replace("\n", " ")
    return DeliveryError(
        f"{what}: {response.request.method} {response.request.url.path}: "
        f"HTTP {response.status_code}: {body}",
        permanent=response.status_code in PERMANENT_STATUS,
    )




def http_client(base_url: str, settings: dict[str, Any], **kwargs: Any) -> httpx.Client:
    """An httpx client with the project's User-Agent and the destination's timeout."""
    headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    timeout = float(settings.get("timeout", 15))
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout, **kwargs)


def department_of(config: Config, destination: str) -> str:
    """The department whose handoffs go to ``destination`` (for notes and messages)."""
    for dept in config.departments.values():
        if destination == dept.destination or destination in dept.also:
            return dept.name
    return "team"


class HandoffDestination:
    """Base of the integrations: the store binding, handoff records and Slack thread notes."""

    preview = False
    system = "handoff"
    _client: httpx.Client

    def __init__(self, dest: DestinationConfig, config: Config) -> None:
        """Keep the settings; subclasses build their client."""
        self.name = dest.name
        self.settings = dest.settings
        self.config = config
        self.department = department_of(config, dest.name)
        self.retries = int(self.settings.get("retries", 4))
        self.backoff = float(self.settings.get("backoff", 0.5))
        # Thread notes are on unless a destination's settings say `thread_note: false`.
        self.thread_note = bool(self.settings.get("thread_note", True))
        # For text a destination reads from the store itself (the outbox redacts the item).
        self.privacy = PrivacyPolicy(config)
        self._store: Store | None = None
        self._destinations: dict[str, Destination] = {}

    # ------------------------------------------------------------ store binding
    def bind(self, store: Store, destinations: dict[str, Destination]) -> None:
        """Called by the outbox before a drain: keep the store and post notes a crash left behind."""
        self._store = store
        self._destinations = destinations
        self.flush_notes()

    @property
    def store(self) -> Store:
        """The bound store (the outbox binds it before it sends anything)."""
        if self._store is None:
            raise RuntimeError(f"destination {self.name} used before the outbox bound a store")
        return self._store

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """:func:`call` with this destination's client, name and retry settings."""
        kwargs.setdefault("retries", self.retries)
        kwargs.setdefault("backoff", self.backoff)
        return call(self.client, method, url, what=f"{self.system} {self.name}", **kwargs)

    @property
    def client(self) -> httpx.Client:
        """The destination's HTTP client (subclasses create it in their constructor)."""
        return self._client

    def seen_before(self, key: str, item: DeliveryItem) -> str | None:
        """Before sending, look up a key an earlier attempt may have delivered.

        The outbox reconciles rows left ``sending`` by a crash; this covers the other case, a
        request that timed out (so the row is ``failed``) after the server had acted.
        """
        ref = self.store.handoff_ref(key)
        if ref is None:
            return None
        if ref["state"] == "done":
            return self.reference(ref)
        return self.lookup(key, item)

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Subclasses look the key up at the destination."""
        raise NotImplementedError

    def reference(self, ref: dict[str, Any]) -> str:
        """The outbox's ``external_ref`` for a recorded handoff: its url, else system:id."""
        return str(ref.get("url") or f"{self.system}:{ref.get('target_id')}")

    def finish(self, key: str, target_id: str | None, url: str | None) -> str:
        """Record the confirmed target and post the Slack thread note; return the reference."""
        self.store.finish_handoff(key, target_id, url, note=self.thread_note)
        self.flush_notes(key)
        ref = self.store.handoff_ref(key)
        return self.reference(ref) if ref else str(url or target_id)

    # ------------------------------------------------------------ thread notes
    def note_text(self, ref: dict[str, Any]) -> str:
        """The thread note, e.g. ``handed to support: #123``; built only from our own data."""
        target = ref.get("target_id")
        label = f"#{target}" if target else self.system
        url = ref.get("url")
        where = f"<{url}|{label}>" if url and str(url).startswith("https://") else label
        verb = "joined" if ref.get("action") == "join" else "handed to"
        return f"{verb} {self.department}: {where} ({self.system})"

    def _review_client(self) -> SlackDestination | None:
        review = self.config.review_destination
        dest = self._destinations.get(review) if review else None
        return dest if isinstance(dest, SlackDestination) else None

    def flush_notes(self, key: str | None = None) -> None:
        """Post pending thread notes of this destination (one, or all a crash left behind)."""
        if self._store is None or not self.thread_note:
            return
        rows = [
            r
            for r in self.store.pending_notes()
            if r["destination"] == self.name and (key is None or r["key"] == key)
        ]
        for row in rows:
            self._post_note(row)

    def _post_note(self, row: dict[str, Any]) -> None:
        slack = self._review_client()
        review = self.store.review_ref(row["item_id"])
        if review is not None and review[0] in ("pending", "sending", "failed") and slack:
            return  # the review message is still queued: the note waits for its thread
        review_ref = review[1] if review else None
        if slack is None or review_ref is None or ":" not in review_ref:
            # No review message to reply to (previews, or an item that was never reviewed).
            self.store.set_note_state(row["key"], "skipped")
            return
        channel, review_ts = review_ref.split(":", 1)
        note_key = f"{row['key']}:note"
        try:
            # In a batch thread the review message is a reply: the note joins the same thread.
            thread_ts = thread_root(slack.client, channel, review_ts)
            if row["note_state"] == "sending":
                # A crash may have come between posting and recording: look in the thread first.
                found = find_by_key(
                    slack.client, channel, note_key, threads=[thread_ts], history=False
                )
                if found:
                    self.store.set_note_state(row["key"], "posted", f"{channel}:{found}")
                    return
            self.store.set_note_state(row["key"], "sending")
            ref = post(
                slack.client,
                channel,
                {"text": self.note_text(row)},
                event_type="triage_handoff_note",
                payload={"key": note_key},
                thread_ts=thread_ts,
            )
        except SlackApiError as exc:
            # The handoff itself succeeded; the note is retried at the start of the next drain.
            log.warning("thread note for %s not posted: %s", row["key"], exc.response.get("error"))
            self.store.set_note_state(row["key"], "pending")
            return
        self.store.set_note_state(row["key"], "posted", ref)


def describe(item: DeliveryItem) -> list[str]:
    """Plain-text lines with the context a department needs to act on an item."""
    also = [lab for lab in item.labels if lab != item.label]
    author = item.author
    who = author.name or author.handle or "unknown"
    if author.handle and author.name:
        who = f"{author.name} ({author.handle})"
    lines = [f"From: {who}"]
    if author.url:
        lines.append(f"Profile: {author.url}")
    if author.followers is not None:
        lines.append(f"Followers: {author.followers}")
    source = item.source + (f" ({item.source_type})" if item.source_type else "")
    lines.append(f"Source: {source}" + (f" {item.url}" if item.url else ""))
    created = item.created_at
    lines.append(f"Posted: {created.isoformat() if isinstance(created, datetime) else created}")
    lines.append(
        f"Classification: {item.label} ({item.score:.0%})"
        + (f", also {', '.join(also)}" if also else "")
    )
    lines.append(f"Item: {item.id}")
    return lines
