"""A local webhook receiver that does what the README asks of real ones.

It verifies ``X-Triage-Signature`` (HMAC-SHA256 over ``"{timestamp}.{body}"``) in constant time,
rejects timestamps older than five minutes (401), de-duplicates by ``Idempotency-Key`` (a repeat is
answered 200 with the first receipt and not stored again), and answers ``GET /status/{key}`` with
200 or 404 for reconciliation.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.base import FakeApi, Reply, Request

MAX_SKEW_S = 300


@dataclass
class FakeWebhookReceiver(FakeApi):
    """State of the receiver: the handoffs it accepted, by idempotency key."""

    secret: str = "whsec-test"
    received: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0

    def authorized(self, req: Request) -> bool:
        """A fresh timestamp and a valid signature over it and the raw body."""
        ts = req.headers.get("x-triage-timestamp", "")
        sig = req.headers.get("x-triage-signature", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > MAX_SKEW_S:
            return False
        mac = hmac.new(self.secret.encode(), ts.encode() + b"." + req.body, hashlib.sha256)
        return hmac.compare_digest(sig, "sha256=" + mac.hexdigest())

    def unauthorized(self) -> Reply:
        """Bad or stale signature."""
        return 401, {"error": "invalid signature"}, {}

    def route(self, req: Request) -> Reply:
        """Accept a handoff once per key; answer status queries."""
        if req.method == "GET" and req.path.startswith("/status/"):
            key = req.path.rsplit("/", 1)[-1]
            if key in self.received:
                return 200, {"id": self.received[key]["id"], "key": key}, {}
            return 404, {"error": "unknown key"}, {}
        if req.method != "POST" or req.path != "/hooks/support":
            return 404, {"error": "not found"}, {}
        key = req.headers.get("idempotency-key")
        if not key:
            return 400, {"error": "Idempotency-Key header is required"}, {}
        doc = req.json
        if key in self.received:
            self.duplicates += 1
            return 200, {"id": self.received[key]["id"], "duplicate": True}, {}
        receipt = {"id": f"rcpt-{len(self.received) + 1}", "doc": doc}
        self.received[key] = receipt
        return 202, {"id": receipt["id"]}, {}


def start_fake_webhook() -> FakeWebhookReceiver:
    """Start the receiver on a random local port."""
    fake = FakeWebhookReceiver()
    fake.start()
    return fake
