"""Routing: rules from the configuration send each classified item to the department that owns it.

Plain functions over Arrow batches, with no Prefect in sight, so they are tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from triage.config import Config, Rule
from triage.keys import stable_key

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
    return stable_key(item_id, destination, kind)


def match(rule: Rule, source: str, text_lower: str, label: str, score: float) -> bool:
    """True when every condition the rule sets holds for the item."""
    if rule.label is not None and rule.label != label:
        return False
    if rule.source is not None and rule.source != source:
        return False
    if rule.min_score is not None and score < rule.min_score:
        return False
    return not rule.keywords or any(k in text_lower for k in rule.keywords)


def department_for(config: Config, source: str, text: str, label: str, score: float) -> str | None:
    """The department the first matching rule gives one item (None: nobody, or no rule matched).

    The per-item form of :func:`route_batch`'s column-wise rule matching (a test checks that the
    two agree); a reviewer's relabel is routed through it.
    """
    text_lower = text.lower()
    for rule in config.rules:
        if match(rule, source, text_lower, label, score):
            return rule.department
    return None


def auto_handoff(
    config: Config, department: str, label: str, score: float, needs_review: bool
) -> bool:
    """Whether an item goes to its department without waiting for marketing's review.

    Items flagged for review always wait. Otherwise the per-label setting decides (``true``,
    ``false`` or a minimum score), and a label without one follows its department's
    ``auto_handoff``.
    """
    return not needs_review and score >= handoff_min_score(config, department, label)


def handoff_min_score(config: Config, department: str, label: str) -> float:
    """The lowest score at which an unflagged item of ``label`` is handed off on its own.

    ``routing.auto_handoff.<label>`` as a score, ``true`` as minus infinity (always) and ``false``
    as infinity (never); a label without an entry follows its department's ``auto_handoff``.
    """
    rule = config.auto_handoff.get(label)
    if rule is None:
        rule = config.departments[department].auto_handoff
    if isinstance(rule, bool):
        return -math.inf if rule else math.inf
    return float(rule)


def handoff_destinations(config: Config, department: str) -> list[str]:
    """Every destination a department's handoff goes to: its own plus any ``also`` ones."""
    dept = config.departments[department]
    return [d for d in (dept.destination, *dept.also) if d]


def _rule_matches(
    rule: Rule,
    source: np.ndarray,
    text: pa.Array,
    label: np.ndarray,
    score: np.ndarray,
    candidates: np.ndarray,
) -> np.ndarray:
    """``match`` over a batch, for the rows in ``candidates`` (still unmatched); a bool mask."""
    hit = candidates.copy()
    if rule.label is not None:
        hit &= label == rule.label
    if rule.source is not None:
        hit &= source == rule.source
    if rule.min_score is not None:
        # Written as match() is, so a NaN score matches here exactly as it does there.
        hit &= ~(score < rule.min_score)
    if rule.keywords and hit.any():
        # Keywords need Python's own lower(), and only for the few rows still in question.
        rows = np.flatnonzero(hit)
        texts = text.take(pa.array(rows)).to_pylist()
        keywords = rule.keywords
        found = [any(k in t.lower() for k in keywords) for t in texts]
        hit[rows] = np.array(found, dtype=bool)
    return hit


def route_batch(config: Config, batch: pa.RecordBatch | pa.Table) -> tuple[pa.Table, pa.Table]:
    """Route a batch of classified items and build their outbox rows.

    Rules are applied column-wise, first matching rule wins (as :func:`match` decides it for one
    item); only keyword conditions look at single texts.

    Args:
        config: The configuration (rules, departments, review destination).
        batch: Columns ``item_id, source, text, label, score, needs_review``.

    Returns:
        ``(routes, outbox)`` Arrow tables ready for :meth:`Store.insert_routes`.
    """
    now = datetime.now(UTC)
    n = batch.num_rows
    item_ids = batch.column("item_id")
    source = np.asarray(batch.column("source").to_numpy(zero_copy_only=False), dtype=object)
    label = np.asarray(batch.column("label").to_numpy(zero_copy_only=False), dtype=object)
    score = np.asarray(batch.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    needs_review = np.asarray(
        batch.column("needs_review").to_numpy(zero_copy_only=False), dtype=bool
    )
    text = (
        pa.concat_arrays(batch.column("text").chunks)
        if isinstance(batch, pa.Table)
        else batch.column("text")
    )
    rules: Sequence[Rule] = config.rules
    # Index of the first matching rule per row; len(rules) means none matched.
    which = np.full(n, len(rules), dtype=np.int64)
    open_rows = np.ones(n, dtype=bool)
    for i, rule in enumerate(rules):
        if not open_rows.any():
            break
        hit = _rule_matches(rule, source, text, label, score, open_rows)
        which[hit] = i
        open_rows &= ~hit
    departments = [r.department for r in rules] + [None]
    rule_names = [r.name for r in rules] + ["unmatched"]
    department = np.array(departments, dtype=object)[which]
    routed = np.array([d is not None for d in departments], dtype=bool)[which]
    # auto_handoff()'s rule, column-wise: one minimum score per distinct (department, label).
    auto = np.zeros(n, dtype=bool)
    candidates = routed & ~needs_review
    if candidates.any():
        pairs = {(department[i], label[i]) for i in np.flatnonzero(candidates).tolist()}
        for dept, lab in pairs:
            rows = candidates & (department == dept) & (label == lab)
            auto[rows] = score[rows] >= handoff_min_score(config, dept, lab)
    state = np.where(routed, np.where(auto, AUTO_HANDOFF, AWAITING_REVIEW), ARCHIVED)
    routes = pa.table(
        {
            "item_id": item_ids,
            "department": pa.array(department, pa.string()),
            "rule": pa.array(rule_names, pa.string()).take(pa.array(which)),
            "state": pa.array(state, pa.string()),
            "routed_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=ROUTE_SCHEMA,
    )
    ids = np.asarray(item_ids.to_numpy(zero_copy_only=False), dtype=object)
    out_ids: list[str] = []
    out_dest: list[str] = []
    out_kind: list[str] = []
    review_dest = config.review_destination
    if review_dest:
        reviewed = ids[routed].tolist()
        out_ids += reviewed
        out_dest += [review_dest] * len(reviewed)
        out_kind += ["review"] * len(reviewed)
    handed = routed & (state == AUTO_HANDOFF)
    for dept in {d for d in department[handed].tolist()}:
        dept_ids = ids[handed & (department == dept)].tolist()
        for dest in handoff_destinations(config, dept):
            out_ids += dept_ids
            out_dest += [dest] * len(dept_ids)
            out_kind += ["handoff"] * len(dept_ids)
    outbox = outbox_table(out_ids, out_dest, out_kind, now)
    return routes, outbox


def outbox_table(
    item_ids: Sequence[str], destinations: Sequence[str], kinds: Sequence[str], now: datetime
) -> pa.Table:
    """Outbox rows (``OUTBOX_SCHEMA``) for parallel lists of items, destinations and kinds."""
    return pa.table(
        {
            "key": pa.array(
                [
                    delivery_key(i, d, k)
                    for i, d, k in zip(item_ids, destinations, kinds, strict=True)
                ],
                pa.string(),
            ),
            "item_id": pa.array(list(item_ids), pa.string()),
            "destination": pa.array(list(destinations), pa.string()),
            "kind": pa.array(list(kinds), pa.string()),
            "created_at": pa.array([now] * len(item_ids), pa.timestamp("us", tz="UTC")),
        },
        schema=OUTBOX_SCHEMA,
    )


def release_handoffs(config: Config, released: Sequence[tuple[str, str]]) -> pa.Table:
    """The handoff deliveries of items released to departments after review.

    The idempotency key depends only on item, destination and kind, so releasing the same item
    twice (two reviewers, a retried request) queues one delivery.

    Args:
        config: The configuration (departments and their destinations).
        released: ``(item_id, department)`` pairs.

    Returns:
        Outbox rows, one per item and destination of its department.
    """
    ids: list[str] = []
    dests: list[str] = []
    for item_id, department in released:
        for dest in handoff_destinations(config, department):
            ids.append(item_id)
            dests.append(dest)
    return outbox_table(ids, dests, ["handoff"] * len(ids), datetime.now(UTC))
