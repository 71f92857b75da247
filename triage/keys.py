"""Stable keys: the one way the project derives ids and idempotency keys from their parts.

Item ids, outbox keys, decision ids, quarantine keys, batch keys and feature-group ids are all
BLAKE2b digests of their parts joined by the unit separator (``\\x1f``, which no part contains).
They are stored, so the scheme never changes: ``tests/test_keys.py`` pins known values.
"""

from __future__ import annotations

import hashlib


def stable_key(*parts: str, size: int = 12, errors: str = "strict") -> str:
    """The hex digest (``2 * size`` characters) of ``parts`` joined by ``\\x1f``.

    Args:
        *parts: What the key is made of, in a fixed order.
        size: Digest size in bytes: 10 for item ids, 8 for feature groups, 12 for the rest.
        errors: How text that UTF-8 cannot encode (a lone surrogate) is encoded: item ids keep
            it (``surrogatepass``), quarantine keys replace it (``replace``).

    Returns:
        Lower-case hex; the same parts always give the same key.
    """
    data = "\x1f".join(parts).encode("utf-8", errors)
    return hashlib.blake2b(data, digest_size=size).hexdigest()
