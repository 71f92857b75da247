"""Review decisions: parse clicks, spool them durably, apply them to the store, announce them.

Plain logic with no HTTP in sight, so the interactivity endpoint (``triage.slack.app``), the flow
and the tests share it. The life of a click:

1. :func:`parse_actions` turns a ``block_actions`` payload into :class:`Decision` records.
2. :meth:`Spool.append` writes them to a JSONL file and fsyncs it *before* Slack gets its ack, so a
   decision survives a busy store (DuckDB admits one writing process) and a crash.
3. :func:`apply_spool` opens the store briefly, applies every spooled decision in its own
   transaction (first decision per item wins; the rest are audited as superseded) and removes
   them from the spool. Re-applying is harmless: the audit trail is keyed by the decision id.
4. :func:`announce` updates each decided message in place and tells losing reviewers who won;
   a decision whose message was not updated yet (a crash in between) is picked up next time.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from triage.config import Config
from triage.keys import stable_key
from triage.models import DEPARTMENTS, LABELS, DeliveryItem
from triage.routing import ARCHIVED, RELEASED, SUPPRESSED, department_for, release_handoffs
from triage.secrets import get_secret
from triage.slack.client import make_client, thread_root
from triage.slack.messages import (
    ACTION_CONFIRM,
    ACTION_RELABEL,
    ACTION_REROUTE,
    ACTION_SPAM,
    decided_message,
    loser_notice,
    reminder_message,
)
from triage.store import Store, StoreBusy, open_store

log = logging.getLogger("triage.slack")

ACTIONS: dict[str, str] = {
    ACTION_CONFIRM: "confirm",
    ACTION_RELABEL: "relabel",
    ACTION_REROUTE: "reroute",
    ACTION_SPAM: "spam",
}
_ITEM_ID = re.compile(r"^[0-9a-f]{20}$")

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


class InvalidAction(ValueError):
    """A click we cannot turn into a decision: unknown action id or a malformed value."""


@dataclass(slots=True, frozen=True)
class ReviewSettings:
    """The ``review:`` section of the configuration, with the spool's default path resolved."""

    destination: str | None
    batch_threshold: int | None
    resurface_after: timedelta
    spool: Path

    @classmethod
    def from_config(cls, config: Config) -> ReviewSettings:
        """The review settings, validated with the rest of the configuration at load."""
        review = config.review
        return cls(
            destination=config.review_destination,
            batch_threshold=review.batch_threshold,
            resurface_after=review.resurface_after,
            # Beside the database by default, so the server and every flow run find the same file.
            spool=review.spool or Path(str(config.database) + ".decisions.jsonl"),
        )


@dataclass(slots=True, frozen=True)
class Decision:
    """One reviewer's click, as spooled and as applied."""

    decision_id: str
    item_id: str
    action: str
    value: str | None
    user_id: str
    user_name: str | None
    decided_at: str  # ISO-8601 UTC: the spool is JSON
    channel: str | None = None
    message_ts: str | None = None
    response_url: str | None = None

    @property
    def when(self) -> datetime:
        """``decided_at`` as an aware datetime."""
        return datetime.fromisoformat(self.decided_at)


def parse_actions(body: dict[str, Any], now: datetime | None = None) -> list[Decision]:
    """Turn a ``block_actions`` payload into decisions.

    Args:
        body: The decoded interactivity payload.
        now: Fallback time when the action carries no ``action_ts``.

    Returns:
        One decision per action in the payload; none for a cleared select menu (Slack sends
        ``selected_option: null`` when a reviewer clears one), which is not an error.

    Raises:
        InvalidAction: For an unknown action id or a value that is not ``item`` / ``item:choice``
            with a known label or department.
    """
    user = body.get("user") or {}
    user_id = str(user.get("id") or "")
    if not user_id:
        raise InvalidAction("the payload names no user")
    user_name = user.get("username") or user.get("name")
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
    response_url = body.get("response_url")
    out: list[Decision] = []
    for action in body.get("actions") or []:
        action_id = str(action.get("action_id", ""))
        kind = ACTIONS.get(action_id)
        if kind is None:
            raise InvalidAction(f"unknown action {action_id[:80]!r}")
        if kind in ("relabel", "reroute"):
            option = action.get("selected_option")
            if option is None:
                continue  # the menu was cleared: nothing was decided
            raw = str(option.get("value") or "")
            item_id, _, value = raw.partition(":")
            allowed = LABELS if kind == "relabel" else DEPARTMENTS
            if value not in allowed:
                raise InvalidAction(f"{kind}: {value[:40]!r} is not one of {', '.join(allowed)}")
        else:
            item_id, value = str(action.get("value") or ""), ""
        if not _ITEM_ID.match(item_id):
            raise InvalidAction(f"{kind}: {item_id[:40]!r} is not an item id")
        ts = str(action.get("action_ts") or "")
        try:
            when = datetime.fromtimestamp(float(ts), UTC) if ts else (now or datetime.now(UTC))
        except (ValueError, OverflowError, OSError) as exc:
            raise InvalidAction(f"{kind}: action_ts {ts[:40]!r} is not a timestamp") from exc
        out.append(
            Decision(
                # Deterministic, so a retried delivery of the same click is one decision.
                decision_id=stable_key(item_id, user_id, kind, value, ts or when.isoformat()),
                item_id=item_id,
                action=kind,
                value=value or None,
                user_id=user_id,
                user_name=str(user_name) if user_name else None,
                decided_at=when.isoformat(),
                channel=str(channel) if channel else None,
                message_ts=str(message_ts) if message_ts else None,
                response_url=str(response_url) if response_url else None,
            )
        )
    if not body.get("actions"):
        raise InvalidAction("the payload carries no action")
    return out


class Spool:
    """An append-only JSONL file of decisions not yet applied to the store.

    Appends are fsynced before the caller acknowledges Slack. A lock file (``flock``) keeps the
    server and a flow run from interleaving; it is held only for the file operations, never while
    waiting for the database, so appending stays fast while the store is busy.
    """

    def __init__(self, path: Path) -> None:
        """Use ``path`` (created on first append)."""
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._thread_lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, decisions: Sequence[Decision]) -> None:
        """Durably append decisions (written and fsynced when this returns)."""
        data = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in decisions)
        with self._locked():
            new = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if new:
                _fsync_dir(self.path.parent)

    def read(self) -> list[Decision]:
        """Return every spooled decision, oldest first.

        A torn last line (a crash mid-append, never acknowledged to Slack) is moved to
        ``<spool>.rejected`` with the reason instead of blocking the spool forever.
        """
        with self._locked():
            if not self.path.exists():
                return []
            good: list[Decision] = []
            bad: list[str] = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    good.append(Decision(**json.loads(line)))
                except (ValueError, TypeError) as exc:
                    bad.append(json.dumps({"reason": str(exc)[:200], "line": line[:10_000]}))
            if bad:
                rejected = self.path.with_name(self.path.name + ".rejected")
                with open(rejected, "a", encoding="utf-8") as fh:
                    fh.write("\n".join(bad) + "\n")
                self._rewrite(good)
            return good

    def remove(self, decision_ids: set[str]) -> None:
        """Drop applied decisions; anything appended meanwhile is kept."""
        if not decision_ids:
            return
        with self._locked():
            if not self.path.exists():
                return
            keep = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("decision_id") in decision_ids:
                        continue
                except ValueError:
                    pass  # read() will move it aside next time
                keep.append(line)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in keep))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)

    def _rewrite(self, decisions: Sequence[Decision]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(asdict(d)) + "\n" for d in decisions))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def __len__(self) -> int:
        """How many decisions wait in the spool."""
        return len(self.read())


def _fsync_dir(folder: Path) -> None:
    # A new or renamed file is durable only once its directory entry is.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    ``superseded``: another decision settled the item first; ``rejected``: unknown item.
    """
    ids = sorted({d.item_id for d in decisions})
    with store.transaction():
        changes = plan_decisions(
            config, decisions, store.delivery_context(ids), store.decided_items(ids)
        )
        write_changes(store, config, changes)
    return changes.outcomes


def _apply_chunk(store: Store, config: Config, chunk: Sequence[Decision]) -> dict[str, str]:
    """Apply a chunk at once, or one by one when it fails, so one bad decision stops no other."""
    try:
        return apply_batch(store, config, chunk)
    except duckdb.Error as exc:
        log.warning("batch of %d decisions failed (%s); applying them one by one", len(chunk), exc)
    outcomes: dict[str, str] = {}
    for d in chunk:
        try:
            outcomes.update(apply_batch(store, config, [d]))
        except duckdb.Error as exc:
            # Kept in the audit trail with the reason instead of in the spool, where it would
            # block every later decision.
            log.warning("decision %s failed: %s", d.decision_id, exc)
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            store.insert_review_audit([_audit(d, "failed", after=reason)])
            outcomes[d.decision_id] = "rejected"
    return outcomes


def apply_spool(
    config: Config, spool: Spool, *, wait_s: float = 2.0, batch: int = APPLY_BATCH
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
                done = store.audited_decisions([d.decision_id for d in chunk])
                # Applied before a crash that kept them in the spool: recognised by id, skipped.
                todo = [d for d in chunk if d.decision_id not in done]
                outcomes = _apply_chunk(store, config, todo) if todo else {}
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


def review_client() -> WebClient | None:
    """The bot's Web API client, or None when no bot token is configured."""
    token = get_secret("SLACK_BOT_TOKEN", "slack-bot-token")
    return make_client(token) if token else None


@dataclass(slots=True)
class AnnounceReport:
    """What one announcement pass did."""

    updated: int = 0
    notified: int = 0
    failed: int = 0


def announce(
    config: Config, client: WebClient | None, *, wait_s: float = 2.0, limit: int = 200
) -> AnnounceReport:
    """Update decided messages in place and tell losing reviewers who decided first.

    The store is opened twice, briefly, and never held across a Slack call.
    """
    report = AnnounceReport()
    if client is None:
        return report
    with review_store(config, wait_s=wait_s) as store:
        decisions = store.unannounced_decisions(limit)
        items = store.delivery_context([d["item_id"] for d in decisions])
        losers = store.unnotified_losers(limit)
    updated: list[str] = []
    for d in decisions:
        item = items.get(d["item_id"])
        if item is None:
            continue
        body = decided_message(item, d)
        try:
            client.chat_update(
                channel=d["channel"], ts=d["message_ts"], text=body["text"], blocks=body["blocks"]
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error not in ("message_not_found", "channel_not_found", "cant_update_message"):
                report.failed += 1
                log.warning("chat.update for %s failed: %s", d["item_id"], error)
                continue
            log.warning("message of %s cannot be updated (%s); giving up", d["item_id"], error)
        updated.append(d["item_id"])
    notified: list[str] = []
    for loser in losers:
        try:
            WebhookClient(str(loser["response_url"]), timeout=10).send(
                text=loser_notice(loser), response_type="ephemeral", replace_original=False
            )
        except Exception as exc:  # noqa: BLE001 - a stale response_url must not block the rest
            log.warning("could not notify %s: %s", loser["user_id"], exc)
        notified.append(str(loser["decision_id"]))
    if updated or notified:
        with review_store(config, wait_s=wait_s) as store:
            store.mark_message_updated(updated)
            store.mark_notified(notified)
    report.updated, report.notified = len(updated), len(notified)
    return report


def resurface(
    config: Config,
    client: WebClient | None,
    *,
    now: datetime | None = None,
    wait_s: float = 2.0,
    limit: int = 50,
) -> int:
    """Reply under review messages that waited longer than ``review.resurface_after``.

    Each item is re-surfaced at most once per period of that length; at most ``limit`` replies a
    pass keep us within Slack's per-channel pace. Returns how many reminders were posted.
    """
    settings = ReviewSettings.from_config(config)
    if client is None or settings.destination is None:
        return 0
    now = now or datetime.now(UTC)
    period = int(now.timestamp() // settings.resurface_after.total_seconds())
    with review_store(config, wait_s=wait_s) as store:
        overdue = store.overdue_reviews(
            settings.destination, now - settings.resurface_after, period, limit
        )
    posted: list[str] = []
    for row in overdue:
        channel, _, ts = str(row["external_ref"]).partition(":")
        waited = now - row["routed_at"]
        body = reminder_message(waited)
        try:
            client.chat_postMessage(
                channel=channel,
                thread_ts=thread_root(client, channel, ts),
                text=body["text"],
                blocks=body["blocks"],
            )
        except SlackApiError as exc:
            log.warning("reminder for %s failed: %s", row["item_id"], exc.response.get("error"))
            continue
        posted.append(str(row["item_id"]))
    if posted:
        with review_store(config, wait_s=wait_s) as store:
            store.record_reminders(posted, period)
    return len(posted)


def process_pending(config: Config, *, wait_s: float = 2.0) -> dict[str, Any]:
    """Apply spooled decisions, announce them and re-surface overdue items; never raises.

    Called at the start of every flow run and by the server's background thread.
    """
    settings = ReviewSettings.from_config(config)
    result: dict[str, Any] = {}
    try:
        report = apply_spool(config, Spool(settings.spool), wait_s=wait_s)
        result.update(asdict(report))
        if report.busy:
            return result
        client = review_client()
        result.update({f"messages_{k}": v for k, v in asdict(announce(config, client)).items()})
        result["reminders"] = resurface(config, client)
    except StoreBusy:
        result["busy"] = True
    except Exception as exc:  # noqa: BLE001 - review upkeep must never stop a triage run
        log.warning("review upkeep failed: %s: %s", type(exc).__name__, exc)
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result
