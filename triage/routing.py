"""Routing: rules from the configuration send each classified item to the department that owns it.

Plain functions over Arrow batches, with no Prefect in sight, so they are tested directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa

from triage.config import Config, Rule
from triage.store import Store

# Route states. Review first is the default: marketing looks before a department is bothered.
AWAITING_REVIEW = "awaiting_review"
AUTO_HANDOFF = "auto_handoff"
RELEASED = "released"  # a reviewer confirmed or corrected it; the department's handoff is queued
SUPPRESSED = "suppressed"  # a reviewer marked it spam
ARCHIVED = "archived"  # `other`: kept and audited, handed to nobody

ROUTE_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("department", pa.string()),
        ("rule", pa.string()),
        ("state", pa.string()),
        ("routed_at", pa.timestamp("us", tz="UTC")),
    ]
)
OUTBOX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("item_id", pa.string()),
        ("destination", pa.string()),
        ("kind", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def delivery_key(item_id: str, destination: str, kind: str) -> str:
    """The idempotency key of one delivery: the same item, destination and kind is sent once."""
    return hashlib.blake2b(
        f"{item_id}\x1f{destination}\x1f{kind}".encode(), digest_size=12
    ).hexdigest()


def match(rule: Rule, source: str, text_lower: str, label: str, score: float) -> bool:
    """True when every condition the rule sets holds for the item."""
    if rule.label is not None and rule.label != label:
        return False
    if rule.source is not None and rule.source != source:
        return False
    if rule.min_score is not None and score < rule.min_score:
        return False
    return not rule.keywords or any(k in text_lower for k in rule.keywords)


def auto_handoff(
    config: Config, department: str, label: str, score: float, needs_review: bool
) -> bool:
    """Whether an item goes to its department without waiting for marketing's review.

    Items flagged for review always wait. Otherwise the per-label setting decides (``true``,
    ``false`` or a minimum score), and a label without one follows its department's
    ``auto_handoff``.
    """
    if needs_review:
        return False
    rule = config.auto_handoff.get(label)
    if rule is None:
        return config.departments[department].auto_handoff
    if isinstance(rule, bool):
        return rule
    return score >= rule


def handoff_destinations(config: Config, department: str) -> list[str]:
    """Every destination a department's handoff goes to: its own plus any ``also`` ones."""
    dept = config.departments[department]
    return [d for d in (dept.destination, *dept.also) if d]


def route_batch(config: Config, batch: pa.RecordBatch | pa.Table) -> tuple[pa.Table, pa.Table]:
    """Route a batch of classified items and build their outbox rows.

    Args:
        config: The configuration (rules, departments, review destination).
        batch: Columns ``item_id, source, text, label, score, needs_review``.

    Returns:
        ``(routes, outbox)`` Arrow tables ready for :meth:`Store.insert_routes`.
    """
    cols = batch.to_pydict()
    now = datetime.now(UTC)
    routes: dict[str, list[object]] = {name: [] for name in ROUTE_SCHEMA.names}
    outbox: dict[str, list[object]] = {name: [] for name in OUTBOX_SCHEMA.names}
    rules: Sequence[Rule] = config.rules
    # Keyword rules need lower-cased text; skip the work entirely when no rule uses keywords.
    needs_text = any(r.keywords for r in rules)
    review_dest = config.review_destination

    def enqueue(item_id: str, destination: str, kind: str) -> None:
        outbox["key"].append(delivery_key(item_id, destination, kind))
        outbox["item_id"].append(item_id)
        outbox["destination"].append(destination)
        outbox["kind"].append(kind)
        outbox["created_at"].append(now)

    for item_id, source, text, label, score, needs_review in zip(
        cols["item_id"],
        cols["source"],
        cols["text"],
        cols["label"],
        cols["score"],
        cols["needs_review"],
        strict=True,
    ):
        text_lower = text.lower() if needs_text else ""
        rule = next((r for r in rules if match(r, source, text_lower, label, score)), None)
        department = rule.department if rule else None
        if department is None:
            state = ARCHIVED
        else:
            auto = auto_handoff(config, department, label, score, needs_review)
            state = AUTO_HANDOFF if auto else AWAITING_REVIEW
        routes["item_id"].append(item_id)
        routes["department"].append(department)
        routes["rule"].append(rule.name if rule else "unmatched")
        routes["state"].append(state)
        routes["routed_at"].append(now)
        if department is None:
            continue
        if review_dest:
            enqueue(item_id, review_dest, "review")
        if state == AUTO_HANDOFF:
            for dest in handoff_destinations(config, department):
                enqueue(item_id, dest, "handoff")
    return (
        pa.Table.from_pydict(routes, schema=ROUTE_SCHEMA),
        pa.Table.from_pydict(outbox, schema=OUTBOX_SCHEMA),
    )


def release(store: Store, config: Config, item_id: str, department: str | None, rule: str) -> int:
    """Hand an item to ``department`` after review: update its route and queue the handoff.

    The handoff's idempotency key depends only on item, destination and kind, so releasing the same
    item twice (two reviewers, a retried request) queues one delivery.

    Args:
        store: The open store.
        config: The configuration (departments and their destinations).
        item_id: The item.
        department: The department now owning it; None archives it without a handoff.
        rule: Why, for the audit trail (e.g. ``review:confirm``).

    Returns:
        How many deliveries were newly queued (0 when already queued; one per destination).
    """
    if department is None:
        store.set_route(item_id, None, ARCHIVED, rule)
        return 0
    store.set_route(item_id, department, RELEASED, rule)
    dests = handoff_destinations(config, department)
    if not dests:
        return 0
    now = datetime.now(UTC)
    row = {
        "key": [delivery_key(item_id, dest, "handoff") for dest in dests],
        "item_id": [item_id] * len(dests),
        "destination": dests,
        "kind": ["handoff"] * len(dests),
        "created_at": [now] * len(dests),
    }
    return store.enqueue(pa.Table.from_pydict(row, schema=OUTBOX_SCHEMA))
