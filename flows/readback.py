"""The read-back flow: what became of each handoff, then every customer's stage; and the digest.

``readback`` (deployment ``readback-hourly``, entrypoint ``flows/triage.py:readback``: see there): the confirmed handoffs of the last
``customers.readback_days`` are read back from their tools, one task per destination (each task
reads all of its destination's handoffs in batched API calls: never a task per item), stored as
``handoff_outcomes``, and the customers' profiles and stages are refreshed. An API that is down
fails only its own destination's task: the handoffs it holds keep their last known outcome
(``unknown`` when never read) with the error recorded, and are read again on the next run.

``weekly_digest`` (deployment ``weekly-digest``) posts the digest to
``customers.digest.destination`` (README, "Customers, lifecycle and reports").

(Not ``flows/customers.py``: a module here must not share a name with one of ``triage``'s.)
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.settings import load_config, settings_at_run_time
from triage.config import Config
from triage.customers.view import load_view, snapshot_rows
from triage.destinations import build_destinations
from triage.destinations.readback import Read, reader_for
from triage.store import open_store

log = logging.getLogger("triage.readback")


@task(name="read-back", task_run_name="read-back[{destination}]", cache_policy=NO_CACHE)
def read_destination(
    config: Config, destination: str, targets: list[dict[str, Any]]
) -> dict[str, Read]:
    """Read every handoff of one destination (batched API calls through its client)."""
    dest = build_destinations(config)[destination]
    reader = reader_for(dest)
    if reader is None:
        raise LookupError(f"destination {destination} cannot be read back")
    return reader(dest, targets)


def _row(target: dict[str, Any], read: Read, now: datetime) -> dict[str, Any]:
    return {
        "key": target["key"],
        "item_id": target["item_id"],
        "department": target["department"] or "unknown",
        "system": target["system"],
        "destination": target["destination"],
        "target_id": target["target_id"],
        "state": read.state,
        "external_state": read.external_state,
        "handed_at": target["handed_at"],
        "first_response_at": read.first_response_at,
        "resolved_at": read.resolved_at,
        "comments": read.comments,
        "checked_at": now,
        "last_error": read.note,
    }


def refresh_customers(config: Config, now: datetime) -> dict[str, int]:
    """Derive every customer's stage now and store the snapshot; return customers per stage."""
    with open_store(config.database) as store:
        view = load_view(store, config.customers, now)
        store.replace_customer_profiles(snapshot_rows(view, store.customer_snapshot()))
    return view.stage_counts()


@flow(name="readback", log_prints=True)
def readback(config_path: str | None = None, database: str | None = None) -> dict[str, Any]:
    """Read back every recent handoff's outcome, then refresh the customers' stages.

    Args:
        config_path: The configuration (default as for the triage flow: ``TRIAGE_CONFIG``, the
            Prefect variable ``triage_config``, ``./triage.yaml`` or the demo).
        database: Overrides the database path.

    Returns:
        ``{"read": {destination: n}, "failed": {destination: error}, "skipped": [...],
        "states": {state: n}, "customers": {stage: n}, "seconds": s}``.
    """
    started = time.monotonic()
    config_path, database = settings_at_run_time(config_path, database)
    config = load_config(config_path, database=database)
    now = datetime.now(UTC)
    with open_store(config.database) as store:
        targets = store.readback_targets(now - config.customers.readback_window)
    by_destination: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in targets:
        by_destination[t["destination"]].append(t)
    built = build_destinations(config)
    skipped = sorted(d for d in by_destination if reader_for(built.get(d)) is None)
    futures = {
        name: read_destination.submit(config, name, rows)
        for name, rows in by_destination.items()
        if name not in skipped
    }
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    states: dict[str, int] = defaultdict(int)
    for name, future in futures.items():
        try:
            reads = future.result()
        except Exception as exc:  # noqa: BLE001 - one tool down must not stop the others
            failed[name] = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("read-back of %s failed: %s", name, failed[name])
            # Never read: stored as unknown; read before: the last outcome stays, error noted.
            failures += [
                {**_row(t, Read("unknown"), now), "last_error": failed[name]}
                for t in by_destination[name]
            ]
            continue
        for t in by_destination[name]:
            read = reads.get(t["key"]) or Read("unknown", note="not returned by the reader")
            rows.append(_row(t, read, now))
            states[read.state] += 1
    with open_store(config.database) as store, store.transaction():
        store.upsert_outcomes(rows)
        store.record_read_failures(failures)
    return {
        "read": {name: len(by_destination[name]) for name in futures if name not in failed},
        "failed": failed,
        "skipped": skipped,
        "states": dict(states),
        "customers": refresh_customers(config, now),
        "seconds": round(time.monotonic() - started, 3),
    }


@flow(name="weekly-digest", log_prints=True)
def weekly_digest(config_path: str | None = None, database: str | None = None) -> dict[str, Any]:
    """Post the digest of the last ``customers.digest.period`` to the configured channel.

    Without a Slack token the digest is written as a preview under the outbox folder instead.
    """
    from triage.report.publish import send_digest

    config_path, database = settings_at_run_time(config_path, database)
    config = load_config(config_path, database=database)
    with open_store(config.database, read_only=True) as store:
        result = send_digest(store, config)
    return {
        "destination": result.destination,
        "channel": result.channel,
        "posted": result.posted,
        "preview": str(result.preview) if result.preview else None,
        "uploaded": result.uploaded,
        "failed_uploads": list(result.failed_uploads),
    }
