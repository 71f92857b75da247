"""A local feed publisher: RSS 2.0 and Atom over HTTP, with conditional GET as HTTP specifies it.

Built from the specifications, not from our connector:

* RSS 2.0 (``<rss version="2.0"><channel>``, items with ``guid``, ``link``, ``pubDate`` in RFC 822
  form, ``description``) at ``/comments.rss``, ``application/rss+xml``; Atom (RFC 4287: ``feed``
  with ``id``/``title``/``updated``, entries with ``id``, ``published``/``updated`` in RFC 3339,
  ``content``) at ``/forum.atom``, ``application/atom+xml``.
* Validators on every 200 and 304: a strong ``ETag`` derived from the body and ``Last-Modified``
  (IMF-fixdate) from the newest entry. ``If-None-Match`` is compared with the weak comparison
  (``W/"x"`` matches ``"x"``), ``*`` matches anything, and when it is present ``If-Modified-Since``
  is ignored (RFC 9110 13.1.2, 13.1.3); an ``If-Modified-Since`` that is not a valid HTTP-date is
  ignored. A 304 carries the validators and no body. Only GET and HEAD are allowed (else 405).
* Failure injection: the next N requests answer a 5xx; or, while ``stalled``, every request waits
  for :attr:`FeedServer.release` (a hung publisher: the client's timeout fires first, no sleep).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from xml.sax.saxutils import escape

from tests.fakes.base import Served

PATHS = {"/comments.rss": "rss", "/forum.atom": "atom"}
CONTENT_TYPES = {"rss": "application/rss+xml; charset=utf-8", "atom": "application/atom+xml"}


@dataclass
class Entry:
    """One feed entry; ``published=None`` leaves the date out (a malformed entry)."""

    guid: str
    text: str
    published: datetime | None
    author: str = "Reader"
    raw_date: str | None = None  # a date exactly as written into the feed, valid or not


@dataclass
class Call:
    """One request as the publisher saw it."""

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class FeedServer(Served):
    """The publisher's state; add entries with :meth:`add` and start it with :meth:`start`."""

    entries: list[Entry] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    # Statuses to answer the next requests with, in order (e.g. [503, 503]).
    failures: list[int] = field(default_factory=list)
    send_etag: bool = True
    send_last_modified: bool = True
    # While True, requests wait for ``release`` and get no answer: a publisher that hangs.
    stalled: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ content
    def add(self, guid: str, text: str, published: datetime | None, **kw: Any) -> Entry:
        """Publish an entry."""
        entry = Entry(guid, text, published, **kw)
        with self.lock:
            self.entries.append(entry)
        return entry

    def last_modified(self) -> datetime:
        dates = [e.published for e in self.entries if e.published is not None]
        return max(dates) if dates else datetime(2026, 1, 1, tzinfo=UTC)

    def body(self, kind: str) -> bytes:
        return (self._rss() if kind == "rss" else self._atom()).encode("utf-8")

    def _rss(self) -> str:
        items = []
        for e in sorted(self.entries, key=_newest_first):
            date = e.raw_date or (format_datetime(e.published) if e.published else None)
            items.append(
                "<item>"
                f"<title>Comment by {escape(e.author)}</title>"
                f"<link>https://blog.example.com/post#{escape(e.guid)}</link>"
                f'<guid isPermaLink="false">{escape(e.guid)}</guid>'
                + (f"<pubDate>{escape(date)}</pubDate>" if date else "")
                + f"<author>{escape(e.author)}@example.com ({escape(e.author)})</author>"
                f"<description>{escape(e.text)}</description>"
                "</item>"
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
            "<title>Nimbus blog comments</title><link>https://blog.example.com/</link>"
            "<description>Comments on all posts</description><language>en</language>"
            + "".join(items)
            + "</channel></rss>"
        )

    def _atom(self) -> str:
        entries = []
        for e in sorted(self.entries, key=_newest_first):
            date = e.raw_date or (e.published.isoformat() if e.published else None)
            dates = f"<published>{escape(date)}</published><updated>{escape(date)}</updated>"
            entries.append(
                f"<entry><id>{escape(e.guid)}</id><title>Post by {escape(e.author)}</title>"
                f'<link href="https://forum.example.com/t/{escape(e.guid)}"/>'
                + (dates if date else "")
                + f"<author><name>{escape(e.author)}</name></author>"
                f'<content type="html">{escape("<p>" + escape(e.text) + "</p>")}</content>'
                "</entry>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom">'
            "<id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>"
            "<title>Nimbus forum</title>"
            f"<updated>{self.last_modified().isoformat()}</updated>"
            '<link href="https://forum.example.com/"/>' + "".join(entries) + "</feed>"
        )

    # ------------------------------------------------------------------ HTTP
    def answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request (after injected failures)."""
        kind = PATHS.get(path.split("?")[0])
        if kind is None:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        if method not in ("GET", "HEAD"):
            return 405, {"Allow": "GET, HEAD", "Content-Type": "text/plain"}, b"method not allowed"
        with self.lock:
            body = self.body(kind)
            modified = self.last_modified()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        validators: dict[str, str] = {}
        if self.send_etag:
            validators["ETag"] = etag
        if self.send_last_modified:
            validators["Last-Modified"] = format_datetime(modified.astimezone(UTC), usegmt=True)
        if _not_modified(headers, etag if self.send_etag else None, modified):
            return 304, validators, b""
        return 200, {"Content-Type": CONTENT_TYPES[kind], **validators}, body

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The publisher's request handler."""
        return _handler(self)

    def end_stalls(self) -> None:
        """Let stalled requests go."""
        self.release.set()


def _newest_first(e: Entry) -> float:
    return -(e.published.timestamp() if e.published else 0.0)


def _tags(value: str) -> list[str]:
    # "W/\"a\", \"b\"" -> ['"a"', '"b"'] (the weak prefix dropped: weak comparison).
    return [t.strip().removeprefix("W/") for t in value.split(",") if t.strip()]


def _not_modified(headers: dict[str, str], etag: str | None, modified: datetime) -> bool:
    inm = headers.get("if-none-match")
    if inm is not None:
        # If-None-Match present: If-Modified-Since must be ignored (RFC 9110 13.1.3).
        tags = _tags(inm)
        return "*" in tags or (etag is not None and etag in tags)
    ims = headers.get("if-modified-since")
    if ims is None:
        return False
    try:
        since = parsedate_to_datetime(ims)
    except (TypeError, ValueError):
        return False  # not an HTTP-date: ignored
    if since.tzinfo is None:
        return False
    # Last-Modified has one-second resolution.
    return modified.replace(microsecond=0) <= since


def _handler(state: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            call = Call(self.command, self.path, headers)
            with state.lock:
                state.calls.append(call)
                failure = state.failures.pop(0) if state.failures else None
                stalled = state.stalled
            if stalled:
                # The client gives up first; released when the test ends.
                state.release.wait(60)
                call.status = 0
                return
            if failure is not None:
                status, out, body = failure, {"Content-Type": "text/html"}, b"<h1>oops</h1>"
            else:
                status, out, body = state.answer(self.command, self.path, headers)
            call.status = status
            self.send_response(status)
            for name, value in out.items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and status != 304:
                self.wfile.write(body)

        do_GET = _serve
        do_HEAD = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler
