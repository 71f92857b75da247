"""The report's typed input, :class:`ReportData`, and the builders that fill it from the engines.

Everything the report and the digest show is in one frozen :class:`ReportData`; nothing in
:mod:`triage.report` reads the store. :func:`build_report_data` makes one from what the customer
engines return plus the review backlog, so the ``triage report`` command is a few lines::

    res = resolve_profiles(mentions, merges)
    lifecycles = assign_stages(res.profiles, outcomes, config=cfg, now=now)
    data = build_report_data(mentions, res.profiles, lifecycles, outcomes, backlog,
                             since=now - timedelta(days=30), now=now)
    write_report(data, Path("report"))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from triage.customers.lifecycle import Lifecycle
from triage.customers.models import HandoffOutcome, Mention, Profile, require_utc
from triage.customers.stages import STAGES
from triage.customers.timing import TimingStat, timing_stats
from triage.similarity import FEATURE_THRESHOLD, SignatureIndex, signature

# Backlog age buckets: (upper bound, title). Reviews older than a week are the ones to chase.
AGE_BUCKETS: tuple[tuple[timedelta | None, str], ...] = (
    (timedelta(days=1), "under 1 day"),
    (timedelta(days=3), "1-3 days"),
    (timedelta(days=7), "3-7 days"),
    (None, "over 7 days"),
)
FOLLOW_UP_OUTCOMES: tuple[str, ...] = ("praise", "silence", "new_complaint", "pending")


@dataclass(frozen=True, slots=True)
class VolumeRow:
    """How many mentions of one label came from one source on one day (UTC)."""

    day: date
    label: str
    source: str
    count: int


@dataclass(frozen=True, slots=True)
class BacklogItem:
    """An item waiting for marketing's review."""

    item_id: str
    label: str
    source: str
    waiting_since: datetime
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureGroup:
    """Feature requests that ask for the same thing (content-word overlap)."""

    title: str  # the earliest request's text, shortened: it names the ask in the customer's words
    count: int
    customers: int
    sources: tuple[str, ...]
    url: str | None = None  # a link to the latest request


@dataclass(frozen=True, slots=True)
class Quote:
    """A customer's words, with where they said them."""

    text: str
    url: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Advocate:
    """A customer who recommends us: how often they praised us, how far they reach, their words."""

    customer_id: str
    name: str
    praise_count: int
    reach: int
    quotes: tuple[Quote, ...]
    profile_url: str | None = None


@dataclass(frozen=True, slots=True)
class AtRiskCustomer:
    """A customer at risk: why, how many complaints wait, and their latest words."""

    customer_id: str
    name: str
    reason: str
    unresolved: int
    bonds_broken: int
    last_seen: datetime
    last_quote: Quote | None
    profile_url: str | None = None


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report and the digest show, for one period.

    Attributes:
        period_start: First moment covered (UTC).
        period_end: Last moment covered; also "now" for ages.
        volume: Mentions per day, label and source.
        backlog: Items waiting for review (any age).
        timings: Handoff timing statistics (see :func:`triage.customers.timing_stats`).
        feature_groups: The largest feature-request groups, largest first.
        advocates: Advocates, by reach then praise.
        at_risk: Customers at risk, most unresolved complaints first.
        stages: Customers per lifecycle stage (every stage present, funnel order).
        customers: Customers seen in the period.
        bonds_made: Resolved issues followed by praise, over those customers.
        bonds_broken: Issues ignored or bounced around, over those customers.
        follow_ups: What followed resolved service issues: praise, silence, new_complaint, pending.
        title: Page title.
    """

    period_start: datetime
    period_end: datetime
    volume: tuple[VolumeRow, ...] = ()
    backlog: tuple[BacklogItem, ...] = ()
    timings: tuple[TimingStat, ...] = ()
    feature_groups: tuple[FeatureGroup, ...] = ()
    advocates: tuple[Advocate, ...] = ()
    at_risk: tuple[AtRiskCustomer, ...] = ()
    stages: Mapping[str, int] = field(default_factory=dict)
    customers: int = 0
    bonds_made: int = 0
    bonds_broken: int = 0
    follow_ups: Mapping[str, int] = field(default_factory=dict)
    title: str = "Customer feedback report"

    def __post_init__(self) -> None:
        require_utc(self.period_start, "period_start")
        require_utc(self.period_end, "period_end")
        if self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")

    @property
    def mentions_total(self) -> int:
        """Mentions in the period."""
        return sum(r.count for r in self.volume)

    def by_label(self) -> dict[str, int]:
        """Mentions per label, largest first."""
        return dict(_count(self.volume, "label").most_common())

    def by_source(self) -> dict[str, int]:
        """Mentions per source, largest first."""
        return dict(_count(self.volume, "source").most_common())

    def backlog_ages(self) -> dict[str, Counter[str]]:
        """Backlog items per age bucket, then per label (every bucket present)."""
        out: dict[str, Counter[str]] = {title: Counter() for _, title in AGE_BUCKETS}
        for item in self.backlog:
            out[age_bucket(self.period_end - item.waiting_since)][item.label] += 1
        return out

    def oldest_backlog(self) -> timedelta | None:
        """How long the oldest waiting item has waited."""
        if not self.backlog:
            return None
        return self.period_end - min(i.waiting_since for i in self.backlog)

    def timing(self, department: str, measure: str, source: str = "all") -> TimingStat | None:
        """The statistic for a department and measure (over all sources by default)."""
        return next(
            (
                t
                for t in self.timings
                if (t.department, t.measure, t.source) == (department, measure, source)
            ),
            None,
        )


def _count(rows: Iterable[VolumeRow], attr: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in rows:
        counts[getattr(r, attr)] += r.count
    return counts


def age_bucket(age: timedelta) -> str:
    """The title of the backlog age bucket ``age`` falls in."""
    for limit, title in AGE_BUCKETS:
        if limit is None or age < limit:
            return title
    raise AssertionError("the last bucket is open-ended")  # pragma: no cover


def volume_by_day(mentions: Iterable[Mention]) -> tuple[VolumeRow, ...]:
    """Count mentions per UTC day, label and source (unclassified ones as ``unclassified``)."""
    counts: Counter[tuple[date, str, str]] = Counter()
    for m in mentions:
        counts[(m.created_at.date(), m.label or "unclassified", m.source)] += 1
    return tuple(VolumeRow(d, label, src, n) for (d, label, src), n in sorted(counts.items()))


def feature_groups(mentions: Iterable[Mention], top: int = 10) -> tuple[FeatureGroup, ...]:
    """Group feature requests that ask for the same thing; the ``top`` largest, largest first.

    Uses the same content-word signature and threshold as the tracker handoff's grouping
    (:mod:`triage.similarity`), so a group here is what a tracker issue collects.
    """
    index = SignatureIndex()
    members: dict[str, list[Mention]] = {}
    ordered = sorted(
        (m for m in mentions if m.label == "feature_request"),
        key=lambda m: (m.created_at, m.item_id),
    )
    for m in ordered:
        sig = signature(m.text)
        gid, _ = index.best(sig, FEATURE_THRESHOLD)
        if gid is None:
            gid = m.item_id
            members[gid] = []
        index.add(gid, sig)
        members[gid].append(m)
    groups = [
        FeatureGroup(
            title=_shorten(ms[0].text, 120),
            count=len(ms),
            customers=len({(m.platform, m.handle, m.email) for m in ms}),
            sources=tuple(sorted({m.source for m in ms})),
            url=next((m.url for m in reversed(ms) if m.url), None),
        )
        for ms in members.values()
    ]
    groups.sort(key=lambda g: (-g.count, g.title))
    return tuple(groups[:top])


def _shorten(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def best_quotes(profile: Profile, lifecycle: Lifecycle, n: int = 3) -> tuple[Quote, ...]:
    """A customer's best praise: recommendations first, then fuller texts, then the latest.

    "Best" for marketing means quotable: words that recommend us to others beat a bare "thanks",
    and a sentence with substance (up to tweet length) beats a one-word one.
    """
    signals = dict(lifecycle.signals)
    praise = [m for m in profile.mentions if m.label == "kudos"]
    ranked = sorted(
        praise,
        key=lambda m: (
            signals.get(m.item_id) != "recommendation",
            -min(len(m.text), 280),
            -m.created_at.timestamp(),
        ),
    )
    return tuple(Quote(m.text, m.url, m.created_at) for m in ranked[:n])


def _profile_url(profile: Profile) -> str | None:
    return next((i.profile_url for i in profile.identities if i.profile_url), None)


def advocates(
    profiles: Iterable[Profile], lifecycles: Mapping[str, Lifecycle], top: int = 10
) -> tuple[Advocate, ...]:
    """Customers in the ``advocate`` stage, by reach then praise count; ``top`` of them."""
    found = [
        Advocate(
            customer_id=p.id,
            name=p.display_name,
            praise_count=sum(1 for m in p.mentions if m.label == "kudos"),
            reach=p.reach,
            quotes=best_quotes(p, lifecycles[p.id]),
            profile_url=_profile_url(p),
        )
        for p in profiles
        if p.id in lifecycles and lifecycles[p.id].stage == "advocate"
    ]
    found.sort(key=lambda a: (-a.reach, -a.praise_count, a.customer_id))
    return tuple(found[:top])


def _risk(profile: Profile, lifecycle: Lifecycle) -> tuple[str, Mention]:
    """Why a customer is at risk, in words, and the mention that says it best."""
    signals = dict(lifecycle.signals)
    leaving = [m for m in profile.mentions if signals.get(m.item_id) == "churn_talk"]
    reasons = ["talked of leaving"] if leaving else []
    if lifecycle.unresolved:
        n = lifecycle.unresolved
        reasons.append(f"{n} complaint{'s' if n > 1 else ''} unresolved")
    complaints = [m for m in profile.mentions if m.label == "service_issue"]
    # Their words about leaving, else their latest complaint: not whatever they posted last.
    words = (leaving or complaints or list(profile.mentions))[-1]
    return ", ".join(reasons) or "at risk", words


def at_risk(
    profiles: Iterable[Profile], lifecycles: Mapping[str, Lifecycle]
) -> tuple[AtRiskCustomer, ...]:
    """Customers in the ``at_risk`` stage, most unresolved complaints first, then the latest."""
    found = []
    for p in profiles:
        lc = lifecycles.get(p.id)
        if lc is None or lc.stage != "at_risk":
            continue
        reason, words = _risk(p, lc)
        found.append(
            AtRiskCustomer(
                customer_id=p.id,
                name=p.display_name,
                reason=reason,
                unresolved=lc.unresolved,
                bonds_broken=lc.bonds_broken,
                last_seen=p.last_seen,
                last_quote=Quote(words.text, words.url, words.created_at),
                profile_url=_profile_url(p),
            )
        )
    found.sort(key=lambda a: (-a.unresolved, -a.last_seen.timestamp(), a.customer_id))
    return tuple(found)


def build_report_data(
    mentions: Sequence[Mention],
    profiles: Sequence[Profile],
    lifecycles: Mapping[str, Lifecycle],
    outcomes: Sequence[HandoffOutcome],
    backlog: Sequence[BacklogItem],
    *,
    since: datetime,
    now: datetime,
    title: str = "Customer feedback report",
) -> ReportData:
    """Fill :class:`ReportData` for the period ``since``..``now``.

    Volume, feature groups and timing count mentions written in the period; stages, advocates and
    customers at risk cover the customers active in the period, with stages derived from their
    whole history (a customer's stage depends on what came before).

    Args:
        mentions: Mentions (any period; those outside are left out here).
        profiles: From :func:`triage.customers.resolve_profiles` over all history.
        lifecycles: From :func:`triage.customers.assign_stages`.
        outcomes: Handoff outcomes.
        backlog: Items waiting for review now.
        since: Start of the period.
        now: End of the period.
        title: Page title.
    """
    in_period = [m for m in mentions if since <= m.created_at <= now]
    active = [p for p in profiles if any(since <= m.created_at <= now for m in p.mentions)]
    stages = Counter(lifecycles[p.id].stage for p in active if p.id in lifecycles)
    follow: Counter[str] = Counter(
        f.outcome
        for p in active
        if p.id in lifecycles
        for f in lifecycles[p.id].follow_ups
        if since <= f.resolved_at <= now
    )
    return ReportData(
        period_start=since,
        period_end=now,
        volume=volume_by_day(in_period),
        backlog=tuple(sorted(backlog, key=lambda b: (b.waiting_since, b.item_id))),
        timings=tuple(timing_stats(outcomes, in_period)),
        feature_groups=feature_groups(in_period),
        advocates=advocates(active, lifecycles),
        at_risk=at_risk(active, lifecycles),
        stages={s: stages.get(s, 0) for s in STAGES},
        customers=len(active),
        bonds_made=sum(lifecycles[p.id].bonds_made for p in active if p.id in lifecycles),
        bonds_broken=sum(lifecycles[p.id].bonds_broken for p in active if p.id in lifecycles),
        follow_ups={o: follow.get(o, 0) for o in FOLLOW_UP_OUTCOMES},
        title=title,
    )
