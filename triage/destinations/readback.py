"""Read back what became of handoffs, through the same destinations' clients (and retries).

One reader per system, each taking every handoff of one destination at once and asking its API in
batches:

* **zendesk**: ``GET /api/v2/tickets/show_many.json?ids=...&include=metric_sets`` (100 tickets a
  call). Status new/open/pending/hold is ``open``, solved/closed ``resolved`` at the metric set's
  ``solved_at``; the first public reply is the ticket's ``created_at`` plus the metric set's
  ``reply_time_in_minutes.calendar`` (Zendesk's time to the first public agent comment).
* **github**: the tracker's issues listed once (``GET /repos/{repo}/issues?state=all&labels=...``,
  100 a page). Open is ``open``; closed as completed ``resolved`` at ``closed_at``, closed as not
  planned ``rejected``; ``comments`` is the issue's comment count. The first response is the first
  comment that is not one of ours (ours carry a ``triage-key`` marker), read only for issues with
  comments and no first response known yet.
* **hubspot**: the notes' contacts (associations v4 batch read), the contacts'
  ``lifecyclestage``, their deals (associations v4) and the deals' stages (objects batch read), 100
  a call. A closed-won deal is ``won`` at its ``closedate``, closed-lost ``lost``; an open deal
  ``open`` with the first response at its ``createdate`` (sales acted); no deal: ``open``.

A reader raises :class:`~triage.destinations.base.DeliveryError` when the API cannot be read (after
the client's retries); the read-back flow then keeps the last known outcomes (``unknown`` for a
handoff never read) and records the error. A handoff the API no longer knows comes back ``unknown``
with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from triage.destinations.github import GitHubDestination
from triage.destinations.handoff import HandoffDestination, fail
from triage.destinations.hubspot import HubSpotDestination
from triage.destinations.zendesk import ZendeskDestination
from triage.models import parse_timestamp

BATCH = 100
OPEN_TICKET = {"new", "open", "pending", "hold"}
CONTACT_TO_DEAL = "deals"


@dataclass(frozen=True, slots=True)
class Read:
    """What one handoff's tool says now."""

    state: str
    external_state: str | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    comments: int | None = None
    note: str | None = None  # why a read gave ``unknown``


Target = dict[str, Any]
Reader = Callable[[Any, Sequence[Target]], dict[str, Read]]


def _batches(values: Sequence[str], size: int = BATCH) -> Iterator[list[str]]:
    distinct = list(dict.fromkeys(values))
    for start in range(0, len(distinct), size):
        yield distinct[start : start + size]


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value) / 1000, UTC)  # HubSpot's epoch milliseconds
    return parse_timestamp(value)


def _gone(what: str) -> Read:
    return Read("unknown", note=f"{what} not found (deleted, merged or no longer visible)")


def _each(
    targets: Sequence[Target],
    records: dict[str, dict[str, Any]],
    what: str,
    read: Callable[[Target, dict[str, Any]], Read],
) -> dict[str, Read]:
    """Each handoff's outcome from its target's record; ``unknown`` when the tool has none."""
    out: dict[str, Read] = {}
    for t in targets:
        tid = str(t["target_id"])
        record = records.get(tid)
        out[t["key"]] = _gone(f"{what} {tid}") if record is None else read(t, record)
    return out


# ---------------------------------------------------------------------------------- zendesk
def read_zendesk(dest: ZendeskDestination, targets: Sequence[Target]) -> dict[str, Read]:
    """Ticket status, first public reply and solve time of each handoff's ticket."""
    tickets: dict[str, dict[str, Any]] = {}
    metrics: dict[str, dict[str, Any]] = {}
    for ids in _batches([str(t["target_id"]) for t in targets]):
        resp = dest.call(
            "GET",
            "/api/v2/tickets/show_many.json",
            params={"ids": ",".join(ids), "include": "metric_sets"},
        )
        if resp.status_code != 200:
            raise fail(f"zendesk {dest.name}", resp)
        body = resp.json()
        tickets.update({str(t["id"]): t for t in body.get("tickets") or []})
        metrics.update({str(m["ticket_id"]): m for m in body.get("metric_sets") or []})

    def read(ticket: dict[str, Any]) -> Read:
        status = str(ticket.get("status"))
        metric = metrics.get(str(ticket["id"])) or {}
        reply = (metric.get("reply_time_in_minutes") or {}).get("calendar")
        created = _time(ticket.get("created_at"))
        first = created + timedelta(minutes=int(reply)) if created and reply is not None else None
        solved = _time(metric.get("solved_at")) if status in ("solved", "closed") else None
        return Read(
            state="open" if status in OPEN_TICKET else "resolved" if solved else "unknown",
            external_state=status,
            first_response_at=first,
            resolved_at=solved,
            note=None if status in OPEN_TICKET or solved else f"status {status} without solved_at",
        )

    return _each(targets, tickets, "ticket", lambda _t, ticket: read(ticket))


# ----------------------------------------------------------------------------------- github
def _first_reply(dest: GitHubDestination, number: str) -> datetime | None:
    resp = dest.call(
        "GET", f"/repos/{dest.repo}/issues/{number}/comments", params={"per_page": 100}
    )
    if resp.status_code != 200:
        raise fail(f"github {dest.name}", resp)
    for comment in resp.json():
        if "<!-- triage-key:" not in str(comment.get("body") or ""):
            return _time(comment.get("created_at"))
    return None


def read_github(dest: GitHubDestination, targets: Sequence[Target]) -> dict[str, Read]:
    """Issue state, close reason, comment count and first reply of each handoff's issue."""
    # The destination's own listing of the tracker's issues (its label, 100 a page, bounded).
    issues = {str(i["number"]): i for i in dest._issues()}
    firsts: dict[str, datetime | None] = {}

    def read(target: Target, issue: dict[str, Any]) -> Read:
        number = str(issue["number"])
        comments = int(issue.get("comments") or 0)
        first = target.get("first_response_at")
        if first is None and comments:
            if number not in firsts:
                firsts[number] = _first_reply(dest, number)
            first = firsts[number]
        closed = issue.get("state") == "closed"
        reason = issue.get("state_reason")
        state = "open" if not closed else "rejected" if reason == "not_planned" else "resolved"
        return Read(
            state=state,
            external_state=f"{issue.get('state')}:{reason}" if reason else str(issue.get("state")),
            first_response_at=first,
            resolved_at=_time(issue.get("closed_at")) if closed else None,
            comments=comments,
        )

    return _each(targets, issues, "issue", read)


# ---------------------------------------------------------------------------------- hubspot
def _associations(
    dest: HubSpotDestination, source: str, to: str, ids: Sequence[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for batch in _batches(ids):
        resp = dest.call(
            "POST",
            f"/crm/v4/associations/{source}/{to}/batch/read",
            json={"inputs": [{"id": i} for i in batch]},
        )
        # 207: some inputs had no association (HubSpot reports them as errors, not a failure).
        if resp.status_code not in (200, 207):
            raise fail(f"hubspot {dest.name}", resp)
        for row in resp.json().get("results") or []:
            found[str(row["from"]["id"])] = [str(x["toObjectId"]) for x in row.get("to") or []]
    return found


def _objects(
    dest: HubSpotDestination, obj: str, ids: Sequence[str], props: list[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for batch in _batches(ids):
        resp = dest.call(
            "POST",
            f"/crm/v3/objects/{obj}/batch/read",
            json={"properties": props, "inputs": [{"id": i} for i in batch]},
        )
        if resp.status_code not in (200, 207):
            raise fail(f"hubspot {dest.name}", resp)
        found.update(
            {str(r["id"]): r.get("properties") or {} for r in resp.json().get("results") or []}
        )
    return found


def _deal_read(deals: list[dict[str, Any]], stage: str | None) -> Read:
    if not deals:
        return Read("open", external_state=f"contact:{stage}")
    won = [d for d in deals if str(d.get("dealstage")) == "closedwon"]
    lost = [d for d in deals if str(d.get("dealstage")) == "closedlost"]
    first = min((t for d in deals if (t := _time(d.get("createdate")))), default=None)
    if won:
        return Read("won", "deal:closedwon", first, _time(won[0].get("closedate")))
    if lost and len(lost) == len(deals):
        return Read("lost", "deal:closedlost", first, _time(lost[0].get("closedate")))
    open_stage = next(str(d.get("dealstage")) for d in deals if d not in lost)
    return Read("open", f"deal:{open_stage}", first)


def read_hubspot(dest: HubSpotDestination, targets: Sequence[Target]) -> dict[str, Read]:
    """The contact's lifecycle stage and its deals' stages behind each handoff's note."""
    notes = [str(t["target_id"]) for t in targets]
    contact_of = {
        n: ids[0] for n, ids in _associations(dest, "notes", "contacts", notes).items() if ids
    }
    contacts = _objects(dest, "contacts", list(contact_of.values()), ["lifecyclestage"])
    deals_of = _associations(dest, "contacts", CONTACT_TO_DEAL, list(contacts))
    deal_ids = [d for ids in deals_of.values() for d in ids]
    deals = _objects(dest, "deals", deal_ids, ["dealstage", "createdate", "closedate"])
    out: dict[str, Read] = {}
    for t in targets:
        contact = contact_of.get(str(t["target_id"]))
        if contact is None or contact not in contacts:
            out[t["key"]] = _gone(f"note {t['target_id']}'s contact")
            continue
        mine = [deals[d] for d in deals_of.get(contact, []) if d in deals]
        out[t["key"]] = _deal_read(mine, contacts[contact].get("lifecyclestage"))
    return out


READERS: dict[str, Reader] = {
    "zendesk": read_zendesk,
    "github": read_github,
    "hubspot": read_hubspot,
}


def reader_for(dest: object) -> Reader | None:
    """The reader of a built destination; None for previews and systems without one."""
    if not isinstance(dest, HandoffDestination):
        return None
    return READERS.get(dest.system)
