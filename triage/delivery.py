"""The durable outbox: deliver each queued message once, reconcile after crashes, back off on errors.

The crash-safety protocol (README, "How it works"): a delivery is marked ``sending`` and committed
before the call out; a crash after the destination accepted it leaves ``sending`` behind, and the
next drain asks the destination (``lookup``) for the key instead of sending it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from triage.config import Config
from triage.destinations import DeliveryError, Destination
from triage.http import JITTER
from triage.privacy.policy import PrivacyPolicy
from triage.store import Store

log = logging.getLogger("triage.delivery")


@dataclass(slots=True)
class DeliveryReport:
    """What one drain of the outbox did."""

    sent: int = 0
    previewed: int = 0
    reconciled: int = 0
    failed: int = 0
    dead: int = 0
    # Destinations that wrote previews in this drain (the run summary names only these).
    previewed_by: set[str] = field(default_factory=set)
    # Per destination, the failures of this drain and the first one's error: "failed 396" alone
    # does not say that every preview met a folder nobody may write, or a refused token.
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fail(self, destination: str, error: str, *, dead: bool) -> None:
        """Count one failed delivery (dead-lettered or to be retried) and keep its first error."""
        self.dead += dead
        self.failed += not dead
        seen = self.failures.setdefault(destination, {"failed": 0, "dead": 0, "error": error})
        seen["dead" if dead else "failed"] += 1

    def as_dict(self) -> dict[str, int]:
        """Plain dict for summaries and JSON."""
        return {
            "sent": self.sent,
            "previewed": self.previewed,
            "reconciled": self.reconciled,
            "failed": self.failed,
            "dead": self.dead,
        }


def backoff_seconds(attempts: int, base: float = 30.0, cap: float = 3600.0) -> float:
    """Exponential backoff with jitter for the next attempt of a failed delivery.

    After the n-th failed attempt (a send or, for a delivery left ``sending``, a lookup) the
    delivery is due again after ``base * 2 ** (n - 1)`` seconds, at most ``cap``, times a random
    factor in [0.5, 1): 15-30 s after the first failure, 30-60 s after the second, and so on.
    """
    return min(cap, base * 2 ** max(0, attempts - 1)) * (0.5 + JITTER.random() / 2)


def _mark_done(store: Store, dest: Destination, key: str, ref: str) -> None:
    if dest.preview:
        store.mark_previewed(key, ref)
    else:
        store.mark_sent(key, ref)


def drain(
    store: Store,
    config: Config,
    destinations: dict[str, Destination],
    *,
    limit: int,
    batch: int = 200,
) -> DeliveryReport:
    """Send due outbox rows, oldest first, each at most once.

    The state goes to ``sending`` (committed) before the call out; a crash after the destination
    accepted a message therefore leaves ``sending`` behind, and the next drain asks the destination
    (``lookup``) whether it already has the key instead of sending again.

    A failed delivery keeps its error in ``last_error``: a destination's own
    :class:`~triage.destinations.DeliveryError` as written, any other exception as
    ``"<ExceptionType>: <message>"``; a failed lookup as ``"lookup: <ExceptionType>: <message>"``.
    Each failure backs off as :func:`backoff_seconds` says.

    Args:
        store: The open store.
        config: Configuration (max attempts).
        destinations: From :func:`triage.destinations.build_destinations`.
        limit: Upper bound of deliveries this call (no default here: the caller's, e.g.
            ``deliver_pending``'s 10,000 per run, is the one that applies).
        batch: Rows fetched from the outbox at a time.

    Returns:
        Counts of what happened.
    """
    report = DeliveryReport()
    # Every item leaves the store redacted for the destination it goes to (README, "Privacy").
    policy = PrivacyPolicy(config)
    done = 0
    skip: set[str] = set()
    # Handoff destinations keep their own records (tickets, groups, testimonials) in the store.
    for destination in destinations.values():
        destination.bind(store, destinations)
    while done < limit:
        rows = [r for r in store.due_deliveries(batch + len(skip)) if r["key"] not in skip]
        if not rows:
            break
        context = store.delivery_context([r["item_id"] for r in rows])
        for row in rows[: limit - done]:
            done += 1
            key, kind = row["key"], row["kind"]
            dest = destinations.get(row["destination"])
            item = context.get(row["item_id"])
            if dest is None or item is None:
                # Dead at once, with a reason an operator can act on; announced like any death.
                reason = (
                    f"destination '{row['destination']}' is not configured (removed or renamed?); "
                    f"restore it, then `triage outbox retry --destination {row['destination']}`"
                    if dest is None
                    else "item not found"
                )
                store.mark_failed(key, reason, 0, 0)
                report.fail(row["destination"], reason, dead=True)
                continue
            item = policy.item(item, dest.name)
            if row["state"] == "sending":
                try:
                    ref = dest.lookup(key, item)
                except Exception as exc:  # noqa: BLE001 - reported per delivery, never a crash
                    # Unknown whether the crashed attempt got through: stay `sending`, so the next
                    # attempt looks again instead of sending what may already be there.
                    permanent = isinstance(exc, DeliveryError) and exc.permanent
                    error = f"lookup: {type(exc).__name__}: {exc}"
                    state = store.mark_lookup_failed(
                        key,
                        error,
                        backoff_seconds(int(row["attempts"]) + 1),
                        0 if permanent else config.max_attempts,
                    )
                    skip.add(key)
                    report.fail(dest.name, error, dead=state == "dead")
                    continue
                if ref is not None:
                    _mark_done(store, dest, key, ref)
                    report.reconciled += 1
                    continue
            try:
                store.mark_sending(key)
                ref = dest.send(key, kind, item)
            except Exception as exc:  # noqa: BLE001 - network trouble the client's retries could not absorb
                attempts = int(row["attempts"]) + 1
                permanent = isinstance(exc, DeliveryError) and exc.permanent
                error = (
                    str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
                )
                state = store.mark_failed(
                    key, error, backoff_seconds(attempts), 0 if permanent else config.max_attempts
                )
                skip.add(key)
                report.fail(dest.name, error, dead=state == "dead")
                continue
            _mark_done(store, dest, key, ref)
            if dest.preview:
                report.previewed += 1
                report.previewed_by.add(dest.name)
            else:
                report.sent += 1
    return report
