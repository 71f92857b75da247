"""Sales handoffs as HubSpot CRM v3 records: the author as a contact, the mention as a note on it.

The contact is found by email when the author's handle is one (a single plausible address, and
not from a social source whose handles only look like addresses: see
:mod:`triage.destinations.requester`), else by a custom contact property holding ``source:handle``
(``handle_property``, default ``triage_handle``); it is created when missing. The note carries
the delivery key in a custom note property (``key_property``, default ``triage_delivery_key``),
which is how ``lookup`` finds an earlier delivery: HubSpot has no idempotency keys. Both
properties must exist in the account (Settings > Properties).
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from triage.config import Config, DestinationConfig
from triage.destinations.base import Destination
from triage.destinations.handoff import HandoffDestination, describe, fail, http_client
from triage.destinations.preview import build as preview
from triage.destinations.requester import author_email, author_name, source_connector
from triage.limits import HUBSPOT_NOTE_BODY, fit
from triage.models import DeliveryItem
from triage.secrets import secret

# HubSpot's built-in association type "note to contact".
NOTE_TO_CONTACT = 202
_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


class HubSpotDestination(HandoffDestination):
    """Upserts a contact and adds a note per sales handoff."""

    system = "hubspot"

    def __init__(self, dest: DestinationConfig, config: Config, token: str) -> None:
        """Create the client for ``base_url`` (default HubSpot's API) with a private app token."""
        super().__init__(dest, config)
        base = str(dest.settings.get("base_url") or "https://api.hubapi.com")
        self._client = http_client(
            base, dest.settings, headers={"Authorization": f"Bearer {token}"}
        )
        self.handle_property = str(dest.settings.get("handle_property", "triage_handle"))
        self.key_property = str(dest.settings.get("key_property", "triage_delivery_key"))
        self.portal_id = dest.settings.get("portal_id")

    def _search(self, obj: str, prop: str, value: str) -> str | None:
        resp = self.call(
            "POST",
            f"/crm/v3/objects/{obj}/search",
            json={
                "filterGroups": [
                    {"filters": [{"propertyName": prop, "operator": "EQ", "value": value}]}
                ],
                "properties": [prop],
                "limit": 1,
            },
        )
        if resp.status_code != 200:
            raise fail(f"hubspot {self.name}", resp)
        results = resp.json().get("results") or []
        return str(results[0]["id"]) if results else None

    def _contact(self, item: DeliveryItem) -> str:
        handle = str(item.author.handle or "").strip()
        # HubSpot refuses a malformed contact e-mail (INVALID_EMAIL), and a fediverse handle
        # taken for one would file the lead under a mailbox nobody reads.
        address = author_email(item, source_connector(self.config, item.source))
        email = address.email.lower() if address else None
        who = item.author_key
        found = (
            self._search("contacts", "email", email)
            if email
            else self._search("contacts", self.handle_property, who)
        )
        if found:
            return found
        if address:
            name = author_name(item, address)
        else:
            name = str(item.author.name or handle or "unknown").strip()
        first, _, last = name.partition(" ")
        props: dict[str, str] = {
            "firstname": first,
            "lastname": last,
            "lifecyclestage": "lead",
            self.handle_property: who,
        }
        if email:
            props["email"] = email
        if item.author.url:
            props["website"] = str(item.author.url)
        resp = self.call("POST", "/crm/v3/objects/contacts", json={"properties": props})
        if resp.status_code == 409:
            # Created meanwhile (another run, or by hand): HubSpot names the existing record.
            match = _EXISTING_ID.search(resp.text)
            if match:
                return match.group(1)
        if resp.status_code != 201:
            raise fail(f"hubspot {self.name}", resp)
        return str(resp.json()["id"])

    def _note_body(self, item: DeliveryItem) -> str:
        # hs_note_body is HTML: everything from the public is escaped, then the text is cut so the
        # whole body (tags and entities included) fits HubSpot's limit.
        context = [fit(line, 2000, html.escape) for line in describe(item)]
        tail = "</p><p>" + "</p><p>".join(context) + "</p>"
        text = fit(item.text, HUBSPOT_NOTE_BODY - len(tail) - len("<p>"), html.escape)
        return "<p>" + text + tail

    def record_url(self, contact_id: str) -> str | None:
        """The contact's page in HubSpot, when ``portal_id`` is configured."""
        if not self.portal_id:
            return None
        return f"https://app.hubspot.com/contacts/{self.portal_id}/record/0-1/{contact_id}"

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Find or create the contact, then add the note associated with it."""
        earlier = self.seen_before(key, item)
        if earlier:
            return earlier
        self.store.begin_handoff(
            key, item.id, self.name, self.system, "note", author_key=item.author_key
        )
        contact_id = self._contact(item)
        created = item.created_at
        when = created if isinstance(created, datetime) else datetime.now(UTC)
        resp = self.call(
            "POST",
            "/crm/v3/objects/notes",
            json={
                "properties": {
                    "hs_timestamp": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "hs_note_body": self._note_body(item),
                    self.key_property: key,
                },
                "associations": [
                    {
                        "to": {"id": contact_id},
                        "types": [
                            {
                                "associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": NOTE_TO_CONTACT,
                            }
                        ],
                    }
                ],
            },
            # A timed-out create may have happened: the next attempt searches before posting.
            idempotent=False,
        )
        if resp.status_code != 201:
            raise fail(f"hubspot {self.name}", resp)
        return self.finish(key, str(resp.json()["id"]), self.record_url(contact_id))

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Search notes for the delivery key."""
        note_id = self._search("notes", self.key_property, key)
        if note_id is None:
            return None
        if self.store.handoff_ref(key) is None:
            self.store.begin_handoff(
                key, item.id, self.name, self.system, "note", author_key=item.author_key
            )
        return self.finish(key, note_id, None)


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``hubspot`` destination (JSON previews without a token)."""
    token = secret(dest.settings, "token_env", "HUBSPOT_TOKEN", "token_secret")
    if not token:
        return preview(dest, config)
    return HubSpotDestination(dest, config, token)
