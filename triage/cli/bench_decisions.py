"""Benchmark of applying review decisions: N spooled clicks on a store of M items.

``triage slack bench-decisions`` builds a synthetic store (items, predictions, routes awaiting
review, their review deliveries) with the store's own Arrow batch inserts, spools a mix of
confirms, relabels, reroutes and spam clicks (some of them losing to an earlier click on the same
item), and times :func:`triage.review.apply_spool` as the server's background pass runs
it. The issue's target: 250 decisions in under 2 s on a 220,000-item store.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from flows.settings import load_config
from triage.models import DEPARTMENTS, ITEM_SCHEMA, LABELS, item_id
from triage.review import APPLY_BATCH, Decision, DecisionSpool, apply_spool
from triage.routing import AWAITING_REVIEW, ROUTE_SCHEMA, outbox_table
from triage.store import open_store

DEFAULT_DEPARTMENT = {
    "kudos": "marketing",
    "sales_lead": "sales",
    "feature_request": "product",
    "service_issue": "support",
    "other": None,
}


def seed_store(path: Path, items: int, *, seed: int = 7, chunk: int = 50_000) -> None:
    """Fill a new store with ``items`` classified items, all routed and awaiting review."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with open_store(path) as store:
        for start in range(0, items, chunk):
            n = min(chunk, items - start)
            ext = [f"bench-{start + i}" for i in range(n)]
            ids = [item_id("bench", e) for e in ext]
            created = [now - timedelta(minutes=start + i) for i in range(n)]
            store.insert_item_table(
                pa.table(
                    {
                        "id": ids,
                        "source": ["bench"] * n,
                        "external_id": ext,
                        "url": [f"https://social.example/{e}" for e in ext],
                        "author_handle": [f"@user{rng.randrange(5000)}" for _ in range(n)],
                        "author_name": [None] * n,
                        "author_url": [None] * n,
                        "author_followers": [None] * n,
                        "text": [f"feedback number {start + i} about the app" for i in range(n)],
                        "created_at": created,
                        "fetched_at": [now] * n,
                        "thread": [None] * n,
                        "in_reply_to": [None] * n,
                        "language": ["en"] * n,
                        "source_type": ["social"] * n,
                        "raw": [None] * n,
                    },
                    schema=ITEM_SCHEMA,
                )
            )
            labels = [rng.choice(LABELS) for _ in range(n)]
            scores = {
                f"score_{lab}": [0.9 if x == lab else 0.025 for x in labels] for lab in LABELS
            }
            store.insert_predictions(
                pa.table(
                    {
                        "item_id": ids,
                        "label": labels,
                        "labels": [[lab] for lab in labels],
                        "score": [0.9] * n,
                        **scores,
                        "needs_review": [rng.random() < 0.3 for _ in range(n)],
                        "review_reason": [None] * n,
                        "model_version": ["bench"] * n,
                    }
                )
            )
            routed = [(i, DEFAULT_DEPARTMENT[lab]) for i, lab in zip(ids, labels, strict=True)]
            routes = pa.table(
                {
                    "item_id": [i for i, _ in routed],
                    "department": [d for _, d in routed],
                    "rule": ["bench"] * n,
                    "state": [AWAITING_REVIEW] * n,
                    "routed_at": [now] * n,
                },
                schema=ROUTE_SCHEMA,
            )
            outbox = outbox_table(ids, ["review-channel"] * n, ["review"] * n, now)
            store.insert_routes(routes, outbox)


def spool_decisions(store_path: Path, spool: DecisionSpool, count: int, *, seed: int = 11) -> int:
    """DecisionSpool ``count`` clicks on random waiting items; about one in ten loses to an earlier one."""
    rng = random.Random(seed)
    with open_store(store_path) as store:
        queue = store.review_queue(limit=count)
        total = queue["total"]
    picks = rng.sample(range(total), min(total, count))
    ids = [item_id("bench", f"bench-{i}") for i in picks]
    clicks: list[Decision] = []
    now = datetime.now(UTC)
    for n in range(count):
        target = ids[n] if rng.random() > 0.1 or not clicks else clicks[-1].item_id
        action = rng.choice(["confirm", "relabel", "reroute", "spam"])
        value = (
            rng.choice(LABELS)
            if action == "relabel"
            else rng.choice(DEPARTMENTS)
            if action == "reroute"
            else None
        )
        clicks.append(
            Decision(
                decision_id=f"bench{n:08d}",
                item_id=target,
                action=action,
                value=value,
                user_id=f"U0BENCH{n % 7}",
                user_name=None,
                decided_at=(now + timedelta(milliseconds=n)).isoformat(),
                channel="C0REVIEW",
                message_ts=f"{1_700_000_000 + n}.000100",
            )
        )
    spool.append(clicks)
    return len(clicks)


def bench_decisions(
    items: int = 220_000,
    decisions: int = 250,
    *,
    folder: Path | None = None,
    batch: int = APPLY_BATCH,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Build the store, spool the clicks, time one background pass over them.

    Returns:
        ``items``, ``decisions``, ``batch``, ``applied``, ``superseded``, ``seconds`` (the pass)
        and ``per_decision_ms``.
    """
    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        root = folder or Path(tmp)
        db = root / "bench.duckdb"
        demo = Path(__file__).resolve().parents[1] / "demo" / "triage.yaml"
        config = load_config(demo, database=str(db))
        progress(f"seeding {items:,} items into {db}")
        started = time.perf_counter()
        seed_store(db, items)
        progress(f"seeded in {time.perf_counter() - started:.1f}s; spooling {decisions} decisions")
        spool = DecisionSpool(config.review.spool)
        spooled = spool_decisions(db, spool, decisions)
        started = time.perf_counter()
        report = apply_spool(config, spool, wait_s=30.0, batch=batch)
        seconds = time.perf_counter() - started
    return {
        "items": items,
        "decisions": spooled,
        "batch": batch,
        "applied": report.applied,
        "superseded": report.superseded,
        "rejected": report.rejected,
        "seconds": round(seconds, 3),
        "per_decision_ms": round(1000 * seconds / max(1, spooled), 2),
    }
