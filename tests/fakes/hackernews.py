"""A local fake of the Algolia Hacker News search API (``/api/v1/search_by_date``).

Hits come newest first with ``objectID``, ``created_at``/``created_at_i``, ``author``, ``_tags`` and
``title``/``story_text`` for stories or ``comment_text``/``parent_id``/``story_id`` for comments;
``numericFilters`` on ``created_at_i`` and ``page``/``hitsPerPage`` paging with ``nbPages`` work as
documented; Algolia caps ``hitsPerPage`` at 1000 and answers a bad filter with 400.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.base import Failure, FakeApi, Reply, Request

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "=": operator.eq}
_FILTER = re.compile(r"^created_at_i(>=|>|<=|<|=)(\d+)$")


@dataclass
class FakeHackerNews(FakeApi):
    """The fake search index; add hits with :meth:`add`."""

    hits: list[dict[str, Any]] = field(default_factory=list)
    _next: int = 40_000_000

    def add(self, text: str, created: datetime, kind: str = "comment") -> str:
        """Index a story or comment; returns its objectID."""
        self._next += 1
        oid = str(self._next)
        hit: dict[str, Any] = {
            "objectID": oid,
            "created_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "created_at_i": int(created.timestamp()),
            "author": f"user{oid[-3:]}",
            "points": 3,
            "_tags": [kind, f"author_user{oid[-3:]}"],
        }
        if kind == "story":
            hit.update({"title": text, "url": None, "story_text": None, "num_comments": 0})
        else:
            hit.update(
                {
                    "comment_text": f"<p>{text}</p>",
                    "story_id": 39_000_000,
                    "parent_id": 39_000_000,
                    "story_title": "Ask HN: note apps?",
                }
            )
        self.hits.append(hit)
        return oid

    def add_raw(self, hit: dict[str, Any]) -> None:
        """Index a hit exactly as given (e.g. a malformed one)."""
        self.hits.append(hit)

    def rate_limited(self, failure: Failure) -> Reply:
        return (
            429,
            {"message": "Too many requests", "status": 429},
            {"Retry-After": str(int(failure.retry_after))},
        )

    def route(self, req: Request) -> Reply:
        if req.path != "/api/v1/search_by_date" or req.method != "GET":
            return 404, {"message": "Not Found", "status": 404}, {}
        hits = sorted(self.hits, key=lambda h: -int(h.get("created_at_i") or 0))
        for flt in filter(None, (req.arg("numericFilters") or "").split(",")):
            m = _FILTER.match(flt.strip())
            if not m:
                return 400, {"message": f"invalid numericFilters: {flt}", "status": 400}, {}
            op, value = m.group(1), int(m.group(2))
            compare = _OPS[op]
            hits = [h for h in hits if compare(int(h.get("created_at_i") or 0), value)]
        query = (req.arg("query") or "").lower()
        if query:
            hits = [
                h
                for h in hits
                if any(
                    query in str(h.get(k) or "").lower()
                    for k in ("title", "story_text", "comment_text")
                )
                or "malformed" in h.get("_tags", [])
            ]
        per_page = min(int(req.arg("hitsPerPage") or 20), 1000)
        page = int(req.arg("page") or 0)
        nb_pages = math.ceil(len(hits) / per_page) if hits else 0
        body = {
            "hits": hits[page * per_page : (page + 1) * per_page],
            "nbHits": len(hits),
            "page": page,
            "nbPages": nb_pages,
            "hitsPerPage": per_page,
            "query": req.arg("query") or "",
            "params": "",
            "processingTimeMS": 1,
        }
        return 200, body, {}
