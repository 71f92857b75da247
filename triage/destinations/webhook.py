"""The fallback handoff: a signed JSON POST to any URL (a helpdesk without an integration, a queue).

The body is the item's context as JSON. Headers:

* ``X-Triage-Timestamp``: Unix seconds when the request was signed;
* ``X-Triage-Signature``: ``sha256=`` + hex HMAC-SHA256 of ``"{timestamp}.{body}"`` with the shared
  secret. Receivers recompute it over the raw body, compare in constant time and reject stale
  timestamps (replays);
* ``Idempotency-Key``: the delivery key. Receivers must treat a repeated key as already handled:
  that is what makes retries safe.

``lookup`` needs ``status_url`` (``{key}`` is replaced): 200 means the receiver has the key, 404
means it does not. Without it a handoff left mid-send by a crash cannot be reconciled, so it is sent
again and the receiver's de-duplication by key keeps it single.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx

from triage.config import Config, DestinationConfig
from triage.destinations.base import Destination
from triage.destinations.handoff import HandoffDestination, fail, http_client
from triage.destinations.preview import build as preview
from triage.models import DeliveryItem
from triage.secrets import secret
from triage.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign


def payload(key: str, kind: str, item: DeliveryItem, department: str) -> dict[str, Any]:
    """The JSON document a webhook receives."""
    created = item.created_at
    return {
        "idempotency_key": key,
        "kind": kind,
        "department": department,
        "item": {
            "id": item.id,
            "source": item.source,
            "source_type": item.source_type,
            "url": item.url,
            "text": item.text,
            "created_at": created.isoformat() if isinstance(created, datetime) else created,
            "author": {
                "handle": item.author.handle,
                "name": item.author.name,
                "url": item.author.url,
                "followers": item.author.followers,
                "key": item.author_key,
            },
        },
        "classification": {
            "label": item.label,
            "labels": list(item.labels),
            "score": item.score,
            "scores": dict(item.scores),
            "needs_review": item.needs_review,
        },
    }


def _receiver_id(resp: httpx.Response) -> str | None:
    """The ``id`` a receiver answered in a JSON body, if any."""
    if resp.headers.get("content-type", "").startswith("application/json"):
        return str((resp.json() or {}).get("id") or "") or None
    return None


class WebhookDestination(HandoffDestination):
    """POSTs a signed JSON document per handoff."""

    system = "webhook"

    def __init__(self, dest: DestinationConfig, config: Config, secret: str) -> None:
        """Create the destination for ``settings.url`` signing with ``secret``."""
        super().__init__(dest, config)
        self.url = str(dest.settings["url"])
        self.status_url = dest.settings.get("status_url")
        self._secret = secret
        self._client = http_client("", dest.settings)
        # A receiver's ticket number is not known here, so there is nothing to say in a thread.
        self.thread_note = bool(dest.settings.get("thread_note", False))

    def _post(self, doc: dict[str, Any], idempotency_key: str) -> str | None:
        """Sign and POST one JSON document; return the receiver's ``id`` if it answers one."""
        body = json.dumps(doc, ensure_ascii=False, default=str).encode()
        ts = str(int(time.time()))
        resp = self.call(
            "POST",
            self.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": idempotency_key,
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign(self._secret, ts, body),
            },
        )
        if resp.status_code >= 300:
            raise fail(f"webhook {self.name}", resp)
        return _receiver_id(resp)

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Sign and POST the payload; the receiver's ``id`` (if it answers one) is the reference."""
        self.store.begin_handoff(key, item.id, self.name, self.system, "post")
        ref_id = self._post(payload(key, kind, item, self.department), key)
        return self.finish(key, ref_id or key, None)

    def post_alert(self, row: dict[str, Any], text: str) -> str:
        """POST a dead-letter alert (``kind: dead_letter``), signed like every handoff.

        Its idempotency key names the delivery and the moment it died, so a receiver keeps one
        alert per death even when an announcement is repeated after a crash.
        """
        died = row.get("died_at")
        died_at = died.isoformat() if isinstance(died, datetime) else str(died)
        key = f"{row['key']}:dead:{died_at}"
        doc = {
            "idempotency_key": key,
            "kind": "dead_letter",
            "text": text,
            "delivery": {
                "key": row["key"],
                "item_id": row["item_id"],
                "destination": row["destination"],
                "kind": row["kind"],
                "attempts": row["attempts"],
                "last_error": row.get("last_error"),
                "died_at": died_at,
            },
        }
        return f"webhook:{self._post(doc, key) or key}"

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Ask ``status_url`` whether the receiver has the key (None without one: send again)."""
        if not self.status_url:
            return None
        ts = str(int(time.time()))
        resp = self.call(
            "GET",
            str(self.status_url).replace("{key}", key),
            # Signed over an empty body, so the receiver can tell us from anyone probing keys.
            headers={TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(self._secret, ts, b"")},
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise fail(f"webhook {self.name}", resp)
        if self.store.handoff_ref(key) is None:
            self.store.begin_handoff(key, item.id, self.name, self.system, "post")
        # The receiver's own id, as a send would have recorded it; the key only if it names none.
        return self.finish(key, _receiver_id(resp) or key, None)


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``webhook`` destination (JSON previews without a signing secret)."""
    if not dest.settings.get("url"):
        raise ValueError(f"destination '{dest.name}': webhook needs 'url'")
    key = secret(dest.settings, "secret_env", "TRIAGE_WEBHOOK_SECRET", "secret_block")
    if not key:
        return preview(dest, config)
    return WebhookDestination(dest, config, key)
