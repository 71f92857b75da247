"""Applying reviewers' decisions to the store: plain logic, no Slack.

:func:`apply_spool` opens the store briefly, applies the spooled decisions a batch at a time (the
first decision per item wins; the rest are audited as superseded) and removes them from the spool.
Re-applying is harmless: the audit trail is keyed by the decision id, so decisions applied before
a crash that kept them in the spool are recognised and skipped.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from triage.bounded import OPEN_WAIT_S, BoundedWrites
from triage.config import Config
from triage.models import DeliveryItem
from triage.review.clicks import Decision
from triage.review.spool import DecisionSpool
from triage.routing import ARCHIVED, RELEASED, SUPPRESSED, department_for, release_handoffs
from triage.store import DATABASE_ERRORS, Store, StoreBusy, location, open_store

log = logging.getLogger("triage.review")

# One process applies decisions one batch at a time; DuckDB refuses a second connection to the same
# file with a different configuration inside one process, so all store access here is serialised.
STORE_LOCK = threading.RLock()


@contextmanager
def review_store(
    config: Config, *, wait_s: float = 2.0, lock_timeout: float = -1
) -> Iterator[Store]:
    """Open the store the way the review paths do: under ``STORE_LOCK``, briefly.

    The connection leaves its changes in DuckDB's write-ahead log instead of checkpointing the
    whole file when it closes (about a second on a 220,000-item store, for a few changed rows);
    flow runs fold the log in. ``lock_timeout`` bounds the wait for ``STORE_LOCK`` (raises
    ``StoreBusy``); the default waits as long as it takes.
    """
    if not STORE_LOCK.acquire(timeout=lock_timeout):
        raise StoreBusy("the review worker holds the store")
    try:
        with open_store(config.database, wait_s=wait_s) as store:
            store.defer_checkpoint()
            yield store
    finally:
        STORE_LOCK.release()


@dataclass(slots=True)
class ApplyReport:
    """What one pass over the spool did."""

    applied: int = 0
    superseded: int = 0
    rejected: int = 0
    busy: bool = False
    pending: int = 0


# Decisions applied per transaction. Between batches the store is closed and the lock released,
# so a flow run or a CLI command waiting for the DuckDB file gets it within one batch's time.
APPLY_BATCH = 100


def _audit(
    d: Decision, outcome: str, before: str | None = None, after: str | None = None
) -> dict[str, Any]:
    """One audit-trail row: who, when, what, and what it did (every row has every column)."""
    row = {
        "decision_id": d.decision_id,
        "item_id": d.item_id,
        "action": d.action,
        "value": d.value,
        "user_id": d.user_id,
        "user_name": d.user_name,
        "decided_at": d.when,
        "response_url": d.response_url,
        "outcome": outcome,
        "before": before,
        "after": after,
    }
    return row


@dataclass(slots=True)
class ReviewChanges:
    """What a batch of decisions changes, one list per kind of change (one statement each)."""

    outcomes: dict[str, str] = field(default_factory=dict)  # decision_id -> outcome
    relabels: list[dict[str, Any]] = field(default_factory=list)
    training: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    released: list[tuple[str, str]] = field(default_factory=list)  # (item_id, department)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)


def plan_decisions(
    config: Config,
    decisions: Sequence[Decision],
    items: dict[str, DeliveryItem],
    decided: set[str],
) -> ReviewChanges:
    """Work out what a batch of decisions does, without touching the store.

    The first decision per item wins, in spool (arrival) order, whether the item was settled by
    an earlier batch (``decided``) or earlier in this one; the others are superseded. A decision
    on an unknown item is rejected. Every decision gets exactly one audit row.

    Args:
        config: Routing rules and departments.
        decisions: The batch, oldest first.
        items: :meth:`Store.delivery_context` of the batch's items.
        decided: Items a decision had settled before this batch.
    """
    out = ReviewChanges()
    settled = set(decided)
    # An item's state as this batch leaves it, so a later click audits what it really saw.
    current: dict[str, dict[str, Any]] = {}
    for d in decisions:
        if d.decision_id in out.outcomes:
            continue  # the same click spooled twice (a retried delivery)
        item = items.get(d.item_id)
        if item is None:
            out.outcomes[d.decision_id] = "rejected"
            out.audit.append(_audit(d, "rejected", after="unknown item"))
            continue
        before = current.get(d.item_id) or {
            "label": item.label,
            "department": item.department,
            "state": item.route_state,
        }
        if d.item_id in settled:
            out.outcomes[d.decision_id] = "superseded"
            out.audit.append(_audit(d, "superseded", before=json.dumps(before)))
            continue
        settled.add(d.item_id)
        label, department, rule = item.label, item.department, f"review:{d.action}"
        if d.action == "relabel" and d.value:
            label = d.value
            department = department_for(config, item.source, item.text, label, item.score_of(label))
            others = [lab for lab in item.labels if lab not in (label, item.label)]
            out.relabels.append({"item_id": d.item_id, "label": label, "labels": [label, *others]})
            out.training.append(_example(d, label, item.label))
        elif d.action == "reroute" and d.value:
            department = d.value
        if d.action == "spam":
            state = SUPPRESSED
            # Spam is `other` by the label contract: a useful correction for the next model.
            out.training.append(_example(d, "other", item.label))
        elif department:
            state = RELEASED
            out.released.append((d.item_id, department))
        else:
            state = ARCHIVED
        out.routes.append(
            {"item_id": d.item_id, "department": department, "state": state, "rule": rule}
        )
        after = {"label": label, "department": department, "state": state}
        current[d.item_id] = after
        out.decisions.append(
            {
                "item_id": d.item_id,
                "decision_id": d.decision_id,
                "action": d.action,
                "value": d.value,
                "user_id": d.user_id,
                "user_name": d.user_name,
                "decided_at": d.when,
                "before_label": before["label"],
                "before_department": before["department"],
                "before_state": before["state"],
                "after_label": label,
                "after_department": department,
                "after_state": state,
                "channel": d.channel,
                "message_ts": d.message_ts,
            }
        )
        out.outcomes[d.decision_id] = "applied"
        out.audit.append(_audit(d, "applied", json.dumps(before), json.dumps(after)))
    return out


def _example(d: Decision, label: str, previous: str) -> dict[str, Any]:
    return {
        "item_id": d.item_id,
        "label": label,
        "previous_label": previous,
        "decided_by": d.user_id,
        "decided_at": d.when,
    }


_RELABELS = pa.schema(
    [("item_id", pa.string()), ("label", pa.string()), ("labels", pa.list_(pa.string()))]
)
_ROUTES = pa.schema(
    [
        ("item_id", pa.string()),
        ("department", pa.string()),
        ("state", pa.string()),
        ("rule", pa.string()),
    ]
)
_EXAMPLES = pa.schema(
    [
        ("item_id", pa.string()),
        ("label", pa.string()),
        ("previous_label", pa.string()),
        ("decided_by", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),
    ]
)


def write_changes(store: Store, config: Config, changes: ReviewChanges) -> None:
    """Write a planned batch: one set-based statement per kind of change (call in a transaction)."""
    store.relabel_predictions(pa.Table.from_pylist(changes.relabels, schema=_RELABELS))
    store.add_training_examples(pa.Table.from_pylist(changes.training, schema=_EXAMPLES))
    store.set_routes(pa.Table.from_pylist(changes.routes, schema=_ROUTES))
    store.enqueue(release_handoffs(config, changes.released))
    store.insert_review_decisions(changes.decisions)
    store.insert_review_audit(changes.audit)


def apply_batch(store: Store, config: Config, decisions: Sequence[Decision]) -> dict[str, str]:
    """Apply a batch of decisions in one transaction; return each decision's outcome.

    ``applied``: it settled the item (route changed, handoff queued, training example kept);
    ``superseded``: another decision settled the item first; ``rejected``: unknown item. A
    decision already in the audit trail (applied by another writer meanwhile: a click's late
    direct write, a second worker) is left out. The items are locked for the transaction first,
    so two writers deciding one item at once take turns and the second sees the first.
    """
    ids = sorted({d.item_id for d in decisions})
    with store.transaction():
        store.lock_for_decisions(ids)
        done = store.audited_decisions([d.decision_id for d in decisions])
        todo = [d for d in decisions if d.decision_id not in done]
        changes = plan_decisions(
            config, todo, store.delivery_context(ids), store.decided_items(ids)
        )
        write_changes(store, config, changes)
    return changes.outcomes


def _apply_chunk(store: Store, config: Config, chunk: Sequence[Decision]) -> dict[str, str]:
    """Apply a chunk at once, or one by one when it fails, so one bad decision stops no other."""
    try:
        return apply_batch(store, config, chunk)
    except DATABASE_ERRORS as exc:
        log.warning("batch of %d decisions failed (%s); applying them one by one", len(chunk), exc)
    outcomes: dict[str, str] = {}
    for d in chunk:
        try:
            outcomes.update(apply_batch(store, config, [d]))
        except DATABASE_ERRORS as exc:
            # Kept in the audit trail with the reason instead of in the spool, where it would
            # block every later decision.
            log.warning("decision %s failed: %s", d.decision_id, exc)
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            store.insert_review_audit([_audit(d, "failed", after=reason)])
            outcomes[d.decision_id] = "rejected"
    return outcomes


def apply_spool(
    config: Config, spool: DecisionSpool, *, wait_s: float = 2.0, batch: int = APPLY_BATCH
) -> ApplyReport:
    """Apply every spooled decision to the store, a batch at a time, then drop them from the spool.

    Each batch opens the store, applies its decisions in one transaction (a handful of set-based
    statements, whatever the batch size), closes the store and releases the lock before the next
    batch, so other writers are never kept waiting for more than one batch.

    Args:
        config: The configuration (database, rules, departments).
        spool: The decision spool.
        wait_s: How long to wait for another process's write lock before giving up this pass.
        batch: Decisions per transaction.

    Returns:
        Counts; ``busy`` when the store was locked (what is left stays spooled for the next pass).
    """
    report = ApplyReport()
    pending = spool.read()
    for start in range(0, len(pending), max(1, batch)):
        chunk = pending[start : start + max(1, batch)]
        try:
            with review_store(config, wait_s=wait_s) as store:
                # Applied before a crash that kept them in the spool, or by a click's late direct
                # write: recognised by id in the audit trail and skipped (apply_batch).
                outcomes = _apply_chunk(store, config, chunk)
        except StoreBusy:
            report.busy = True
            report.pending = len(pending) - start
            return report
        for outcome in outcomes.values():
            report.applied += outcome == "applied"
            report.superseded += outcome == "superseded"
            report.rejected += outcome == "rejected"
        spool.remove({d.decision_id for d in chunk})
    return report


# How long a click may wait for the server store before it is spooled instead (Slack allows 3 s
# for the whole answer).
DIRECT_WAIT_S = 1.5


class DirectApply:
    """Applies clicks straight to a server store (PostgreSQL), or says to spool them.

    With PostgreSQL the store takes concurrent writers, so a click is written at once, in one
    transaction, while flow runs write too. The embedded file admits one writer, so there the
    caller always spools. The write gets at most ``wait_s`` (:mod:`triage.bounded`): a server
    that is down, hangs after accepting the connection, or a route row that a worker holds
    locked costs the click its wait, never Slack's 3 s; the click is then spooled. A write that
    commits after all, late, leaves its decision in the audit trail, and the spooled copy is
    skipped as already applied (:func:`apply_batch`): a decision is applied once either way.
    """

    def __init__(
        self, config: Config, *, wait_s: float = DIRECT_WAIT_S, writes: BoundedWrites | None = None
    ) -> None:
        """Prepare (nothing is opened until the first click).

        Args:
            config: The configuration (its database, rules and departments).
            wait_s: The longest a click waits for its write before it is spooled.
            writes: Runs the writes (default: 4 at once, clicks spooled at once for 5 s after a
                failed or late write).
        """
        self.config = config
        self.wait_s = wait_s
        self.writes = writes or BoundedWrites(log, "decisions")

    def __call__(self, decisions: Sequence[Decision]) -> dict[str, str] | None:
        """Apply the decisions; their outcomes (none for one applied before), or None to spool."""
        if not location.is_server(self.config.database):
            return None
        return self.writes.run(lambda: self._apply(decisions), self.wait_s)

    def _apply(self, decisions: Sequence[Decision]) -> dict[str, str]:
        # One try: a decision the store refuses is spooled, and the worker's pass applies it
        # (one by one, auditing one that fails for good).
        with open_store(self.config.database, wait_s=OPEN_WAIT_S) as store:
            return apply_batch(store, self.config, decisions)

    def close(self) -> None:
        """Take no more clicks; writes already running finish on their own."""
        self.writes.close()
