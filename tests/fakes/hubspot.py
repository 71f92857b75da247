"""A local fake of the HubSpot CRM v3 objects API (contacts and notes, search, associations).

Faithful where our code depends on it: a private-app bearer token (401 with HubSpot's error shape
otherwise), ``{"properties": {...}}`` bodies validated against the account's defined properties
(unknown ones are a 400 ``VALIDATION_ERROR``, as in HubSpot), unique contact emails (409
``Contact already exists. Existing ID: N``), ``hs_timestamp`` required on notes, note-to-contact
associations (type 202) that must point at an existing contact, and the search endpoint with
``filterGroups`` / ``EQ`` filters; a note body over 65,536 characters is a 400.
"""

from __future__ import annotations

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
}
NOTE_TO_CONTACT = 202
# HubSpot documents hs_note_body as holding at most 65,536 characters.
MAX_NOTE_BODY = 65_536


@dataclass
class FakeHubSpot(FakeApi):
    """State of the fake portal."""

    token: str = "pat-na1-test-token"
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"contacts": {}, "notes": {}}
    )
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

    def route(self, req: Request) -> Reply:
        """Route one request."""
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
