"""Drift watch: per source and day, is the model's behaviour outside its usual band?

Three signals per source and day, all read from stored predictions:

* ``review_rate`` — the share of items flagged for review;
* ``mean_top_score`` — the mean score of each item's primary label (confidence);
* ``label_share:<label>`` — the label mix, one share per label.

A day is flagged when a signal leaves its usual band: the median of the same source's previous
``window`` days ± ``k`` standard deviations, where the deviation combines how much the signal
varied from day to day (1.4826 × the median absolute deviation) with the day's own sampling noise
(a share measured on 40 items is uncertain by ±0.08 whatever the history says), and the band is
never narrower than a floor per signal.
Days with fewer than ``min_items`` items are neither judged nor part of a baseline, and a source
needs ``min_history`` baseline days before anything is judged: a new source is learned, not
alerted on. Each alert names the source, day and signal, the value and the band, and carries a few
example item ids for a link to the items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from triage.models import LABELS

REVIEW_RATE = "review_rate"
MEAN_TOP_SCORE = "mean_top_score"
LABEL_SHARE = "label_share:"
MAD_TO_SD = 1.4826
"""Scales a median absolute deviation to a standard deviation under a normal distribution."""


@dataclass(frozen=True, slots=True)
class DailyStats:
    """One source's predictions on one day."""

    source: str
    day: date
    items: int
    review_rate: float
    mean_top_score: float
    label_share: dict[str, float]
    top_score_sd: float = 0.0
    """The standard deviation of the day's top scores (the mean's sampling noise comes from it)."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Example item ids per signal: ``needs_review``, ``low_score``, ``label:<label>``."""

    def value(self, metric: str) -> float:
        """The value of one signal (``review_rate``, ``mean_top_score``, ``label_share:X``)."""
        if metric == REVIEW_RATE:
            return self.review_rate
        if metric == MEAN_TOP_SCORE:
            return self.mean_top_score
        return self.label_share.get(metric.removeprefix(LABEL_SHARE), 0.0)

    def sampling_sd(self, metric: str) -> float:
        """How uncertain the day's value of a signal is from its item count alone."""
        if self.items <= 0:
            return 0.0
        if metric == MEAN_TOP_SCORE:
            return self.top_score_sd / math.sqrt(self.items)
        p = self.value(metric)
        return math.sqrt(p * (1 - p) / self.items)

    def to_json(self) -> dict[str, Any]:
        """The day's aggregate as JSON (for storing a history or printing it)."""
        return {
            "source": self.source,
            "day": self.day.isoformat(),
            "items": self.items,
            "review_rate": self.review_rate,
            "mean_top_score": self.mean_top_score,
            "top_score_sd": self.top_score_sd,
            "label_share": self.label_share,
            "examples": self.examples,
        }


def daily_stats(predictions: pa.Table, examples: int = 5) -> list[DailyStats]:
    """Aggregate per-item predictions into per-source, per-day statistics.

    Args:
        predictions: One row per item with ``item_id``, ``source``, ``day`` (date) or
            ``classified_at`` (timestamp, UTC), ``label``, ``score`` (the primary label's
            score) and ``needs_review`` (the store joins ``predictions`` to ``items``).
        examples: How many example ids to keep per signal.

    Returns:
        One :class:`DailyStats` per (source, day), sorted by source then day.
    """
    n = predictions.num_rows
    if n == 0:
        return []
    if "day" in predictions.column_names:
        days = predictions.column("day").to_pylist()
    else:
        days = [
            t.date() if isinstance(t, datetime) else t
            for t in predictions.column("classified_at").to_pylist()
        ]
    sources = np.array(predictions.column("source").to_pylist(), dtype=object)
    ids = np.array(predictions.column("item_id").to_pylist(), dtype=object)
    labels = np.array(predictions.column("label").to_pylist(), dtype=object)
    scores = np.asarray(predictions.column("score").to_numpy(zero_copy_only=False), dtype=float)
    review = np.asarray(
        predictions.column("needs_review").to_numpy(zero_copy_only=False), dtype=bool
    )
    day_arr = np.array(days, dtype=object)
    keys = np.array([f"{s}\x1f{d.isoformat()}" for s, d in zip(sources, days, strict=True)])
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    bounds = list(starts) + [n]
    out: list[DailyStats] = []
    for g in range(len(uniq)):
        idx = order[bounds[g] : bounds[g + 1]]
        lab = labels[idx]
        sc = scores[idx]
        rv = review[idx]
        low = idx[np.argsort(sc, kind="stable")[:examples]]
        ex: dict[str, list[str]] = {
            "needs_review": [str(i) for i in ids[idx][rv][:examples]],
            "low_score": [str(i) for i in ids[low]],
        }
        for label in LABELS:
            mine = ids[idx][lab == label][:examples]
            if len(mine):
                ex[f"label:{label}"] = [str(i) for i in mine]
        out.append(
            DailyStats(
                source=str(sources[idx[0]]),
                day=day_arr[idx[0]],
                items=len(idx),
                review_rate=round(float(rv.mean()), 4),
                mean_top_score=round(float(sc.mean()), 4),
                top_score_sd=round(float(sc.std()), 4),
                label_share={lab_: round(float((lab == lab_).mean()), 4) for lab_ in LABELS},
                examples=ex,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """How wide the usual band is and how much history it needs (``drift`` in the config)."""

    window: int = 28
    """Baseline days before the day judged."""
    min_history: int = 7
    """Baseline days (with enough items) needed before a source is judged."""
    k: float = 4.0
    """Band half-width in standard deviations (day-to-day and sampling noise combined)."""
    min_items: int = 20
    """Days with fewer items are too noisy to judge or to learn the band from."""
    floor: dict[str, float] = field(
        default_factory=lambda: {REVIEW_RATE: 0.05, MEAN_TOP_SCORE: 0.03, LABEL_SHARE: 0.05}
    )
    """The narrowest half-width per signal (``label_share:`` covers every label)."""

    def floor_for(self, metric: str) -> float:
        """The floor of one signal."""
        return self.floor[LABEL_SHARE if metric.startswith(LABEL_SHARE) else metric]


@dataclass(frozen=True, slots=True)
class DriftAlert:
    """A signal of one source on one day outside its usual band."""

    source: str
    day: date
    metric: str
    value: float
    median: float
    low: float
    high: float
    baseline_days: int
    items: int
    example_ids: list[str]

    @property
    def direction(self) -> str:
        """``up`` or ``down``."""
        return "up" if self.value > self.median else "down"

    def summary(self) -> str:
        """One plain-text line (the caller escapes it for Slack and adds links to the ids)."""
        what = {
            REVIEW_RATE: "review rate",
            MEAN_TOP_SCORE: "mean top score",
        }.get(self.metric, f"share of {self.metric.removeprefix(LABEL_SHARE)}")
        return (
            f"{self.source} on {self.day.isoformat()}: {what} {self.direction} to "
            f"{self.value:.2f} ({self.items} items), usually {self.median:.2f} "
            f"(band {self.low:.2f}-{self.high:.2f} over the previous {self.baseline_days} days)"
        )

    def to_json(self) -> dict[str, Any]:
        """The alert as JSON."""
        return {
            "source": self.source,
            "day": self.day.isoformat(),
            "metric": self.metric,
            "direction": self.direction,
            "value": self.value,
            "median": self.median,
            "low": self.low,
            "high": self.high,
            "baseline_days": self.baseline_days,
            "items": self.items,
            "example_ids": self.example_ids,
            "summary": self.summary(),
        }


def _example_key(metric: str) -> str:
    if metric == REVIEW_RATE:
        return "needs_review"
    if metric == MEAN_TOP_SCORE:
        return "low_score"
    return f"label:{metric.removeprefix(LABEL_SHARE)}"


def detect_drift(
    history: Sequence[DailyStats],
    settings: DriftSettings | None = None,
    *,
    since: date | None = None,
) -> list[DriftAlert]:
    """Flag the signals of each source and day that left their usual band.

    Args:
        history: Daily statistics of any number of sources (:func:`daily_stats`).
        settings: Band and history settings.
        since: Judge only days from this one on (the rest is baseline); default every day.

    Returns:
        The alerts, by source, day and signal.
    """
    settings = settings or DriftSettings()
    metrics = [REVIEW_RATE, MEAN_TOP_SCORE] + [f"{LABEL_SHARE}{lab}" for lab in LABELS]
    by_source: dict[str, list[DailyStats]] = {}
    for s in history:
        by_source.setdefault(s.source, []).append(s)
    alerts: list[DriftAlert] = []
    for source in sorted(by_source):
        days = sorted(by_source[source], key=lambda s: s.day)
        for today in days:
            if today.items < settings.min_items or (since and today.day < since):
                continue
            start = today.day - timedelta(days=settings.window)
            base = [s for s in days if start <= s.day < today.day and s.items >= settings.min_items]
            if len(base) < settings.min_history:
                continue
            for metric in metrics:
                values = np.array([s.value(metric) for s in base])
                median = float(np.median(values))
                spread = MAD_TO_SD * float(np.median(np.abs(values - median)))
                noise = today.sampling_sd(metric)
                half = max(settings.k * math.hypot(spread, noise), settings.floor_for(metric))
                value = today.value(metric)
                if abs(value - median) <= half:
                    continue
                alerts.append(
                    DriftAlert(
                        source=source,
                        day=today.day,
                        metric=metric,
                        value=round(value, 4),
                        median=round(median, 4),
                        low=round(max(0.0, median - half), 4),
                        high=round(min(1.0, median + half), 4),
                        baseline_days=len(base),
                        items=today.items,
                        example_ids=list(today.examples.get(_example_key(metric), [])),
                    )
                )
    return alerts
