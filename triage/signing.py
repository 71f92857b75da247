"""The project's request signature: HMAC-SHA256 over ``"{timestamp}.{raw body}"``.

Used both ways: the ``webhook`` destination signs what it sends, and the web-form intake checks
what it receives (README, "`webhook` (web-form intake)" and "`webhook` (signed JSON)"). Signing the
timestamp together with the body is what makes a replay window hold: a captured request cannot be
sent again later with a fresh timestamp.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Triage-Signature"
TIMESTAMP_HEADER = "X-Triage-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the signature header value for ``body`` signed at ``timestamp``.

    Args:
        secret: The shared secret.
        timestamp: Unix seconds as sent in ``X-Triage-Timestamp``.
        body: The exact request body bytes.

    Returns:
        ``sha256=<hex>``.
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
