"""Handoff timing: from mention to handoff, to first response and to resolution.

Three durations per handoff, all measured from the moment the customer wrote (the mention's
``created_at``), because that is the wait the customer sees:

- ``to_handoff``: until the department received it (ticket, lead or issue created);
- ``to_first_response``: until the department's first public reply;
- ``to_resolution``: until it was resolved (ticket solved, issue closed as completed, deal closed).

A handoff counts towards a measure only when that moment is known; a handoff still waiting simply
has no ``to_resolution`` yet. Durations below zero (clocks that disagree) are left out and counted
in ``skipped``. Statistics are given per department and source, and per department over all sources
(``source="all"``): count, median and 90th percentile in hours. Percentiles interpolate linearly
between the two nearest observations (the method spreadsheets and numpy use by default).

Example:
    >>> stats = timing_stats(outcomes, mentions)            # doctest: +SKIP
    >>> [(s.department, s.source, s.measure, s.median_hours) for s in stats]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from triage.customers.models import HandoffOutcome, Mention

MEASURES: tuple[str, ...] = ("to_handoff", "to_first_response", "to_resolution")
ALL_SOURCES = "all"


@dataclass(frozen=True, slots=True)
class TimingStat:
    """Count, median and 90th percentile (hours) of one measure for a department and source."""

    department: str
    source: str
    measure: str
    count: int
    median_hours: float | None
    p90_hours: float | None
    skipped: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, linearly interpolated between closest ranks.

    Raises:
        ValueError: When values is empty or q is outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _hours(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds() / 3600


def timing_stats(
    outcomes: Iterable[HandoffOutcome], mentions: Iterable[Mention]
) -> list[TimingStat]:
    """Timing statistics per department and source, and per department over all sources.

    Args:
        outcomes: Handoff outcomes (one per item and department).
        mentions: The mentions they came from (joined on ``item_id``; outcomes without a known
            mention are left out: there is no start to measure from).

    Returns:
        One :class:`TimingStat` per (department, source, measure) that has any handoff, sorted by
        department, then source (``all`` first), then measure.
    """
    by_item = {m.item_id: m for m in mentions}
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    skipped: dict[tuple[str, str, str], int] = defaultdict(int)
    groups: set[tuple[str, str]] = set()
    for o in outcomes:
        mention = by_item.get(o.item_id)
        if mention is None:
            continue
        resolved = o.resolved_at if o.state in ("resolved", "won", "lost") else None
        moments = {
            "to_handoff": o.created_at,
            "to_first_response": o.first_response_at,
            "to_resolution": resolved,
        }
        for source in (mention.source, ALL_SOURCES):
            groups.add((o.department, source))
            for measure, end in moments.items():
                hours = _hours(mention.created_at, end)
                if hours is None:
                    continue
                if hours < 0:
                    skipped[(o.department, source, measure)] += 1
                else:
                    values[(o.department, source, measure)].append(hours)
    stats: list[TimingStat] = []
    for department, source in sorted(groups, key=lambda g: (g[0], g[1] != ALL_SOURCES, g[1])):
        for measure in MEASURES:
            key = (department, source, measure)
            got = values.get(key, [])
            stats.append(
                TimingStat(
                    department=department,
                    source=source,
                    measure=measure,
                    count=len(got),
                    median_hours=percentile(got, 50) if got else None,
                    p90_hours=percentile(got, 90) if got else None,
                    skipped=skipped.get(key, 0),
                )
            )
    return stats
