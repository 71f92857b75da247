"""A local fake of the HubSpot CRM v3 objects API (contacts and notes, search, associations).

Faithful where our code depends on it: a private-app bearer token (401 with HubSpot's error shape
otherwise), ``{"properties": {...}}`` bodies validated against the account's defined properties
(unknown ones are a 400 ``VALIDATION_ERROR``, as in HubSpot), unique contact emails (409
``Contact already exists. Existing ID: N``), ``hs_timestamp`` required on notes, note-to-contact
associations (type 202) that must point at an existing contact, and the search endpoint with
``filterGroups`` / ``EQ`` filters; a note body over 65,536 characters is a 400, and so is a contact
``email`` that is not a well-formed address (``INVALID_EMAIL`` inside the ``VALIDATION_ERROR``
message, as HubSpot answers; HubSpot checks the format only: RFC 2822, no quoted local part, a
domain ending in a real top-level domain, approximated here as two or more letters). For the
read-back: the objects batch read (``POST /crm/v3/objects/{type}/batch/read``, at most 100
inputs; unknown ids make a 207 with ``errors``), the associations v4 batch read
(``POST /crm/v4/associations/{from}/{to}/batch/read``, ``toObjectId`` per association; inputs
without any are reported in ``errors`` with a 207) and deals (``dealstage`` of the default pipeline,
``closedate``, ``createdate``), which :meth:`FakeHubSpot.add_deal` creates as a salesperson would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeApi, Reply, Request

DEFINED = {
    "contacts": {
        "email",
        "firstname",
        "lastname",
        "website",
        "lifecyclestage",
        "hs_lead_status",
        "triage_handle",
    },
    "notes": {"hs_timestamp", "hs_note_body", "hubspot_owner_id", "triage_delivery_key"},
    "deals": {"dealname", "dealstage", "pipeline", "amount", "closedate"},
}
DEAL_TO_CONTACT = 3
CONTACT_TO_DEAL = 4
MAX_BATCH_READ = 100
MAX_ASSOCIATION_READ = 1000
NOTE_TO_CONTACT = 202
# HubSpot documents hs_note_body as holding at most 65,536 characters.
MAX_NOTE_BODY = 65_536
# The format HubSpot accepts for a contact's email: a dot-atom local part (quoted ones refused)
# and a host name whose last label is a top-level domain.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_VALID_EMAIL = re.compile(
    rf"{_ATOM}(?:\.{_ATOM})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{{2,}}"
)


@dataclass
class FakeHubSpot(FakeApi):
    """State of the fake portal."""

    token: str = "pat-na1-test-token"
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"contacts": {}, "notes": {}, "deals": {}}
    )
    deal_contacts: list[tuple[str, str]] = field(default_factory=list)  # (deal id, contact id)
    associations: list[tuple[str, str, int]] = field(default_factory=list)
    next_id: int = 5000

    def authorized(self, req: Request) -> bool:
        """A private app token as a bearer token."""
        return req.headers.get("authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> Reply:
        """HubSpot's answer to a bad token."""
        return (
            401,
            {
                "status": "error",
                "message": "Authentication credentials not found.",
                "category": "INVALID_AUTHENTICATION",
            },
            {},
        )

    @staticmethod
    def _error(status: int, message: str, category: str) -> Reply:
        return status, {"status": "error", "message": message, "category": category}, {}

    def add_deal(self, contact_id: str, stage: str, created: str, closed: str | None = None) -> str:
        """A salesperson opens a deal for the contact (``closedwon``/``closedlost`` close it)."""
        self.next_id += 1
        oid = str(self.next_id)
        self.objects["deals"][oid] = {
            "dealname": f"deal {oid}",
            "dealstage": stage,
            "pipeline": "default",
            "createdate": created,
            "closedate": closed,
        }
        self.deal_contacts.append((oid, contact_id))
        return oid

    def _batch_read(self, obj: str, body: dict[str, Any]) -> Reply:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_BATCH_READ:
            return self._error(400, "inputs: 1 to 100 objects", "VALIDATION_ERROR")
        props = [str(p) for p in body.get("properties") or []]
        results, missing = [], []
        for item in inputs:
            oid = str(item.get("id"))
            found = self.objects[obj].get(oid)
            if found is None:
                missing.append(oid)
                continue
            shown = {p: found.get(p) for p in props}
            shown.update(hs_object_id=oid, createdate=found.get("createdate"))
            results.append({"id": oid, "properties": shown, "archived": False})
        reply: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            reply["errors"] = [
                {"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing}}
            ]
        return (207 if missing else 200), reply, {}

    def _linked(self, source: str, to: str, oid: str) -> list[tuple[str, int]]:
        if (source, to) == ("notes", "contacts"):
            return [(c, NOTE_TO_CONTACT) for n, c, _ in self.associations if n == oid]
        if (source, to) == ("contacts", "deals"):
            return [(d, CONTACT_TO_DEAL) for d, c in self.deal_contacts if c == oid]
        if (source, to) == ("deals", "contacts"):
            return [(c, DEAL_TO_CONTACT) for d, c in self.deal_contacts if d == oid]
        return []

    def _associations(self, source: str, to: str, body: dict[str, Any]) -> Reply:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_ASSOCIATION_READ:
            return self._error(400, "inputs: 1 to 1000 objects", "VALIDATION_ERROR")
        results, none = [], []
        for item in inputs:
            oid = str(item.get("id"))
            linked = self._linked(source, to, oid)
            if not linked:
                none.append(oid)
                continue
            results.append(
                {
                    "from": {"id": oid},
                    "to": [
                        {
                            "toObjectId": int(target),
                            "associationTypes": [
                                {"category": "HUBSPOT_DEFINED", "typeId": kind, "label": None}
                            ],
                        }
                        for target, kind in linked
                    ],
                }
            )
        reply: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if none:
            reply["errors"] = [
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "context": {"fromObjectId": none},
                }
            ]
        return (207 if none else 200), reply, {}

    def route(self, req: Request) -> Reply:
        """Route one request."""
        if req.method == "POST":
            batch = re.fullmatch(r"/crm/v3/objects/(contacts|notes|deals)/batch/read", req.path)
            if batch:
                return self._batch_read(batch.group(1), req.json or {})
            assoc = re.fullmatch(r"/crm/v4/associations/(\w+)/(\w+)/batch/read", req.path)
            if assoc:
                return self._associations(assoc.group(1), assoc.group(2), req.json or {})
        m = re.fullmatch(r"/crm/v3/objects/(contacts|notes)(/search)?", req.path)
        if not m or req.method != "POST":
            return self._error(404, "Not found", "OBJECT_NOT_FOUND")
        obj = m.group(1)
        if m.group(2):
            return self._search(obj, req.json or {})
        return self._create(obj, req.json or {})

    def _search(self, obj: str, body: dict[str, Any]) -> Reply:
        groups = body.get("filterGroups") or []
        if not groups:
            return self._error(400, "filterGroups is required", "VALIDATION_ERROR")
        limit = int(body.get("limit", 10))
        if limit > 200:
            return self._error(400, "limit must be at most 200", "VALIDATION_ERROR")
        results = []
        for oid, props in self.objects[obj].items():
            for group in groups:
                filters = group.get("filters") or []
                if all(
                    f.get("operator") == "EQ"
                    and str(props.get(f["propertyName"], "")).lower() == str(f["value"]).lower()
                    for f in filters
                ):
                    results.append({"id": oid, "properties": props, "archived": False})
                    break
        return 200, {"total": len(results), "results": results[:limit]}, {}

    def _create(self, obj: str, body: dict[str, Any]) -> Reply:
        props = body.get("properties")
        if not isinstance(props, dict):
            return self._error(400, "properties is required", "VALIDATION_ERROR")
        unknown = sorted(set(props) - DEFINED[obj])
        if unknown:
            return self._error(
                400,
                f'Property values were not valid: Property "{unknown[0]}" does not exist',
                "VALIDATION_ERROR",
            )
        if obj == "contacts" and props.get("email"):
            email = str(props["email"])
            if not _VALID_EMAIL.fullmatch(email):
                problem = {
                    "isValid": False,
                    "message": f"Email address {email} is invalid",
                    "error": "INVALID_EMAIL",
                    "name": "email",
                }
                return self._error(
                    400,
                    f"Property values were not valid: {json.dumps([problem])}",
                    "VALIDATION_ERROR",
                )
        if obj == "contacts" and props.get("email"):
            for oid, existing in self.objects["contacts"].items():
                if str(existing.get("email", "")).lower() == str(props["email"]).lower():
                    return self._error(
                        409, f"Contact already exists. Existing ID: {oid}", "CONFLICT"
                    )
        if obj == "notes":
            if len(str(props.get("hs_note_body") or "")) > MAX_NOTE_BODY:
                return self._error(
                    400,
                    "Property values were not valid: hs_note_body exceeds the maximum length "
                    f"of {MAX_NOTE_BODY} characters",
                    "VALIDATION_ERROR",
                )
            if not props.get("hs_timestamp"):
                return self._error(
                    400,
                    "Property values were not valid: hs_timestamp is required",
                    "VALIDATION_ERROR",
                )
            for assoc in body.get("associations") or []:
                target = str((assoc.get("to") or {}).get("id"))
                types = [t.get("associationTypeId") for t in assoc.get("types") or []]
                if target not in self.objects["contacts"] or NOTE_TO_CONTACT not in types:
                    return self._error(400, "invalid association", "VALIDATION_ERROR")
        self.next_id += 1
        oid = str(self.next_id)
        self.objects[obj][oid] = dict(props)
        if obj == "notes":
            for assoc in body.get("associations") or []:
                self.associations.append((oid, str(assoc["to"]["id"]), NOTE_TO_CONTACT))
        return 201, {"id": oid, "properties": props, "archived": False}, {}


def start_fake_hubspot() -> FakeHubSpot:
    """Start the fake on a random local port."""
    fake = FakeHubSpot()
    fake.start()
    return fake
