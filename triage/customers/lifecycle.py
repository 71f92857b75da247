"""Lifecycle stage per customer, from the sequence of their mentions and handoff outcomes.

**Stages** (in funnel order):

=================  ========================================================================
``discovery``      has only mentioned us in passing (off-topic, first contact, spam-like)
``evaluation``     is weighing a purchase: pricing, plans, trials, comparisons
``purchase``       has said they bought, subscribed or upgraded (or a sales deal was won)
``use_experience`` uses the product: a first service issue, feature request or praise
``bonded``         had a problem solved and came back with praise: adversity handled well
``advocate``       recommends the product to others
``at_risk``        talks of leaving, cancelling or switching away, or has repeated complaints
                   that are still unresolved
=================  ========================================================================

**How a stage is derived.** Each mention gets one *signal* from the first matching
:class:`SignalRule` (its label plus optional text patterns; no rule matching means
``discovery``). The handoff outcomes add *derived* signals:

- ``bond_made`` — a service issue was resolved and the customer's next praise or complaint within
  ``follow_up_window`` was praise (at the time of that praise);
- ``bond_broken`` — a service issue was ignored (no first response within ``response_deadline`` or
  no resolution within ``resolution_deadline``, measured from the mention) or bounced around
  (handed to ``bounce_departments`` or more departments, or rejected); at the time that became so;
- ``repeated_unresolved`` — a service issue arrived while, counting it, ``at_risk_complaints`` or
  more of the customer's service issues from the last ``complaint_window`` were unresolved;
- ``deal_won`` — a sales handoff was closed won.

The events are replayed in time order (derived ones first at equal times) through the
:class:`StageRule` table: the first rule whose ``signal`` matches and whose ``from_stages`` holds
the current stage moves the customer to its ``to`` stage; no match leaves the stage alone. The
default table (:data:`DEFAULT_RULES`) reads:

=======================  ==============  ===================================================
signal                   to              from
=======================  ==============  ===================================================
churn_talk               at_risk         any stage
repeated_unresolved      at_risk         any stage
recommendation           advocate        any stage
bond_made                bonded          any stage but advocate
bond_broken              use_experience  bonded, advocate
purchase, deal_won       purchase        discovery, evaluation
buying_question          evaluation      discovery
service_issue,           use_experience  discovery, evaluation, purchase
feature_request, praise
=======================  ==============  ===================================================

Handoffs whose read-back failed (state ``unknown``) or that were never read back count neither as
resolved nor as ignored: an outage of the helpdesk API moves nobody. They do count as unresolved for
``repeated_unresolved``: as far as we know, the customer is still waiting.

The vocabulary and the configuration (:class:`LifecycleConfig`) are in
:mod:`triage.customers.stages`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from triage.customers.models import HandoffOutcome, Mention, Profile, require_utc
from triage.customers.stages import (
    PRODUCT,
    FollowUpOutcome,
    LifecycleConfig,
)


@dataclass(frozen=True, slots=True)
class StageChange:
    """One move through the lifecycle and what caused it."""

    at: datetime
    previous: str
    stage: str
    signal: str
    item_id: str | None


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What the customer did after one of their service issues was resolved."""

    item_id: str
    resolved_at: datetime
    outcome: FollowUpOutcome
    next_item_id: str | None


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A customer's derived stage, the path to it, and their bonds.

    Attributes:
        customer_id: The profile id ('' when derived from bare mentions).
        stage: The current stage.
        changes: Every stage change, oldest first.
        signals: (item id, signal) for each mention, in time order.
        bonds_made: Resolved service issues followed by praise.
        bonds_broken: Service issues ignored or bounced around.
        follow_ups: Per resolved service issue, what followed.
        unresolved: Service issues not known to be resolved (at ``now``).
    """

    customer_id: str
    stage: str
    changes: tuple[StageChange, ...]
    signals: tuple[tuple[str, str], ...]
    bonds_made: int
    bonds_broken: int
    follow_ups: tuple[FollowUp, ...]
    unresolved: int


class _Matcher:
    """The signal rules with their patterns compiled once."""

    def __init__(self, config: LifecycleConfig) -> None:
        names = "|".join(re.escape(n.lower()) for n in config.product_names if n.strip())
        # No product names: a lookahead that never matches, so "(?!{product})" always passes.
        product = f"(?:{names})" if names else "(?!x)x"

        def compile_all(patterns: Sequence[str]) -> list[re.Pattern[str]]:
            return [re.compile(p.replace(PRODUCT, product), re.IGNORECASE) for p in patterns]

        self.rules = [
            (rule, compile_all(rule.patterns), compile_all(rule.exclude_patterns))
            for rule in config.signals
        ]

    def signal(self, mention: Mention) -> str:
        label = mention.label or ""
        text = mention.text or ""
        for rule, patterns, excludes in self.rules:
            if rule.labels and label not in rule.labels:
                continue
            if label in rule.exclude_labels:
                continue
            if patterns and not any(p.search(text) for p in patterns):
                continue
            if any(p.search(text) for p in excludes):
                continue
            return rule.signal
        return "discovery"


@lru_cache(maxsize=8)
def _matcher(config: LifecycleConfig) -> _Matcher:
    # Configs are frozen (hashable): one compilation per configuration, not per customer.
    return _Matcher(config)


def classify_signals(
    mentions: Sequence[Mention], config: LifecycleConfig | None = None
) -> list[str]:
    """The signal of each mention, in input order (see :class:`SignalRule`)."""
    matcher = _matcher(config or LifecycleConfig())
    return [matcher.signal(m) for m in mentions]


def _broken_at(
    mention: Mention, outcomes: Sequence[HandoffOutcome], config: LifecycleConfig, now: datetime
) -> datetime | None:
    """When a service issue became ignored or bounced around, or None if it did not (yet)."""
    known = [o for o in outcomes if o.state != "unknown"]
    if not known:
        return None  # never handed off, or read-back failed: we do not know, so we do not judge
    times: list[datetime] = []
    departments = sorted(known, key=lambda o: o.created_at)
    seen: list[str] = []
    for o in departments:
        if o.department not in seen:
            seen.append(o.department)
            if len(seen) >= config.bounce_departments:
                times.append(o.created_at)
    for o in known:
        if o.state == "rejected":
            times.append(o.resolved_at or o.created_at)
    responses = [o.first_response_at for o in known if o.first_response_at]
    deadline = mention.created_at + config.response_deadline
    first_response = min(responses) if responses else None
    if (first_response is None or first_response > deadline) and deadline <= now:
        times.append(deadline)
    resolved = [o.resolved_at for o in known if o.state == "resolved" and o.resolved_at]
    deadline = mention.created_at + config.resolution_deadline
    resolved_at = min(resolved) if resolved else None
    if (resolved_at is None or resolved_at > deadline) and deadline <= now:
        times.append(deadline)
    return min(times) if times else None


def _resolved_at(outcomes: Sequence[HandoffOutcome]) -> datetime | None:
    times = [o.resolved_at for o in outcomes if o.state == "resolved" and o.resolved_at]
    return min(times) if times else None


def derive_lifecycle(
    mentions: Sequence[Mention],
    outcomes: Iterable[HandoffOutcome] = (),
    *,
    config: LifecycleConfig | None = None,
    now: datetime,
    customer_id: str = "",
) -> Lifecycle:
    """Derive one customer's stage from their mentions and the outcomes of their handoffs.

    Args:
        mentions: The customer's mentions (any order).
        outcomes: Handoff outcomes; those of other customers' items are ignored.
        config: Rules and windows; the defaults when None.
        now: The time of evaluation: deadlines and windows after it have not passed yet.
        customer_id: Carried into the result.

    Returns:
        The stage, how it got there, bonds made and broken, and follow-ups of resolved issues.
    """
    require_utc(now, "now")
    config = config or LifecycleConfig()
    ids = {m.item_id for m in mentions}
    by_item: dict[str, list[HandoffOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.item_id in ids:
            by_item[o.item_id].append(o)
    return _derive(mentions, by_item, config, _matcher(config), now, customer_id)


def _derive(
    mentions: Sequence[Mention],
    by_item: Mapping[str, list[HandoffOutcome]],
    config: LifecycleConfig,
    matcher: _Matcher,
    now: datetime,
    customer_id: str,
) -> Lifecycle:
    timeline = sorted(mentions, key=lambda m: (m.created_at, m.item_id))
    signals = [matcher.signal(m) for m in timeline]

    # (time, order, signal, item): derived events sort before the mention's own at equal times.
    events: list[tuple[datetime, int, str, str | None]] = []
    complaints = [m for m in timeline if m.label == "service_issue"]
    fixed = {m.item_id: _resolved_at(by_item.get(m.item_id, [])) for m in complaints}
    follow_ups: list[FollowUp] = []
    bonds_made = bonds_broken = 0
    for i, (m, s) in enumerate(zip(timeline, signals, strict=True)):
        events.append((m.created_at, 1, s, m.item_id))
        for o in by_item.get(m.item_id, []):
            if o.state == "won" and o.resolved_at:
                events.append((o.resolved_at, 0, "deal_won", m.item_id))
        if m.label != "service_issue":
            continue
        broken = _broken_at(m, by_item.get(m.item_id, []), config, now)
        if broken is not None:
            bonds_broken += 1
            events.append((broken, 0, "bond_broken", m.item_id))
        resolved = fixed[m.item_id]
        if resolved is None:
            continue
        follow = _follow_up(m, resolved, timeline[i + 1 :], signals[i + 1 :], config, now)
        follow_ups.append(follow)
        if follow.outcome == "praise" and follow.next_item_id:
            bonds_made += 1
            praised = next(x for x in timeline if x.item_id == follow.next_item_id)
            events.append((praised.created_at, 0, "bond_made", follow.next_item_id))
    for m in complaints:
        start = m.created_at - config.complaint_window
        waiting = sum(
            1
            for c in complaints
            if start < c.created_at <= m.created_at
            and ((r := fixed[c.item_id]) is None or r > m.created_at)
        )
        if waiting >= config.at_risk_complaints:
            events.append((m.created_at, 0, "repeated_unresolved", m.item_id))

    stage = "discovery"
    changes: list[StageChange] = []
    for at, _, signal, item in sorted(events, key=lambda e: (e[0], e[1], e[3] or "", e[2])):
        if at > now:
            continue
        rule = next((r for r in config.rules if r.applies(signal, stage)), None)
        if rule is not None and rule.to != stage:
            changes.append(StageChange(at, stage, rule.to, signal, item))
            stage = rule.to
    unresolved = sum(1 for c in complaints if (r := fixed[c.item_id]) is None or r > now)
    return Lifecycle(
        customer_id=customer_id,
        stage=stage,
        changes=tuple(changes),
        signals=tuple((m.item_id, s) for m, s in zip(timeline, signals, strict=True)),
        bonds_made=bonds_made,
        bonds_broken=bonds_broken,
        follow_ups=tuple(follow_ups),
        unresolved=unresolved,
    )


def _follow_up(
    issue: Mention,
    resolved: datetime,
    later: Sequence[Mention],
    later_signals: Sequence[str],
    config: LifecycleConfig,
    now: datetime,
) -> FollowUp:
    """The customer's first praise or complaint within the window after a resolution."""
    end = resolved + config.follow_up_window
    for m, s in zip(later, later_signals, strict=True):
        if m.created_at <= resolved:
            continue
        if m.created_at > end or m.created_at > now:
            break
        if s in ("praise", "recommendation"):
            return FollowUp(issue.item_id, resolved, "praise", m.item_id)
        if m.label == "service_issue" or s == "churn_talk":
            return FollowUp(issue.item_id, resolved, "new_complaint", m.item_id)
    outcome: FollowUpOutcome = "silence" if end <= now else "pending"
    return FollowUp(issue.item_id, resolved, outcome, None)


def assign_stages(
    profiles: Iterable[Profile],
    outcomes: Iterable[HandoffOutcome] = (),
    *,
    config: LifecycleConfig | None = None,
    now: datetime,
) -> dict[str, Lifecycle]:
    """Derive every profile's lifecycle.

    Args:
        profiles: From :func:`triage.customers.profiles.resolve_profiles`.
        outcomes: All handoff outcomes (any customer's).
        config: Rules and windows; the defaults when None.
        now: The time of evaluation.

    Returns:
        Customer id -> :class:`Lifecycle`.
    """
    config = config or LifecycleConfig()
    by_item: dict[str, list[HandoffOutcome]] = defaultdict(list)
    for o in outcomes:
        by_item[o.item_id].append(o)
    require_utc(now, "now")
    matcher = _matcher(config)
    return {p.id: _derive(p.mentions, by_item, config, matcher, now, p.id) for p in profiles}
