"""The customer engines over the store: what ``triage customers``, the report and the flows read.

:func:`load_view` reads the classified items, the manual merges and the handoff outcomes (stored
read-backs, plus an outcomes export when the configuration names one), resolves the profiles and
derives every lifecycle at ``now``. The rest turns a :class:`CustomerView` into rows and JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from triage.customers.lifecycle import Lifecycle, assign_stages
from triage.customers.models import HandoffOutcome, Mention, Profile
from triage.customers.outcomes import load_outcomes
from triage.customers.profiles import ManualMerge, Resolution, resolve_profiles
from triage.customers.stages import STAGES

if TYPE_CHECKING:
    from triage.config import CustomersConfig
    from triage.store import Store


@dataclass(frozen=True, slots=True)
class CustomerView:
    """Every customer at one moment: profiles, lifecycles and the outcomes they were derived from.

    Attributes:
        mentions: Every classified item as a mention, oldest first.
        resolution: The profiles (and the joins that made them).
        lifecycles: Customer id -> lifecycle at ``now``.
        outcomes: The handoff outcomes used.
        outcome_errors: Lines of the outcomes export that could not be used.
        now: The time of evaluation.
    """

    mentions: list[Mention]
    resolution: Resolution
    lifecycles: dict[str, Lifecycle]
    outcomes: list[HandoffOutcome]
    outcome_errors: list[str]
    now: datetime

    def stage_counts(self) -> dict[str, int]:
        """Customers per stage, in funnel order (every stage listed, zeros included)."""
        counts = Counter(lc.stage for lc in self.lifecycles.values())
        return {stage: counts.get(stage, 0) for stage in STAGES}


def outcome_of(row: dict[str, Any]) -> HandoffOutcome:
    """A stored ``handoff_outcomes`` row as the engines' record."""
    return HandoffOutcome(
        item_id=str(row["item_id"]),
        department=str(row["department"]),
        created_at=_utc(row["handed_at"]),
        first_response_at=_utc(row.get("first_response_at")),
        resolved_at=_utc(row.get("resolved_at")),
        state=row["state"],
    )


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def load_outcomes_for(
    store: Store, customers: CustomersConfig
) -> tuple[list[HandoffOutcome], list[str]]:
    """Stored outcomes, plus the configured export's for handoffs no API has read back."""
    stored = [outcome_of(r) for r in store.handoff_outcomes()]
    errors: list[str] = []
    if customers.outcomes_file is not None:
        path, source = customers.outcomes_file
        exported, errors = load_outcomes(path, source)
        known = {(o.item_id, o.department) for o in stored}
        stored += [o for o in exported if (o.item_id, o.department) not in known]
    return stored, errors


def load_view(
    store: Store, customers: CustomersConfig, now: datetime | None = None
) -> CustomerView:
    """Resolve every profile and derive its lifecycle from what the store holds at ``now``."""
    now = now or datetime.now(UTC)
    mentions = [
        Mention.from_row({**r, "created_at": _utc(r["created_at"])})
        for r in store.customer_mentions()
    ]
    merges = [ManualMerge(a, b) for a, b in store.customer_merges()]
    resolution = resolve_profiles(mentions, merges)
    outcomes, errors = load_outcomes_for(store, customers)
    lifecycles = assign_stages(resolution.profiles, outcomes, config=customers.lifecycle, now=now)
    return CustomerView(mentions, resolution, lifecycles, outcomes, errors, now)


def stage_since(lifecycle: Lifecycle) -> datetime | None:
    """When the customer entered their current stage (None: never moved from discovery)."""
    return lifecycle.changes[-1].at if lifecycle.changes else None


def summary_row(profile: Profile, lifecycle: Lifecycle) -> dict[str, Any]:
    """One customer as a list row (``triage customers list --json``)."""
    return {
        "id": profile.id,
        "name": profile.display_name,
        "stage": lifecycle.stage,
        "stage_since": stage_since(lifecycle),
        "mentions": len(profile.mentions),
        "platforms": list(profile.platforms),
        "reach": profile.reach,
        "first_seen": profile.first_seen,
        "last_seen": profile.last_seen,
        "bonds_made": lifecycle.bonds_made,
        "bonds_broken": lifecycle.bonds_broken,
        "unresolved": lifecycle.unresolved,
    }


def snapshot_rows(view: CustomerView, previous: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``customer_profiles`` rows of a view; ``previous_stage`` from the last snapshot."""
    rows = []
    for profile in view.resolution.profiles:
        lc = view.lifecycles[profile.id]
        before = previous.get(profile.id)
        rows.append(
            {
                "id": profile.id,
                "display_name": profile.display_name,
                "stage": lc.stage,
                "stage_since": stage_since(lc),
                "identities": json.dumps([i.key for i in profile.identities]),
                "mentions": len(profile.mentions),
                "reach": profile.reach,
                "first_seen": profile.first_seen,
                "last_seen": profile.last_seen,
                "previous_stage": before["stage"] if before else None,
            }
        )
    return rows


def profile_detail(view: CustomerView, profile: Profile) -> dict[str, Any]:
    """Everything about one customer (``triage customers show --json``)."""
    lc = view.lifecycles[profile.id]
    signals = dict(lc.signals)
    outcomes: dict[str, list[HandoffOutcome]] = {}
    for o in view.outcomes:
        outcomes.setdefault(o.item_id, []).append(o)
    return {
        **summary_row(profile, lc),
        "identities": [
            {
                "key": i.key,
                "platform": i.platform,
                "handle": i.handle,
                "email": i.email,
                "display_name": i.display_name,
                "profile_url": i.profile_url,
                "followers": i.followers,
            }
            for i in profile.identities
        ],
        "merged_by": list(profile.merged_by),
        "mentions": [
            {
                "item_id": m.item_id,
                "at": m.created_at,
                "source": m.source,
                "platform": m.platform,
                "label": m.label,
                "department": m.department,
                "signal": signals.get(m.item_id),
                "text": m.text,
                "url": m.url,
                "handoffs": [
                    {
                        "department": o.department,
                        "state": o.state,
                        "handed_at": o.created_at,
                        "first_response_at": o.first_response_at,
                        "resolved_at": o.resolved_at,
                    }
                    for o in outcomes.get(m.item_id, [])
                ],
            }
            for m in profile.mentions
        ],
        "changes": [
            {
                "at": c.at,
                "from": c.previous,
                "to": c.stage,
                "signal": c.signal,
                "item_id": c.item_id,
            }
            for c in lc.changes
        ],
        "follow_ups": [
            {
                "item_id": f.item_id,
                "resolved_at": f.resolved_at,
                "outcome": f.outcome,
                "next_item_id": f.next_item_id,
            }
            for f in lc.follow_ups
        ],
    }
